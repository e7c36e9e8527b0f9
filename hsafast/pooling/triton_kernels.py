"""Triton kernels of the fused gated-attention pooling (see ``triton_fused`` for the design).

Imported only when the Triton path runs, so that hsafast never needs Triton otherwise.
"""

# mypy: ignore-errors

import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):  # type: ignore[no-untyped-def]
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def block_states(  # type: ignore[no-untyped-def]
    h_ptr,
    stride_h,
    w_ptr,
    bv_ptr,
    bu_ptr,
    wv_ptr,
    b_w,
    logits_ptr,
    bm_ptr,
    bs_ptr,
    bacc_ptr,
    N,
    D,
    H,
    u_offset,
    BM: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    BD: tl.constexpr,
    EVEN_K: tl.constexpr,
    STORE_LOGITS: tl.constexpr,
    STAGES: tl.constexpr,
    WEIGHTED_SUM: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BM + tl.arange(0, BM)
    row_ok = rows < N
    h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_h
    ks = tl.arange(0, BK)
    logit = tl.zeros([BM], dtype=tl.float32)
    for hb in range(0, H, BH):
        cols = hb + tl.arange(0, BH)
        col_ok = cols < H
        v_cols = w_ptr + cols.to(tl.int64)[None, :] * D
        u_cols = v_cols + u_offset
        acc_v = tl.zeros([BM, BH], dtype=tl.float32)
        acc_u = tl.zeros([BM, BH], dtype=tl.float32)
        for k0 in tl.range(0, D, BK, num_stages=STAGES):
            k = k0 + ks
            if EVEN_K:
                a = tl.load(h_rows + k[None, :], mask=row_ok[:, None], other=0.0)
                wv = tl.load(v_cols + k[:, None], mask=col_ok[None, :], other=0.0)
                wu = tl.load(u_cols + k[:, None], mask=col_ok[None, :], other=0.0)
            else:
                k_ok = k < D
                a = tl.load(h_rows + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                w_ok = col_ok[None, :] & k_ok[:, None]
                wv = tl.load(v_cols + k[:, None], mask=w_ok, other=0.0)
                wu = tl.load(u_cols + k[:, None], mask=w_ok, other=0.0)
            acc_v = tl.dot(a, wv, acc_v)
            acc_u = tl.dot(a, wu, acc_u)
        bv = tl.load(bv_ptr + cols, mask=col_ok, other=0.0)
        bu = tl.load(bu_ptr + cols, mask=col_ok, other=0.0)
        wv_out = tl.load(wv_ptr + cols, mask=col_ok, other=0.0)
        tanh_v = 2.0 * _sigmoid(2.0 * (acc_v + bv[None, :])) - 1.0
        gate = tanh_v * _sigmoid(acc_u + bu[None, :])
        logit += tl.sum(gate * wv_out[None, :], axis=1)
    logit += b_w
    if STORE_LOGITS:
        tl.store(logits_ptr + rows, logit, mask=row_ok)
    logit = tl.where(row_ok, logit, float("-inf"))
    nan_rows = tl.sum((logit != logit).to(tl.int32), axis=0)
    m = tl.max(logit, axis=0)
    m = tl.where(nan_rows > 0, float("nan"), m)
    p = tl.exp(logit - m)
    tl.store(bm_ptr + pid, m)
    tl.store(bs_ptr + pid, tl.sum(p, axis=0))
    out = bacc_ptr + pid.to(tl.int64) * D
    if WEIGHTED_SUM == 2:
        # p x h on tensor cores: p as a 16 x BM matrix whose row 0 holds p rounded to h's
        # 16-bit type and row 1 the rounding remainder, so the sum keeps ~16 bits of p
        p_hi = p.to(h_ptr.dtype.element_ty)
        p_lo = (p - p_hi.to(tl.float32)).to(h_ptr.dtype.element_ty)
        r = tl.arange(0, 16)[:, None]
        pm = tl.where(r == 0, p_hi[None, :], tl.where(r == 1, p_lo[None, :], 0.0))
        pm = pm.to(h_ptr.dtype.element_ty)
    if WEIGHTED_SUM != 0:
        for d0 in range(0, D, BD):
            d = d0 + tl.arange(0, BD)
            d_ok = d < D
            x = tl.load(h_rows + d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            if WEIGHTED_SUM == 2:
                part = tl.sum(tl.dot(pm, x), axis=0)
            else:
                part = tl.sum(x.to(tl.float32) * p[:, None], axis=0)
            tl.store(out + d, part, mask=d_ok)


@triton.jit
def merge_states(  # type: ignore[no-untyped-def]
    bm_ptr,
    bs_ptr,
    bacc_ptr,
    n_blocks,
    D,
    state_ptr,
    pooled_ptr,
    status_ptr,
    BB: tl.constexpr,
    BD: tl.constexpr,
):
    pid = tl.program_id(0)
    # the global max (every program recomputes it: a few thousand floats at most)
    mx = tl.full([], float("-inf"), tl.float32)
    nan_blocks = tl.full([], 0, tl.int32)
    for b0 in range(0, n_blocks, BB):
        b = b0 + tl.arange(0, BB)
        bm = tl.load(bm_ptr + b, mask=b < n_blocks, other=float("-inf"))
        nan_blocks += tl.sum((bm != bm).to(tl.int32), axis=0)
        mx = tl.maximum(mx, tl.max(bm, axis=0))
    d = pid * BD + tl.arange(0, BD)
    d_ok = d < D
    s = tl.full([], 0.0, tl.float32)
    acc = tl.zeros([BD], dtype=tl.float32)
    for b0 in range(0, n_blocks, BB):
        b = b0 + tl.arange(0, BB)
        b_ok = b < n_blocks
        bm = tl.load(bm_ptr + b, mask=b_ok, other=float("-inf"))
        scale = tl.where(b_ok, tl.exp(bm - mx), 0.0)
        s += tl.sum(scale * tl.load(bs_ptr + b, mask=b_ok, other=0.0), axis=0)
        x = tl.load(
            bacc_ptr + b.to(tl.int64)[:, None] * D + d[None, :],
            mask=b_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        acc += tl.sum(x * scale[:, None], axis=0)
    tl.store(state_ptr + 2 + d, acc.to(tl.float64), mask=d_ok)
    tl.store(pooled_ptr + d, acc / s, mask=d_ok)
    finite = (acc == acc) & (tl.abs(acc) < float("inf"))
    bad = tl.sum((d_ok & ~finite).to(tl.int32), axis=0) + nan_blocks
    bad += ((s != s) | (s == float("inf")) | (mx != mx) | (mx == float("inf"))).to(tl.int32)
    tl.atomic_max(status_ptr, (bad > 0).to(tl.int32))
    if pid == 0:
        tl.store(state_ptr, mx.to(tl.float64))
        tl.store(state_ptr + 1, s.to(tl.float64))


@triton.jit
def softmax_weights(logits_ptr, state_ptr, N, BN: tl.constexpr):  # type: ignore[no-untyped-def]
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    ok = i < N
    m = tl.load(state_ptr).to(tl.float32)
    s = tl.load(state_ptr + 1).to(tl.float32)
    a = tl.load(logits_ptr + i, mask=ok, other=0.0)
    tl.store(logits_ptr + i, tl.exp(a - m) / s, mask=ok)
