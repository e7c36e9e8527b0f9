"""Gated-attention pooling fused into one GPU pass, written in Triton.

The CUDA path computes the projection Z = h @ [V; U]^T with cuBLAS and reads Z back in the
epilogue (an N x 2H round trip through HBM) or uses hsafast's own WMMA kernel (no Hopper
wgmma). Triton emits wgmma with a software pipeline on sm_90, so one kernel here does
everything per block of BM rows: both projections on tensor cores (fp32 accumulators), bias,
tanh, sigmoid, the dot with w, the block's softmax state (max, sum of exponentials) and the
exponential-weighted sum of its rows. h is read from HBM once; the block re-reads it from L2
for the second hidden slab and the weighted sum. A second small kernel merges the block
states (the Flash-Decoding merge) into the [m, s, acc] state of ``PoolState`` and the pooled
vector; a third, on request, turns the logits into softmax weights in place.

Measured on an H200 (N=100k, D=1024, H=256, bf16): 0.40-0.42 ms, against 0.51 ms for eager
PyTorch and 0.29-0.31 ms for cuBLAS + hsafast's one-pass CUDA epilogue; the projection alone runs
at about 350 TFLOP/s here where cuBLAS reaches about 630 (no warp specialisation or TMA in
this kernel). So a CUDA build of hsafast keeps cuBLAS + one-pass by default, and this kernel
is the GPU path of builds without CUDA (the default pip install), and needs no N x 2H buffer.
Triton is optional (it comes with CUDA builds of PyTorch); ``available()`` says whether this
path can run.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from dataclasses import dataclass
from typing import Any

from hsafast.errors import PoolingError


@functools.cache
def available() -> bool:
    """Whether Triton is installed (the kernels compile on first use)."""
    return importlib.util.find_spec("triton") is not None


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes and launch shape of the fused kernel (powers of two, at least 16)."""

    rows: int = 128
    """BM, rows of h per program."""
    hidden: int = 128
    """BH, hidden units per slab (each slab holds a V and a U accumulator of BM x BH)."""
    depth: int = 64
    """BK, the reduction step over D of the projection."""
    sum_width: int = 128
    """BD, columns of h per step of the weighted sum."""
    warps: int = 8
    stages: int = 3
    weighted_sum: str = "dot"
    """How each block sums its rows weighted by p = exp(a - m): "dot" (a tensor-core product,
    p split into two 16-bit halves so that it keeps about 16 bits) or "reduce" (fp32
    multiply and a reduction over the rows, slower)."""


#: Tile shape used when none is given, the fastest in `python -m bench pool --device cuda`
#: on an H200 (0.40-0.42 ms at N=100k, D=1024, H=256; "reduce" 0.43-0.46 ms).
DEFAULT_TILES = TileConfig()

#: Shapes the benchmark compares (and the GPU tests check). Each compiles for sm_90 and fits
#: the 227 KB of shared memory, (2 x BH + BM) x BK x 2 bytes x stages.
CANDIDATE_TILES = (
    TileConfig(),
    TileConfig(stages=4),
    TileConfig(stages=2),
    TileConfig(weighted_sum="reduce"),
    TileConfig(depth=32, stages=6, weighted_sum="reduce"),
    TileConfig(hidden=64, stages=4, weighted_sum="reduce"),
    TileConfig(rows=64, warps=4, stages=4, weighted_sum="reduce"),
    TileConfig(rows=256, hidden=64, weighted_sum="reduce"),
    # one warp group and at most ~113 KB of shared memory: two blocks per SM, so that one
    # block's gates and weighted sum may overlap the other's projection (measured: slower)
    TileConfig(hidden=64, warps=4),
    TileConfig(hidden=64, warps=4, weighted_sum="reduce"),
    TileConfig(hidden=64, warps=4, stages=2),
    TileConfig(rows=64, warps=4, stages=2),
    TileConfig(hidden=64, depth=32, warps=4, stages=4),
    TileConfig(rows=64, hidden=64, warps=4),
)


_WEIGHTED_SUM_CODES = {"reduce": 1, "dot": 2}


def _pow2_at_most(value: int, cap: int) -> int:
    """The smallest power of two >= value (at least 16), capped at ``cap``."""
    p = 16
    while p < value and p < cap:
        p *= 2
    return min(p, cap)


def launch(
    h: Any,
    weights: Any,
    bV: Any,
    bU: Any,
    w: Any,
    b_w: float,
    *,
    want_logits: bool,
    want_weights: bool,
    tiles: TileConfig | None = None,
    logits_only: bool = False,
) -> dict[str, Any]:
    """Launches the fused kernels on h's device and current stream (asynchronously).

    h: (N, D) bf16/fp16 CUDA tensor with packed columns; weights: the stacked [V; U]
    (2H, D) in h's dtype; bV, bU, w: float32 (H). Returns device tensors: state (float64
    D + 2: m, s, unnormalised acc), pooled (float32 D), status (int32, 1 when not finite),
    and logits (float32 N; softmax weights with ``want_weights``) when asked. With
    ``logits_only`` just the logits: no weighted sum, no merge (the benchmark's breakdown).
    """
    if not available():
        raise PoolingError("the Triton pooling path needs Triton (pip install triton)")
    import torch
    import triton

    from hsafast.pooling import triton_kernels as k

    t = tiles or DEFAULT_TILES
    n, dim = int(h.shape[0]), int(h.shape[1])
    hidden = int(bV.shape[0])
    bm = _pow2_at_most(n, t.rows)
    bh = _pow2_at_most(hidden, t.hidden)
    bk = _pow2_at_most(dim, t.depth)
    bd = _pow2_at_most(dim, t.sum_width)
    n_blocks = triton.cdiv(n, bm)
    device = h.device
    f32 = dict(dtype=torch.float32, device=device)
    block_m = torch.empty(n_blocks, **f32)
    block_s = torch.empty(n_blocks, **f32)
    block_acc = torch.empty((n_blocks, dim), **f32)
    keep_logits = want_logits or want_weights or logits_only
    logits = torch.empty(n if keep_logits else 1, **f32)
    out = {
        "state": torch.empty(dim + 2, dtype=torch.float64, device=device),
        "pooled": torch.empty(dim, **f32),
        "status": torch.zeros(1, dtype=torch.int32, device=device),
    }
    # (a CPU tensor only under TRITON_INTERPRET=1, the interpreter the tests also use)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        k.block_states[(n_blocks,)](
            h,
            h.stride(0),
            weights,
            bV,
            bU,
            w,
            float(b_w),
            logits,
            block_m,
            block_s,
            block_acc,
            n,
            dim,
            hidden,
            hidden * dim,
            BM=bm,
            BH=bh,
            BK=bk,
            BD=bd,
            EVEN_K=dim % bk == 0,
            STORE_LOGITS=keep_logits,
            STAGES=t.stages,
            WEIGHTED_SUM=0 if logits_only else _WEIGHTED_SUM_CODES[t.weighted_sum],
            num_warps=t.warps,
        )
        if logits_only:
            return {"logits": logits}
        merge_width = 128
        k.merge_states[(triton.cdiv(dim, merge_width),)](
            block_m,
            block_s,
            block_acc,
            n_blocks,
            dim,
            out["state"],
            out["pooled"],
            out["status"],
            BB=32,
            BD=merge_width,
            num_warps=4,
        )
        if want_weights:
            grid = (triton.cdiv(n, 1024),)
            k.softmax_weights[grid](logits, out["state"], n, BN=1024, num_warps=4)
    if keep_logits:
        out["logits"] = logits
    return out
