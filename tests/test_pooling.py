"""The native CPU pooling kernel against the PyTorch and NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pooling_helpers import assert_close, random_bag, random_params

from hsafast._native import core
from hsafast.errors import PoolingError
from hsafast.pooling import GatedAttentionParams, gated_attention_pool
from hsafast.pooling.reference import gated_attention_pool_numpy, gated_attention_pool_torch

# (N, D, H, chunk): N from 1 up, D and H off every convenient multiple, chunk edges everywhere
SHAPES = [
    (1, 7, 5, None),
    (2, 1, 1, 1),
    (3, 5, 16, 2),
    (17, 33, 19, 4),
    (64, 16, 17, 64),
    (65, 31, 33, 64),
    (300, 129, 67, 63),
    (1000, 100, 256, 333),
    (4097, 385, 131, 1024),
    (20011, 64, 48, 777),
]


@pytest.mark.parametrize(("n", "dim", "hidden", "chunk"), SHAPES)
def test_cpu_matches_torch_reference_fp32(n: int, dim: int, hidden: int, chunk: int | None) -> None:
    params = random_params(dim, hidden, seed=n, scale=4.0)
    h = random_bag(n, dim, seed=n + 1)
    pooled, weights = gated_attention_pool(
        h, params, return_weights=True, engine="cpu", chunk=chunk
    )
    ref_pooled, ref_weights = gated_attention_pool_torch(torch.from_numpy(h), params, True)
    assert pooled.dtype == np.float32 and pooled.shape == (dim,)
    assert weights.shape == (n,)
    assert_close(pooled, ref_pooled.numpy(), 1e-5, "pooled vs torch fp32")
    assert_close(weights, ref_weights.numpy(), 1e-5, "weights vs torch fp32")
    np64, w64 = gated_attention_pool_numpy(h, params, True)
    assert_close(pooled, np64, 1e-5, "pooled vs numpy fp64")
    assert_close(weights, w64, 1e-5, "weights vs numpy fp64")
    assert abs(float(weights.sum()) - 1.0) < 1e-5


@pytest.mark.parametrize("hidden", [1, 15, 16, 17, 31, 32, 33, 47])
def test_gated_logits_kernel_vs_float64(hidden: int) -> None:
    """The SIMD body and the scalar tail of the epilogue, over extreme and tiny inputs."""
    rng = np.random.default_rng(hidden)
    z = np.concatenate(
        [
            rng.normal(0, 3, size=(200, 2 * hidden)),
            rng.normal(0, 1e-4, size=(50, 2 * hidden)),
            rng.uniform(-200, 200, size=(50, 2 * hidden)),
        ]
    ).astype(np.float32)
    bv, bu, w = (rng.normal(0, 0.5, size=hidden).astype(np.float32) for _ in range(3))
    got = core.gated_logits(z, bv, bu, w, 0.25)
    z64 = z.astype(np.float64)
    gate = np.tanh(z64[:, :hidden] + bv) / (1.0 + np.exp(-(z64[:, hidden:] + bu)))
    want = gate @ w.astype(np.float64) + 0.25
    err = np.abs(got - want) / (np.abs(w).sum() + 1.0)
    worst = int(np.argmax(err))
    assert err[worst] < 2e-6, f"row {worst}: {got[worst]} vs {want[worst]}"


def test_thread_counts_agree() -> None:
    params = random_params(96, 40, seed=3)
    h = random_bag(5000, 96, seed=4)
    before = core.get_num_threads()
    try:
        core.set_num_threads(1)
        one = gated_attention_pool(h, params, engine="cpu")
        core.set_num_threads(2)
        two = gated_attention_pool(h, params, engine="cpu")
    finally:
        core.set_num_threads(before)
    assert_close(two, one, 1e-6, "2 threads vs 1 thread")


def test_large_logits_are_stable() -> None:
    """Logits in the hundreds: the online softmax must not overflow where the reference does not."""
    params = random_params(40, 24, seed=5, scale=300.0)
    h = random_bag(3000, 40, seed=6)
    pooled, weights = gated_attention_pool(h, params, return_weights=True, chunk=257)
    ref, ref_w = gated_attention_pool_torch(torch.from_numpy(h).double(), params, True)
    assert_close(pooled, ref.numpy(), 1e-5, "pooled, sharp softmax")
    assert_close(weights, ref_w.numpy(), 1e-5, "weights, sharp softmax")


def test_input_kinds_and_layouts() -> None:
    params = random_params(50, 21, seed=7)
    wide = random_bag(700, 80, seed=8)
    h = wide[:, 5:55]  # rows with a stride wider than D
    want = gated_attention_pool_numpy(h, params)
    assert_close(gated_attention_pool(h, params, chunk=100), want, 1e-5, "strided rows")
    assert_close(gated_attention_pool(h.astype(np.float64), params), want, 1e-5, "float64 input")
    assert_close(gated_attention_pool(np.asfortranarray(h), params), want, 1e-5, "Fortran order")
    out = gated_attention_pool(torch.from_numpy(wide)[:, 5:55], params)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert_close(out.numpy(), want, 1e-5, "torch strided input")
    half = h.astype(np.float16)
    assert_close(
        gated_attention_pool(half, params),
        gated_attention_pool_numpy(half.astype(np.float32), params),
        1e-5,
        "float16 input",
    )


def test_bf16_torch_input() -> None:
    params = random_params(257, 65, seed=9, scale=3.0)
    h = torch.from_numpy(random_bag(2000, 257, seed=10)).bfloat16()
    pooled, weights = gated_attention_pool(h, params, return_weights=True)
    exact, exact_w = gated_attention_pool_torch(h.float(), params, True)
    assert_close(pooled.numpy(), exact.numpy(), 1e-5, "bf16 rows, fp32 arithmetic")
    assert_close(weights.numpy(), exact_w.numpy(), 1e-5, "bf16 rows, fp32 weights")
    coarse, coarse_w = gated_attention_pool_torch(h, params, True)
    assert_close(pooled.numpy(), coarse.float().numpy(), 1e-2, "vs bf16 reference")
    assert_close(weights.numpy(), coarse_w.float().numpy(), 1e-2, "weights vs bf16 reference")


def test_torch_engine_is_the_reference() -> None:
    params = random_params(30, 10, seed=11)
    h = random_bag(100, 30, seed=12)
    got = gated_attention_pool(h, params, engine="torch")
    assert isinstance(got, np.ndarray)
    assert_close(got, gated_attention_pool_numpy(h, params), 1e-5, "engine=torch")


@pytest.mark.slow
def test_200k_rows() -> None:
    params = random_params(96, 40, seed=13, scale=3.0)
    h = random_bag(200_003, 96, seed=14)
    pooled, weights = gated_attention_pool(h, params, return_weights=True)
    # In float64: at this N the fp32 reference's own summation error reaches ~1.5e-5, while
    # the kernel accumulates in float64 (3.7e-8 from the float64 result when written).
    ref, ref_w = gated_attention_pool_torch(torch.from_numpy(h).double(), params, True)
    assert_close(pooled, ref.numpy(), 1e-5, "pooled, 200k rows")
    assert_close(weights, ref_w.numpy(), 1e-5, "weights, 200k rows")


def test_errors_name_the_problem(tmp_path) -> None:
    params = random_params(12, 6, seed=15)
    h = random_bag(500, 12, seed=16)
    with pytest.raises(PoolingError, match="empty"):
        gated_attention_pool(h[:0], params)
    with pytest.raises(PoolingError, match="D = 11 columns but the head expects D = 12"):
        gated_attention_pool(h[:, :11], params)
    with pytest.raises(PoolingError, match="2-D"):
        gated_attention_pool(h[0], params)
    for bad in (np.nan, np.inf, -np.inf):
        broken = h.copy()
        broken[321, 4] = bad
        with pytest.raises(PoolingError, match="h row 321 contains NaN or Inf"):
            gated_attention_pool(broken, params, chunk=100)
        with pytest.raises(PoolingError, match="NaN or Inf"):
            gated_attention_pool(broken, params, engine="torch")
    with pytest.raises(PoolingError, match="unknown engine"):
        gated_attention_pool(h, params, engine="tpu")
    with pytest.raises(PoolingError, match="CUDA device"):
        gated_attention_pool(h, params, engine="cuda")
    with pytest.raises(PoolingError, match="GatedAttentionParams"):
        gated_attention_pool(h, {"V": params.V})  # type: ignore[arg-type]


def test_params_validation_and_safetensors(tmp_path) -> None:
    p = random_params(10, 4, seed=17)
    path = p.save(tmp_path / "head.safetensors")
    q = GatedAttentionParams.load(path)
    assert q.fingerprint() == p.fingerprint() and q.b_w == p.b_w and q.source == path
    with pytest.raises(PoolingError, match="U has shape"):
        GatedAttentionParams(p.V, p.bV, p.U[:3], p.bU, p.w)
    with pytest.raises(PoolingError, match="w must have shape"):
        GatedAttentionParams(p.V, p.bV, p.U, p.bU, p.w[:2])
    nan_v = p.V.copy()
    nan_v[1, 2] = np.nan
    with pytest.raises(PoolingError, match="V contains NaN"):
        GatedAttentionParams(nan_v, p.bV, p.U, p.bU, p.w)
    from safetensors.numpy import save_file

    tensors = p.to_dict()
    del tensors["U"]
    save_file(tensors, str(tmp_path / "missing.safetensors"))
    with pytest.raises(PoolingError, match=r"missing.safetensors: missing tensors \['U'\]"):
        GatedAttentionParams.load(tmp_path / "missing.safetensors")
    save_file({**p.to_dict(), "extra": np.ones(2, np.float32)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(PoolingError, match="unknown tensors"):
        GatedAttentionParams.load(tmp_path / "x.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(PoolingError, match="junk.safetensors: not a readable safetensors"):
        GatedAttentionParams.load(tmp_path / "junk.safetensors")
    with pytest.raises(PoolingError, match="not found"):
        GatedAttentionParams.load(tmp_path / "absent.safetensors")
    bad_shape = p.to_dict()
    bad_shape["bV"] = np.ones(5, np.float32)
    save_file(bad_shape, str(tmp_path / "shape.safetensors"))
    with pytest.raises(PoolingError, match=r"shape.safetensors: bV must have shape \(4,\)"):
        GatedAttentionParams.load(tmp_path / "shape.safetensors")


def test_native_binding_checks() -> None:
    p = random_params(8, 3, seed=18)
    z = np.zeros((4, 6), np.float32)
    h = random_bag(4, 8, seed=19)
    state = np.zeros(10)
    with pytest.raises(ValueError, match="z must have 2H = 6 columns"):
        core.pool_chunk(z[:, :5], h, p.bV, p.bU, p.w, 0.0, state)
    with pytest.raises(ValueError, match="h must be float32"):
        core.pool_chunk(z, h.astype(np.float64), p.bV, p.bU, p.w, 0.0, state)
    with pytest.raises(ValueError, match="state must have D \\+ 2"):
        core.pool_chunk(z, h, p.bV, p.bU, p.w, 0.0, np.zeros(9))
    with pytest.raises(ValueError, match="contiguous along its last axis"):
        core.pool_chunk(z, h[:, ::2], p.bV, p.bU, p.w, 0.0, np.zeros(6))
