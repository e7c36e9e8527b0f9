"""GPU pooling through the fused CUDA kernel, handed raw device pointers of torch tensors.

The extension never links libtorch: PyTorch allocates (its caching allocator), the kernel
only reads and writes the memory it is pointed at, on PyTorch's current stream.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hsafast.errors import PoolingError
from hsafast.pooling.params import GatedAttentionParams

log = logging.getLogger("hsafast.pooling")

_DTYPE_CODES = {"torch.bfloat16": 0, "torch.float16": 1}

#: How the CUDA path computes h @ [V; U]^T: "tensor-cores" (inside the fused kernel, h read
#: once for it) or "cublas" (PyTorch's GEMM into an N x 2H buffer, then the fused epilogue).
PROJECTIONS = ("tensor-cores", "cublas")
DEFAULT_PROJECTION = "tensor-cores"


def _device_params(params: GatedAttentionParams, device: Any, dtype: Any) -> dict[str, Any]:
    import torch

    key = f"cuda-kernel:{device}:{dtype}"
    if key not in params._cache:
        params._cache[key] = {
            "weights": torch.from_numpy(params.stacked()).to(device=device, dtype=dtype),
            "bV": torch.from_numpy(params.bV).to(device),
            "bU": torch.from_numpy(params.bU).to(device),
            "w": torch.from_numpy(params.w).to(device),
        }
    return params._cache[key]


def pool_state_cuda(
    h: Any,
    params: GatedAttentionParams,
    want_logits: bool = False,
    projection: str | None = None,
) -> tuple[Any, Any]:
    """(state, logits) of all rows of the CUDA tensor h, both on the device.

    state is float64 [m, s, acc(D)]; logits float32 (N) or None. float32 input is rounded to
    bfloat16 first: the kernel runs its matrix products on tensor cores in 16-bit.
    `projection` is one of PROJECTIONS (default DEFAULT_PROJECTION).
    """
    import torch

    from hsafast import _core

    if h.dtype == torch.float32:
        log.info("pooling on cuda: rounding float32 embeddings to bfloat16 for tensor cores")
        h = h.to(torch.bfloat16)
    code = _DTYPE_CODES.get(str(h.dtype))
    if code is None:
        raise PoolingError(f"the CUDA kernel takes bfloat16/float16/float32 h, got {h.dtype}")
    if h.stride(-1) != 1:  # any row stride and alignment is fine; columns must be packed
        h = h.contiguous()
    n, dim = int(h.shape[0]), int(h.shape[1])
    with torch.cuda.device(h.device):
        p = _device_params(params, h.device, h.dtype)
        nbytes = int(_core.pool_cuda_workspace_bytes(n, dim, params.hidden))
        workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=h.device)
        state = torch.empty(dim + 2, dtype=torch.float64, device=h.device)
        logits = torch.empty(n, dtype=torch.float32, device=h.device) if want_logits else None
        stream = torch.cuda.current_stream(h.device).cuda_stream
        projection = projection or DEFAULT_PROJECTION
        if projection not in PROJECTIONS:
            raise PoolingError(f"unknown projection {projection!r}; expected one of {PROJECTIONS}")
        # the GEMM runs on the same stream, so the buffer outlives its use by the kernels
        z = h @ p["weights"].T if projection == "cublas" else None
        try:
            _launch(
                h.data_ptr(),
                h.stride(0) if n > 1 else dim,
                code,
                n,
                dim,
                p["weights"].data_ptr(),
                p["bV"].data_ptr(),
                p["bU"].data_ptr(),
                p["w"].data_ptr(),
                params.b_w,
                params.hidden,
                workspace.data_ptr(),
                nbytes,
                0 if logits is None else logits.data_ptr(),
                state.data_ptr(),
                stream,
                0 if z is None else z.data_ptr(),
                0 if z is None else z.stride(0),
            )
        except RuntimeError as exc:
            raise PoolingError(f"CUDA pooling kernel failed: {exc}") from exc
    return state, logits


def _launch(*args: Any) -> None:
    from hsafast import _core

    _core.pool_cuda(*args)  # raw pointers: h, weights, biases, workspace, logits, state


def check_state(state: np.ndarray) -> None:
    """Raises PoolingError when a state read back from the device is not finite."""
    if not np.isfinite(state[1:]).all() or not np.isfinite(state[0]):
        raise PoolingError("h contains NaN or Inf (the pooled state is not finite)")
