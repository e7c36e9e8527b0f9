"""GPU pooling through the fused CUDA kernels, handed raw device pointers of torch tensors.

The extension never links libtorch: PyTorch allocates (its caching allocator), the kernels
only read and write the memory they are pointed at, on PyTorch's current stream.

Two choices, each a module constant so that the default can follow measurements:
- PROJECTION, how h @ [V; U]^T is computed: "cublas" (PyTorch's GEMM into an N x 2H buffer,
  then the gate epilogue reads it back), "tensor-cores" (inside hsafast's WMMA kernel, no
  N x 2H buffer) or "triton" (one fused Triton kernel does the projection with Hopper's wgmma
  and everything after it, see ``triton_fused``; needs Triton but not a CUDA build of hsafast).
- EPILOGUE, what runs after the first two: "one-pass" (logits, block softmax states and the
  weighted sum in one kernel, then a parallel merge) or "three-kernel" (the first version,
  kept to compare).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hsafast.errors import PoolingError
from hsafast.pooling.engines import cuda_built
from hsafast.pooling.params import GatedAttentionParams

log = logging.getLogger("hsafast.pooling")

_DTYPE_CODES = {"torch.bfloat16": 0, "torch.float16": 1}

PROJECTIONS = ("cublas", "tensor-cores", "triton")
#: cuBLAS's Hopper GEMM ran at about 600 TFLOP/s on an H200 where the WMMA kernel reached
#: about 140-175: the GEMM plus the one-pass epilogue is predicted the faster path.
DEFAULT_PROJECTION = "cublas"
#: Above this size of the N x 2H projection buffer, the tensor-core kernel (which needs none)
#: is used by default instead of cuBLAS.
MAX_PROJECTION_BYTES = 2 << 30

EPILOGUES = ("one-pass", "three-kernel")
DEFAULT_EPILOGUE = "one-pass"
_EPILOGUE_CODES = {"three-kernel": 0, "one-pass": 1}


def choose_projection(n: int, hidden: int) -> str:
    """The projection used when none is given: DEFAULT_PROJECTION unless it cannot run here
    (Triton missing; hsafast built without CUDA) or its buffer is huge."""
    from hsafast.pooling import triton_fused

    if not cuda_built():
        return "triton"
    choice = DEFAULT_PROJECTION
    if choice == "triton" and not triton_fused.available():
        choice = "cublas"
    if choice == "cublas" and n * 2 * hidden * 2 > MAX_PROJECTION_BYTES:
        return "tensor-cores"
    return choice


def device_params(params: GatedAttentionParams, device: Any, dtype: Any) -> dict[str, Any]:
    """The head as torch tensors on ``device``, cached on ``params``: the stacked [V; U]
    (``weights``, 2H x D, and ``weights_t``) in ``dtype``, ``bV``, ``bU``, ``w`` in float32."""
    import torch

    key = f"cuda-kernel:{device}:{dtype}"
    cached = params._cache.get(key)
    if cached is None:
        weights = torch.from_numpy(params.stacked()).to(device=device, dtype=dtype)
        cached = params._cache[key] = {
            "weights": weights,
            "weights_t": weights.t(),
            "bV": torch.from_numpy(params.bV).to(device),
            "bU": torch.from_numpy(params.bU).to(device),
            "w": torch.from_numpy(params.w).to(device),
        }
    return cached


def _launch_pool(
    h: Any,
    params: GatedAttentionParams,
    *,
    want_logits: bool,
    want_weights: bool,
    want_pooled: bool,
    projection: str | None,
    epilogue: str | None,
    z: Any = None,
) -> dict[str, Any]:
    """Launches the kernels (asynchronously) and returns the device tensors they fill:
    state (float64 D + 2), and when asked pooled (float32 D), logits or weights (float32 N),
    status (int32, 1 when the state is not finite)."""
    import torch

    from hsafast._native import core

    if h.dtype == torch.float32:
        log.info("pooling on cuda: rounding float32 embeddings to bfloat16 for tensor cores")
        h = h.to(torch.bfloat16)
    code = _DTYPE_CODES.get(str(h.dtype))
    if code is None:
        raise PoolingError(f"the CUDA kernel takes bfloat16/float16/float32 h, got {h.dtype}")
    if h.stride(-1) != 1:  # any row stride and alignment is fine; columns must be packed
        h = h.contiguous()
    n, dim = int(h.shape[0]), int(h.shape[1])
    projection = projection or choose_projection(n, params.hidden)
    if projection not in PROJECTIONS:
        raise PoolingError(f"unknown projection {projection!r}; expected one of {PROJECTIONS}")
    epilogue = epilogue or DEFAULT_EPILOGUE
    if epilogue not in _EPILOGUE_CODES:
        raise PoolingError(f"unknown epilogue {epilogue!r}; expected one of {EPILOGUES}")
    device = h.device
    if projection != "triton" and not cuda_built():
        raise PoolingError(f"the {projection} projection needs hsafast built with CUDA")
    if projection == "triton":
        if z is not None:
            raise PoolingError("the Triton path computes its own projection; z must be None")
        return _launch_triton(h, params, want_logits=want_logits, want_weights=want_weights)
    with torch.cuda.device(device):
        p = device_params(params, device, h.dtype)
        # the GEMM goes first, so that the allocations below overlap with it on the GPU; it
        # runs on the same stream, so its buffer outlives its use by the kernels
        if z is None and projection == "cublas":
            z = torch.mm(h, p["weights_t"])
        if z is not None and (z.dtype != h.dtype or z.shape != (n, 2 * params.hidden)):
            raise PoolingError(f"the projection must be {h.dtype} ({n}, {2 * params.hidden})")
        if z is not None and z.stride(-1) != 1:
            z = z.contiguous()
        nbytes = int(core.pool_cuda_workspace_bytes(n, dim, params.hidden))
        out: dict[str, Any] = {
            "workspace": torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device),
            "state": torch.empty(dim + 2, dtype=torch.float64, device=device),
        }
        if want_pooled:
            out["pooled"] = torch.empty(dim, dtype=torch.float32, device=device)
            out["status"] = torch.empty(1, dtype=torch.int32, device=device)
        if want_logits or want_weights:  # the weights overwrite the logits in place
            out["logits"] = torch.empty(n, dtype=torch.float32, device=device)
        stream = torch.cuda.current_stream(device).cuda_stream
        try:
            core.pool_cuda(
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
                out["workspace"].data_ptr(),
                nbytes,
                out["logits"].data_ptr() if "logits" in out else 0,
                out["state"].data_ptr(),
                stream,
                0 if z is None else z.data_ptr(),
                0 if z is None else z.stride(0),
                _EPILOGUE_CODES[epilogue],
                out["pooled"].data_ptr() if want_pooled else 0,
                out["logits"].data_ptr() if want_weights else 0,
                out["status"].data_ptr() if want_pooled else 0,
            )
        except RuntimeError as exc:
            raise PoolingError(f"CUDA pooling kernel failed: {exc}") from exc
        out["z"] = z  # keeps the projection buffer alive until the caller drops the result
    return out


def _launch_triton(
    h: Any, params: GatedAttentionParams, *, want_logits: bool, want_weights: bool
) -> dict[str, Any]:
    import torch

    from hsafast.pooling import triton_fused

    with torch.cuda.device(h.device):
        p = device_params(params, h.device, h.dtype)
        try:
            return triton_fused.launch(
                h,
                p["weights"],
                p["bV"],
                p["bU"],
                p["w"],
                params.b_w,
                want_logits=want_logits,
                want_weights=want_weights,
            )
        except PoolingError:
            raise
        except Exception as exc:  # Triton's compiler and driver errors have no common base
            raise PoolingError(f"Triton pooling kernel failed: {exc}") from exc


def pool_state_cuda(
    h: Any,
    params: GatedAttentionParams,
    want_logits: bool = False,
    projection: str | None = None,
    epilogue: str | None = None,
    z: Any = None,
) -> tuple[Any, Any]:
    """(state, logits) of all rows of the CUDA tensor h, both on the device, not synchronised.

    state is float64 [m, s, acc(D)]; logits float32 (N) or None. float32 input is rounded to
    bfloat16 first: the kernels run their matrix products on tensor cores in 16-bit.
    `projection` is one of PROJECTIONS (default: choose_projection), `epilogue` one of
    EPILOGUES (default DEFAULT_EPILOGUE); `z`, a precomputed h @ [V; U]^T (N x 2H, the dtype
    of h), skips the projection.
    """
    out = _launch_pool(
        h,
        params,
        want_logits=want_logits,
        want_weights=False,
        want_pooled=False,
        projection=projection,
        epilogue=epilogue,
        z=z,
    )
    return out["state"], out.get("logits")


def pool_cuda(
    h: Any,
    params: GatedAttentionParams,
    return_weights: bool = False,
    projection: str | None = None,
    epilogue: str | None = None,
) -> Any:
    """Pooled embedding (float32 D, on h's device) and optionally the weights (float32 N).

    The kernels write the pooled vector, the weights and a non-finite flag themselves, so the
    only host round trip is reading that flag (one 4-byte copy, which waits for the kernels).
    Raises PoolingError when h holds NaN or Inf.
    """
    out = _launch_pool(
        h,
        params,
        want_logits=False,
        want_weights=return_weights,
        want_pooled=True,
        projection=projection,
        epilogue=epilogue,
    )
    if int(out["status"].item()) != 0:
        raise PoolingError("h contains NaN or Inf (the pooled state is not finite)")
    return (out["pooled"], out["logits"]) if return_weights else out["pooled"]


def check_state(state: np.ndarray) -> None:
    """Raises PoolingError when a state read back from the device is not finite."""
    if not np.isfinite(state[1:]).all() or not np.isfinite(state[0]):
        raise PoolingError("h contains NaN or Inf (the pooled state is not finite)")
