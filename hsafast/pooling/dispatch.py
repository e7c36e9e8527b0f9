"""gated_attention_pool: one call over every backend (native CPU, CUDA, eager PyTorch)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hsafast.errors import PoolingError
from hsafast.pooling.engines import as_torch_if_device_array, is_torch_tensor, resolve_engine
from hsafast.pooling.params import GatedAttentionParams
from hsafast.pooling.state import PoolState, check_rows


def gated_attention_pool(
    h: Any,
    params: GatedAttentionParams,
    return_weights: bool = False,
    engine: str = "auto",
    chunk: int | None = None,
) -> Any:
    """Gated-attention (ABMIL) pooling of N tile embeddings into one slide embedding.

    a = w . (tanh(V h_i + bV) * sigmoid(U h_i + bU)) + b_w, weights = softmax(a) over the N
    rows, result = sum_i weights_i h_i. `h` is an N x D NumPy array or torch tensor (CuPy
    arrays are taken as torch tensors, zero copy); the result (float32, D) is of the same kind,
    on the same device; with `return_weights` a pair (pooled, weights (N)). `engine` is "auto"
    (the CUDA kernels for CUDA tensors when built, on the path predicted fastest,
    hsafast.pooling.cuda.choose_projection; else the native CPU kernel), "cpu", "cuda" or
    "torch" (the eager reference); `chunk` is the rows per CPU chunk. Raises PoolingError on
    empty, mis-shaped or non-finite input.
    """
    h = as_torch_if_device_array(h)
    if not isinstance(params, GatedAttentionParams):
        raise PoolingError(f"params must be GatedAttentionParams, got {type(params).__name__}")
    n, _ = check_rows(h, params.dim)
    if n == 0:
        raise PoolingError("no rows to pool: the bag of embeddings is empty")
    resolved = resolve_engine(h, engine)
    if resolved == "torch":
        return _pool_torch(h, params, return_weights)
    if resolved == "cuda":
        return _pool_cuda(h, params, return_weights)
    state = PoolState(params, keep_logits=return_weights, engine="cpu", chunk=chunk)
    state.update(h, start=0)
    out = state.result(return_weights)
    if not is_torch_tensor(h):
        return out
    import torch

    return tuple(torch.from_numpy(x) for x in out) if return_weights else torch.from_numpy(out)


def _pool_torch(h: Any, params: GatedAttentionParams, return_weights: bool) -> Any:
    import torch

    from hsafast.pooling.reference import gated_attention_pool_torch

    x = h if is_torch_tensor(h) else torch.from_numpy(np.asarray(h))
    pooled, weights = gated_attention_pool_torch(x, params, return_weights=True)
    if not bool(torch.isfinite(pooled).all()):
        raise PoolingError("h contains NaN or Inf (the pooled embedding is not finite)")
    if not is_torch_tensor(h):
        pooled, weights = pooled.numpy(), weights.numpy()
    return (pooled, weights) if return_weights else pooled


def _pool_cuda(h: Any, params: GatedAttentionParams, return_weights: bool) -> Any:
    from hsafast.pooling.cuda import pool_cuda

    return pool_cuda(h, params, return_weights)
