"""The ONNX Runtime engine: the exported tile network on ORT's CPU (or CUDA) provider.

On the CPU the input tensor is handed to ORT as a NumPy view (no copy) and the outputs come
back as NumPy arrays wrapped as torch tensors (no copy). ORT picks its own thread count
(physical cores) unless `threads` is given. On a CUDA device (onnxruntime-gpu) inputs and
outputs stay on the GPU through I/O binding.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hsafast.engines.base import Engine, ModelSpec, missing_engine
from hsafast.engines.export import INPUT_NAME, onnx_model
from hsafast.errors import EngineError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("hsafast.engines")


def available_providers() -> list[str]:
    """ORT's execution providers here ([] when onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


class OnnxRuntimeEngine(Engine):
    """Runs the ONNX export of the tile network with onnxruntime."""

    name = "onnxruntime"

    def __init__(self, spec: ModelSpec, device: str, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_engine("onnxruntime", exc) from exc
        import torch

        super().__init__(spec, device)
        self._cuda = torch.device(device).type == "cuda"
        provider = "CUDAExecutionProvider" if self._cuda else "CPUExecutionProvider"
        if provider not in ort.get_available_providers():
            raise EngineError(
                f"onnxruntime has no {provider} here (providers: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu for CUDA"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        providers: list[Any] = [provider]
        if self._cuda:
            providers = [(provider, {"device_id": torch.device(device).index or 0})]
        try:
            self._session = ort.InferenceSession(onnx_model(spec), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise EngineError(f"onnxruntime cannot load the exported network: {exc}") from exc

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        if self._cuda:
            return self._run_cuda(x.float().contiguous())
        feed = x.detach().float().contiguous().numpy()
        outs = self._session.run(list(self.output_names), {INPUT_NAME: feed})
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outs, strict=True)}

    def _run_cuda(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import numpy as np

        binding = self._session.io_binding()
        binding.bind_input(
            INPUT_NAME, "cuda", x.device.index or 0, np.float32, tuple(x.shape), x.data_ptr()
        )
        for name in self.output_names:
            binding.bind_output(name, "cuda", x.device.index or 0)
        self._session.run_with_iobinding(binding)
        import torch

        outs = binding.get_outputs()
        return {
            n: torch.from_dlpack(o.to_dlpack())
            if hasattr(o, "to_dlpack")
            else torch.from_numpy(o.numpy()).to(x.device)
            for n, o in zip(self.output_names, outs, strict=True)
        }

    def describe(self) -> str:
        return f"onnxruntime {'CUDA' if self._cuda else 'CPU'} provider on {self.device}"
