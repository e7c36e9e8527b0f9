"""CPU pooling: NumPy's BLAS computes h_chunk @ [V; U]^T, one native call does the rest.

Chunks of about 16 MB of embeddings keep the rows that the GEMM just read in the last-level
cache for the weighted sum, and bound the extra memory to chunk x 2H floats. Fewer, larger
chunks matter on busy machines: each chunk is a synchronisation point of the BLAS threads and
of the kernel's, and on 2 loaded cores 512-row chunks took 3.4x as long as 4096-row ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hsafast.errors import PoolingError
from hsafast.pooling.engines import is_torch_tensor
from hsafast.pooling.params import GatedAttentionParams

_CHUNK_BYTES = 16 << 20


def default_chunk(dim: int) -> int:
    """Rows per chunk: about 16 MB of float32 embeddings, between 256 and 8192 rows."""
    return int(np.clip(_CHUNK_BYTES // (4 * max(dim, 1)), 256, 8192))


def rows_float32(h: Any, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of h as float32 with unit inner stride (a view when possible)."""
    if is_torch_tensor(h):
        part = h[start:stop].detach()
        if part.dtype != _torch_float32():
            part = part.float()
        if part.stride(-1) != 1:
            part = part.contiguous()
        return part.numpy()
    part = h[start:stop]
    if part.dtype != np.float32 or (part.shape[1] > 1 and part.strides[1] != 4):
        part = np.ascontiguousarray(part, dtype=np.float32)
    return part


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

    The projection always runs on NumPy's BLAS, torch input included: the two BLAS libraries
    are equally fast here, but PyTorch's OpenMP workers spin between calls and then compete
    with the native kernel's threads (1.6x slower end to end in one run on 2 busy cores).
    On NaN/Inf, PoolingError names the first bad row (numbered from row_offset); the state then
    holds a partial sum and should be discarded.
    """
    from hsafast._native import core

    n = int(h.shape[0])
    stacked = params.stacked()
    rows_needed = min(chunk, n)
    z_buf = np.empty((rows_needed, 2 * params.hidden), dtype=np.float32)
    project = _numpy_projection(stacked, z_buf)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = rows_float32(h, start, stop)
        z = project(rows)
        out = None if logits is None else logits[start:stop]
        ok = core.pool_chunk(z, rows, params.bV, params.bU, params.w, params.b_w, state, out)
        if not ok:
            raise PoolingError(nonfinite_reason(rows, row_offset + start))


def _numpy_projection(stacked: np.ndarray, z_buf: np.ndarray) -> Callable[[np.ndarray], Any]:
    stacked_t = stacked.T  # D x 2H view: BLAS reads it transposed, no copy

    def project(rows: np.ndarray) -> np.ndarray:
        z = z_buf[: len(rows)]
        np.matmul(rows, stacked_t, out=z)
        return z

    return project
