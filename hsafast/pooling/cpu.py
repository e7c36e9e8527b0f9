"""CPU pooling: NumPy's BLAS computes h_chunk @ [V; U]^T, one native call does the rest.

Chunks of a few MB keep the rows that the GEMM just read hot in cache for the weighted sum,
and bound the extra memory to chunk x 2H floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hsafast.errors import PoolingError
from hsafast.pooling.engines import is_torch_tensor
from hsafast.pooling.params import GatedAttentionParams

_CHUNK_BYTES = 4 << 20


def default_chunk(dim: int) -> int:
    """Rows per chunk: about 4 MB of float32 embeddings, between 128 and 4096 rows."""
    return int(np.clip(_CHUNK_BYTES // (4 * max(dim, 1)), 128, 4096))


def rows_float32(h: Any, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of h as float32 with unit inner stride (a view when possible)."""
    if is_torch_tensor(h):
        part = h[start:stop].detach()
        if part.dtype != _torch_float32():
            part = part.float()
        if part.stride(-1) != 1:
            part = part.contiguous()
        return part.numpy()  # type: ignore[no-any-return]
    part = h[start:stop]
    if part.dtype != np.float32 or (part.shape[1] > 1 and part.strides[1] != 4):
        part = np.ascontiguousarray(part, dtype=np.float32)
    return part  # type: ignore[no-any-return]


def _torch_float32() -> Any:
    import torch

    return torch.float32


def nonfinite_reason(rows: np.ndarray, start: int) -> str:
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        return f"h row {start + int(bad[0])} contains NaN or Inf"
    return f"attention logits or weighted sum overflowed in rows {start}..{start + len(rows) - 1}"


def absorb_cpu(
    h: Any,
    params: GatedAttentionParams,
    state: np.ndarray,
    logits: np.ndarray | None,
    chunk: int,
    row_offset: int = 0,
) -> None:
    """Absorbs all rows of h (N x D) into the float64 state [m, s, acc(D)], chunk by chunk.

    On NaN/Inf, PoolingError names the first bad row (numbered from row_offset); the state
    then holds a partial sum and should be discarded.
    """
    from hsafast import _core

    n = int(h.shape[0])
    stacked_t = params.stacked().T  # D x 2H view; BLAS reads it transposed, no copy
    z_buf = np.empty((min(chunk, n), 2 * params.hidden), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = rows_float32(h, start, stop)
        z = z_buf[: stop - start]
        np.matmul(rows, stacked_t, out=z)
        out = None if logits is None else logits[start:stop]
        ok = _core.pool_chunk(
            z, rows, params.bV, params.bU, params.w, params.b_w, state, out
        )
        if not ok:
            raise PoolingError(nonfinite_reason(rows, row_offset + start))
