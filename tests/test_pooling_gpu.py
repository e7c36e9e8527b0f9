"""The fused CUDA pooling kernel against the PyTorch reference (runs where a CUDA GPU is)."""

from __future__ import annotations

import numpy as np
import pytest
from pooling_helpers import assert_close, random_bag, random_params

from hsafast.errors import PoolingError
from hsafast.pooling import GatedAttentionParams, PoolState, gated_attention_pool
from hsafast.pooling.engines import cuda_built
from hsafast.pooling.reference import gated_attention_pool_torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_built(), reason="hsafast was built without CUDA"),
]

# (N, D, H): N=1, N not a multiple of the 128-row tiles, odd D (scalar load path), D below
# and above the 256-thread column split, H not a multiple of the 64-unit slabs
SHAPES = [
    (1, 64, 32),
    (2, 8, 1),
    (129, 1024, 256),
    (1000, 100, 37),
    (777, 13, 70),
    (5000, 1537, 300),
    (3333, 2048, 64),
    (100_000, 1024, 256),
]


@pytest.fixture(params=["tensor-cores", "cublas"])
def projection(request, monkeypatch) -> str:
    """Runs a test with each way of computing h @ [V; U]^T on the GPU."""
    import hsafast.pooling.cuda as cuda_mod

    monkeypatch.setattr(cuda_mod, "DEFAULT_PROJECTION", request.param)
    return str(request.param)


def _cuda_bag(n: int, dim: int, dtype_name: str = "bfloat16"):
    import torch

    h = torch.from_numpy(random_bag(n, dim, seed=n + dim)).to("cuda", getattr(torch, dtype_name))
    return h


def _rounded(params: GatedAttentionParams, dtype_name: str) -> GatedAttentionParams:
    """The head with V and U rounded to the kernel's 16-bit type (the rest stays fp32)."""
    import torch

    dt = getattr(torch, dtype_name)

    def r(a: np.ndarray) -> np.ndarray:
        return torch.from_numpy(a).to(dt).float().numpy()

    return GatedAttentionParams(
        r(params.V), params.bV, r(params.U), params.bU, params.w, params.b_w
    )


@pytest.mark.parametrize(("n", "dim", "hidden"), SHAPES)
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_cuda_matches_torch_reference(
    n: int, dim: int, hidden: int, dtype_name: str, projection: str
) -> None:
    import torch

    h = _cuda_bag(n, dim, dtype_name)
    # 1. against the eager reference run in the same 16-bit type (a Linear-style head)
    params = random_params(dim, hidden, seed=hidden)
    pooled, weights = gated_attention_pool(h, params, return_weights=True, engine="cuda")
    assert pooled.device.type == "cuda" and pooled.dtype == torch.float32
    assert pooled.shape == (dim,) and weights.shape == (n,)
    ref, ref_w = gated_attention_pool_torch(h, params, return_weights=True)
    assert_close(pooled.cpu().numpy(), ref.float().cpu().numpy(), 1e-2, f"pooled vs {dtype_name}")
    assert_close(weights.cpu().numpy(), ref_w.float().cpu().numpy(), 1e-2, "weights")
    assert abs(float(weights.double().sum()) - 1.0) < 1e-4
    # 2. a sharp head, against fp32 arithmetic on exactly the kernel's 16-bit operands: what
    #    is left is accumulation order and the fast tanh/exp, so the bound is much tighter;
    #    the cuBLAS mode also rounds Z to 16 bits (about 0.5% on the largest weight at N=100k)
    tol = 2e-3 if projection == "tensor-cores" else 1e-2
    sharp = random_params(dim, hidden, seed=hidden + 1, scale=4.0)
    pooled, weights = gated_attention_pool(h, sharp, return_weights=True, engine="cuda")
    exact, exact_w = gated_attention_pool_torch(
        h.float(), _rounded(sharp, dtype_name), return_weights=True
    )
    assert_close(pooled.cpu().numpy(), exact.cpu().numpy(), tol, "pooled vs fp32 arithmetic")
    assert_close(weights.cpu().numpy(), exact_w.cpu().numpy(), tol, "weights vs fp32")


def test_cuda_agrees_with_cpu_kernel() -> None:
    params = random_params(384, 96, seed=1, scale=2.0)
    h = _cuda_bag(4099, 384)
    gpu = gated_attention_pool(h, params, engine="cuda").cpu().numpy()
    cpu = gated_attention_pool(h.float().cpu().numpy(), params, engine="cpu")
    assert_close(gpu, cpu, 1e-2, "cuda vs cpu kernel")


def test_cuda_strided_rows_and_fp32_input(projection: str) -> None:
    import torch

    params = random_params(96, 40, seed=2)
    wide = _cuda_bag(1500, 120)
    h = wide[:, 3:99]  # row stride 120, misaligned start: the scalar load path
    ref = gated_attention_pool_torch(h.float(), _rounded(params, "bfloat16"))
    assert_close(gated_attention_pool(h, params).cpu().numpy(), ref.cpu().numpy(), 1e-2, "strided")
    got = gated_attention_pool(h.float().contiguous(), params, engine="cuda")
    assert got.dtype == torch.float32
    assert_close(got.cpu().numpy(), ref.cpu().numpy(), 1e-2, "fp32 input rounded to bf16")


def test_cuda_streaming_equals_one_pass() -> None:
    params = random_params(256, 128, seed=3, scale=4.0)
    h = _cuda_bag(10_007, 256)
    one = gated_attention_pool(h, params, return_weights=True, engine="cuda")
    rng = np.random.default_rng(4)
    cuts = [0, *np.sort(rng.choice(np.arange(1, 10_007), 9, replace=False)).tolist(), 10_007]
    state = PoolState(params, keep_logits=True, engine="cuda")
    for i in rng.permutation(len(cuts) - 1):
        state.update(h[cuts[i] : cuts[i + 1]], start=cuts[i])
    pooled, weights = state.result(return_weights=True)
    assert_close(pooled, one[0].cpu().numpy(), 1e-5, "streamed on cuda vs one pass")
    assert_close(weights, one[1].cpu().numpy(), 1e-5, "streamed weights vs one pass")


def test_cuda_rejects_nan_and_inf(projection: str) -> None:
    params = random_params(64, 32, seed=5)
    for bad in (float("nan"), float("inf")):
        h = _cuda_bag(1000, 64)
        h[417, 5] = bad
        with pytest.raises(PoolingError, match="NaN or Inf"):
            gated_attention_pool(h, params, engine="cuda")
        state = PoolState(params, engine="cuda")
        with pytest.raises(PoolingError, match="NaN or Inf"):
            state.update(h)
        assert state.count == 0
