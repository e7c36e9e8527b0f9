"""Choosing the pooling backend for an input, with the reason logged.

`cpu`: NumPy's BLAS for the projection + the native fused kernel (hsafast._core).
`cuda`: the fused GPU kernels for a torch CUDA tensor: hsafast's CUDA build, or the fused
Triton kernel where hsafast was built without CUDA but Triton is installed.
`torch`: the eager PyTorch reference, on whatever device the tensor lives.
"""

from __future__ import annotations

import logging
from typing import Any

from hsafast.errors import PoolingError

log = logging.getLogger("hsafast.pooling")

ENGINES = ("auto", "cpu", "cuda", "torch")


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def as_torch_if_device_array(x: Any) -> Any:
    """CuPy (or any __cuda_array_interface__) arrays as zero-copy torch tensors; else x."""
    if is_torch_tensor(x) or not hasattr(x, "__cuda_array_interface__"):
        return x
    import torch

    return torch.as_tensor(x, device="cuda")


def on_cuda(x: Any) -> bool:
    return is_torch_tensor(x) and x.device.type == "cuda"


def cuda_built() -> bool:
    """Whether this build of hsafast._core carries the CUDA kernels."""
    from hsafast._native import core

    return hasattr(core, "pool_cuda")


def gpu_kernels_available() -> bool:
    """Whether the `cuda` engine can run: a CUDA build of hsafast, or Triton."""
    from hsafast.pooling import triton_fused

    return cuda_built() or triton_fused.available()


def resolve_engine(h: Any, engine: str) -> str:
    """The concrete engine for `h`; raises PoolingError when the requested one cannot run."""
    if engine not in ENGINES:
        raise PoolingError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    gpu = on_cuda(h)
    if engine == "cuda":
        if not gpu:
            raise PoolingError("engine='cuda' needs h as a torch tensor on a CUDA device")
        if not gpu_kernels_available():
            raise PoolingError(
                "engine='cuda': hsafast was built without CUDA (HSAFAST_CUDA=OFF) and Triton "
                "is not installed"
            )
        return "cuda"
    if engine == "cpu" and gpu:
        raise PoolingError("engine='cpu' was given a CUDA tensor; move it to the CPU first")
    if engine != "auto":
        return engine
    if gpu:
        if gpu_kernels_available():
            log.debug("pooling engine cuda: h is on %s", h.device)
            return "cuda"
        log.info(
            "pooling engine torch: h is on %s but hsafast was built without CUDA and Triton is "
            "not installed",
            h.device,
        )
        return "torch"
    log.debug("pooling engine cpu: h is in host memory")
    return "cpu"
