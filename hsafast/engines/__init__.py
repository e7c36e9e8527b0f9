"""Inference engines for the tile network: PyTorch, ONNX Runtime and TensorRT.

`create_engine(spec, engine="auto", device="auto")` returns a ready `Engine`. With "auto" the
device is the first CUDA GPU when PyTorch sees one, else the CPU; the engine is TensorRT on a
GPU where it is installed (else PyTorch in bf16), and on the CPU the one measured faster for
this kind of network (see `CPU_DEFAULT`); the choice and its reason are logged. Asking for an
engine that is not installed raises an EngineError naming the extra that provides it.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import fields
from typing import Any

from hsafast.engines.base import Engine, ModelSpec, missing_engine
from hsafast.errors import EngineError

__all__ = ["ENGINES", "Engine", "ModelSpec", "create_engine", "resolve_device", "select_engine"]

log = logging.getLogger("hsafast.engines")

ENGINES = ("auto", "torch", "onnxruntime", "tensorrt")
#: the CPU engine "auto" picks when both are installed (measured by `python -m bench score`)
CPU_DEFAULT = "onnxruntime"


def installed(name: str) -> bool:
    """Whether the package behind an engine is importable (without importing it)."""
    module = {"torch": "torch", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}[name]
    return importlib.util.find_spec(module) is not None


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda:0' when PyTorch sees a GPU, else 'cpu'; 'cuda' -> 'cuda:0'."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(f"unknown device {device!r}: {exc}") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise EngineError(f"device {device!r} was asked for but PyTorch sees no CUDA GPU")
        return f"cuda:{parsed.index or 0}"
    if parsed.type != "cpu":
        raise EngineError(f"device {device!r} is not supported (use 'cpu', 'cuda' or 'cuda:N')")
    return "cpu"


def select_engine(engine: str, device: str) -> tuple[str, str]:
    """(engine, reason) for a resolved device; raises EngineError for impossible requests."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    gpu = device.startswith("cuda")
    if engine != "auto":
        if not installed(engine):
            raise missing_engine(engine)
        if engine == "tensorrt" and not gpu:
            raise EngineError("the tensorrt engine runs on NVIDIA GPUs only; device is 'cpu'")
        return engine, "asked for"
    if gpu:
        if installed("tensorrt"):
            return "tensorrt", "TensorRT is installed and the device is a GPU"
        return "torch", 'TensorRT is not installed (pip install "hsafast[trt]"): torch bf16'
    if installed(CPU_DEFAULT):
        return CPU_DEFAULT, f"{CPU_DEFAULT} is installed and measured fastest on the CPU"
    return "torch", f"{CPU_DEFAULT} is not installed"


def create_engine(
    spec: ModelSpec, engine: str = "auto", device: str = "auto", **options: Any
) -> Engine:
    """A ready engine for the model; `options` go to the engine (TorchOptions fields for
    torch, `threads` for onnxruntime, TensorRTOptions fields for tensorrt)."""
    resolved_device = resolve_device(device)
    name, reason = select_engine(engine, resolved_device)
    log.info("engine %s on %s: %s", name, resolved_device, reason)
    if name == "torch":
        from hsafast.engines.torch_engine import TorchEngine, TorchOptions

        _check_options(name, options, [f.name for f in fields(TorchOptions)])
        return TorchEngine(spec, resolved_device, TorchOptions(**options))
    if name == "onnxruntime":
        from hsafast.engines.onnxruntime_engine import OnnxRuntimeEngine

        _check_options(name, options, ["threads"])
        return OnnxRuntimeEngine(spec, resolved_device, **options)
    from hsafast.engines.tensorrt_engine import TensorRTEngine, TensorRTOptions

    _check_options(name, options, [f.name for f in fields(TensorRTOptions)])
    return TensorRTEngine(spec, resolved_device, TensorRTOptions(**options))


def _check_options(engine: str, options: dict[str, Any], known: list[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise EngineError(f"unknown options {unknown} for the {engine} engine (known: {known})")
