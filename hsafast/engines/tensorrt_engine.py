"""The TensorRT engine: a plan built from the ONNX export, cached by GPU, TensorRT and model.

Building a plan takes minutes and is valid only for one GPU model and one TensorRT version,
so the plan is cached in the bundle's engines/ folder as
``<gpu>-trt<version>-<key>.plan``, where the key hashes the weights, the outputs, the
precision and the batch range; any change picks a new file. The plan takes batches of 1 to
`max_batch` tiles (one optimisation profile, tuned for `opt_batch`); inputs and outputs are
torch CUDA tensors bound by address and run on the current stream, so no copy is made.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsafast.engines.base import Engine, ModelSpec, missing_engine
from hsafast.engines.export import INPUT_NAME, onnx_model
from hsafast.errors import EngineError, InvalidParameterError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("hsafast.engines")

_PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass(frozen=True)
class TensorRTOptions:
    """How the TensorRT plan is built."""

    precision: str = "bf16"
    """Reduced precision TensorRT may choose per layer: bf16 (float32's range), fp16 or fp32."""
    opt_batch: int = 256
    """Batch size the kernels are tuned for (the scorer's GPU batch)."""
    max_batch: int = 1024
    """Largest batch the plan accepts; larger batches run in several calls."""
    workspace_gib: float = 4.0
    """Scratch memory TensorRT may use while building and running (GiB)."""

    def __post_init__(self) -> None:
        if self.precision not in _PRECISIONS:
            raise InvalidParameterError(
                f"TensorRTOptions.precision must be one of {_PRECISIONS}, got {self.precision!r}"
            )
        if not (1 <= self.opt_batch <= self.max_batch):
            raise InvalidParameterError(
                f"TensorRTOptions needs 1 <= opt_batch <= max_batch, got {self.opt_batch} and "
                f"{self.max_batch}"
            )
        if not self.workspace_gib > 0:
            raise InvalidParameterError(
                f"TensorRTOptions.workspace_gib must be positive, got {self.workspace_gib}"
            )


def plan_name(spec: ModelSpec, gpu: str, trt_version: str, options: TensorRTOptions) -> str:
    """File name of the cached plan for this model, GPU and TensorRT version."""
    key = spec.export_key(precision=options.precision, opt=options.opt_batch, max=options.max_batch)
    gpu_id = re.sub(r"[^A-Za-z0-9]+", "_", gpu).strip("_") or "gpu"
    return f"{gpu_id}-trt{trt_version}-{key}.plan"


class TensorRTEngine(Engine):
    """Runs a TensorRT plan of the tile network on one CUDA device."""

    name = "tensorrt"

    def __init__(
        self, spec: ModelSpec, device: str, options: TensorRTOptions | None = None
    ) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise missing_engine("tensorrt", exc) from exc
        import torch

        super().__init__(spec, device)
        if torch.device(device).type != "cuda":
            raise EngineError(f"the tensorrt engine needs a CUDA device, got {device!r}")
        self.options = options or TensorRTOptions()
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        gpu = torch.cuda.get_device_name(torch.device(device))
        self.plan_file = (
            None
            if spec.cache_dir is None
            else Path(spec.cache_dir) / plan_name(spec, gpu, trt.__version__, self.options)
        )
        with torch.cuda.device(torch.device(device)):
            plan = self._load_or_build()
            self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan)
            if self._engine is None:
                raise EngineError(f"TensorRT cannot load its plan {self.plan_file}")
            self._context = self._engine.create_execution_context()

    def _load_or_build(self) -> bytes:
        if self.plan_file is not None and self.plan_file.is_file():
            log.info("using the cached TensorRT plan %s", self.plan_file)
            return self.plan_file.read_bytes()
        plan = self._build(onnx_model(self.spec))
        if self.plan_file is not None:
            from hsafast._fileio import atomic_write_bytes

            try:
                atomic_write_bytes(self.plan_file, plan)
                log.info("cached the TensorRT plan in %s", self.plan_file)
            except OSError as exc:
                log.warning("cannot cache the TensorRT plan in %s (%s)", self.plan_file, exc)
        return plan

    def _build(self, onnx_bytes: bytes) -> bytes:
        trt, o, s = self._trt, self.options, self.spec.input_size
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse the ONNX export: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(o.workspace_gib * (1 << 30)))
        if o.precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
        elif o.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (1, 3, s, s), (o.opt_batch, 3, s, s), (o.max_batch, 3, s, s))
        config.add_optimization_profile(profile)
        log.info(
            "building a TensorRT plan (%s, batches 1-%d); this takes a few minutes",
            o.precision,
            o.max_batch,
        )
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError("TensorRT failed to build a plan for the tile network")
        return bytes(plan)

    def describe(self) -> str:
        return f"tensorrt {self._trt.__version__} {self.options.precision} on {self.device}"

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        if len(x) > self.options.max_batch:
            parts = [
                self.run(x[i : i + self.options.max_batch])
                for i in range(0, len(x), self.options.max_batch)
            ]
            return {n: torch.cat([p[n] for p in parts]) for n in self.output_names}
        x = x.float().contiguous()
        ctx = self._context
        ctx.set_input_shape(INPUT_NAME, tuple(x.shape))
        ctx.set_tensor_address(INPUT_NAME, x.data_ptr())
        outs: dict[str, Any] = {}
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=torch.float32, device=x.device)
            ctx.set_tensor_address(name, outs[name].data_ptr())
        if not ctx.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise EngineError("TensorRT failed to run the plan")
        return outs
