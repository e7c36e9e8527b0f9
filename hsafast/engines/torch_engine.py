"""The PyTorch engine: eager float32 on the CPU; bf16, channels_last, compile, CUDA graphs on GPUs.

On the CPU the network runs as it is, in float32 under `torch.inference_mode`, with PyTorch's
own thread settings (hsafast does not change them). On a CUDA device the weights are cast to
bfloat16 (tensor cores; the H200 runs ViT-S/16 at about 29k images/s this way, compiled), and
convolutional networks get channels_last memory; `compile=True` runs `torch.compile` (inductor,
autotuned), `cuda_graphs=True` records the forward of one fixed batch size once and replays
it, padding shorter batches, which removes the per-kernel launch cost of small encoders.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hsafast.engines.base import Engine, ModelSpec
from hsafast.errors import EngineError, InvalidParameterError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("hsafast.engines")

_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TorchOptions:
    """How the torch engine runs on a CUDA device (ignored on the CPU, which runs float32)."""

    dtype: str = "bfloat16"
    """Weights and activations on the GPU: bfloat16 (default: tensor cores, float32's range),
    float16 or float32."""
    channels_last: bool = True
    """NHWC memory for 4-D activations (faster convolutions on tensor cores; a no-op for ViTs)."""
    compile: bool = False
    """torch.compile the network (minutes of autotuning on first use, then faster)."""
    cuda_graphs: bool = False
    """Record one forward of `graph_batch` tiles as a CUDA graph and replay it."""
    graph_batch: int = 256
    """Batch size the CUDA graph is recorded for; shorter batches are padded to it."""

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise InvalidParameterError(
                f"TorchOptions.dtype must be one of {_DTYPES}, got {self.dtype!r}"
            )
        if not (isinstance(self.graph_batch, int) and self.graph_batch >= 1):
            raise InvalidParameterError(
                f"TorchOptions.graph_batch must be a positive integer, got {self.graph_batch}"
            )


class TorchEngine(Engine):
    """Runs the tile network with PyTorch on the CPU or one CUDA device."""

    name = "torch"

    def __init__(self, spec: ModelSpec, device: str, options: TorchOptions | None = None) -> None:
        import torch

        super().__init__(spec, device)
        self.options = options or TorchOptions()
        self._cuda = torch.device(device).type == "cuda"
        net = spec.network.eval()
        self._dtype = getattr(torch, self.options.dtype) if self._cuda else torch.float32
        if self._cuda:
            # a copy: the spec's network stays a float32 CPU module for every other engine
            net = copy.deepcopy(net).to(device=device, dtype=self._dtype)
            if self.options.channels_last:
                net = net.to(memory_format=torch.channels_last)
            if self.options.compile:
                net = torch.compile(net, mode="max-autotune-no-cudagraphs")
        self._net = net
        self._graph: _CudaGraph | None = None

    @property
    def input_dtype(self) -> torch.dtype:
        return self._dtype

    def describe(self) -> str:
        if not self._cuda:
            return f"torch float32 on {self.device}"
        o = self.options
        extras = [o.dtype] + ["channels_last"] * o.channels_last + ["compiled"] * o.compile
        extras += [f"CUDA graph of {o.graph_batch}"] * o.cuda_graphs
        return f"torch {', '.join(extras)} on {self.device}"

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        x = x.to(self._dtype)
        if self._cuda and self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self._cuda and self.options.cuda_graphs:
                outs = self._replay(x)
            else:
                outs = _as_tuple(self._net(x))
        if len(outs) != len(self.output_names):
            raise EngineError(
                f"the network returned {len(outs)} outputs, expected {len(self.output_names)} "
                f"({', '.join(self.output_names)})"
            )
        return {n: o.float() for n, o in zip(self.output_names, outs, strict=True)}

    def _replay(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = self.options.graph_batch
        if len(x) > batch:  # larger batches run as several replays
            parts = [self._replay(x[i : i + batch]) for i in range(0, len(x), batch)]
            import torch

            return tuple(torch.cat(p) for p in zip(*parts, strict=True))
        if self._graph is None:
            self._graph = _CudaGraph(
                self._net, (batch, *x.shape[1:]), x.dtype, x.device, self.options.channels_last
            )
        return self._graph(x)


def _as_tuple(out: Any) -> tuple[Any, ...]:
    return tuple(out) if isinstance(out, list | tuple) else (out,)


class _CudaGraph:
    """One recorded forward at a fixed input shape; inputs are copied into its buffer."""

    def __init__(
        self, net: Any, shape: tuple[int, ...], dtype: Any, device: Any, channels_last: bool
    ) -> None:
        import torch

        fmt = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
        self.static_in = torch.zeros(shape, dtype=dtype, device=device).contiguous(
            memory_format=fmt
        )
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm-up: autotuning and allocations happen outside the graph
                net(self.static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_out = _as_tuple(net(self.static_in))
        log.info("recorded a CUDA graph of the tile network for batches of %d", shape[0])

    def __call__(self, x: Any) -> tuple[Any, ...]:
        n = len(x)
        self.static_in[:n].copy_(x)
        if n < len(self.static_in):
            self.static_in[n:].zero_()
        self.graph.replay()
        return tuple(o[:n].clone() for o in self.static_out)
