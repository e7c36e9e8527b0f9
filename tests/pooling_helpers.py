"""Shared helpers of the pooling tests: random heads and bags, and a comparison that names
the worst element."""

from __future__ import annotations

import numpy as np

from hsafast.pooling import GatedAttentionParams


def random_params(dim: int, hidden: int, seed: int = 0, scale: float = 1.0) -> GatedAttentionParams:
    """A head like a trained one: Linear-style init, with w scaled to make sharper softmaxes."""
    p = GatedAttentionParams.random(dim, hidden, seed=seed)
    if scale == 1.0:
        return p
    return GatedAttentionParams(p.V, p.bV, p.U, p.bU, p.w * scale, p.b_w)


def random_bag(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Embeddings with a non-zero mean per column and heavy-ish tails, like encoder features."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 1.0, size=dim)
    return (mean + rng.standard_t(5, size=(n, dim))).astype(np.float32)


def assert_close(actual, expected, rtol: float, what: str) -> None:
    """|actual - expected| <= rtol * max|expected| everywhere; the message names the worst index.

    The tolerance is relative to the largest magnitude, because pooled coordinates near zero
    are sums with cancellation, where an element-wise relative error means nothing.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e)
    scale = max(float(np.abs(e).max()), 1e-30)
    worst = int(np.argmax(err))
    rel = float(err.flat[worst]) / scale
    assert rel <= rtol, (
        f"{what}: worst element {np.unravel_index(worst, a.shape)}: {a.flat[worst]!r} vs "
        f"{e.flat[worst]!r}, error {rel:.3g} of max|expected| (tolerance {rtol:g})"
    )
