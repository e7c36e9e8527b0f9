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
# and above the 256-thread column split, H not a multiple of the 64-unit slabs, H above 256
# and a multiple of 8 (the 16-byte gate loads loop twice)
SHAPES = [
    (1, 64, 32),
    (2, 8, 1),
    (129, 1024, 256),
    (1000, 100, 37),
    (777, 13, 70),
    (5000, 1537, 300),
    (3333, 2048, 64),
    (2500, 136, 264),
    (100_000, 1024, 256),
]


PATHS = [
    ("cublas", "one-pass"),
    ("tensor-cores", "one-pass"),
    ("cublas", "three-kernel"),
    ("tensor-cores", "three-kernel"),
    ("triton", "one-pass"),  # one fused Triton kernel; the epilogue setting does not apply
]
#: paths whose projection stays in fp32 (no 16-bit Z) and does not depend on the other rows
EXACT_PROJECTIONS = ("tensor-cores", "triton")


@pytest.fixture(params=PATHS, ids=["/".join(p) for p in PATHS])
def projection(request, monkeypatch) -> str:
    """Runs a test on each GPU path: who computes h @ [V; U]^T, and which epilogue follows."""
    import hsafast.pooling.cuda as cuda_mod

    proj, epilogue = request.param
    monkeypatch.setattr(cuda_mod, "DEFAULT_PROJECTION", proj)
    monkeypatch.setattr(cuda_mod, "DEFAULT_EPILOGUE", epilogue)
    return str(proj)


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
    tol = 2e-3 if projection in EXACT_PROJECTIONS else 1e-2
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


def test_cuda_streaming_equals_one_pass(projection: str) -> None:
    params = random_params(256, 128, seed=3, scale=4.0)
    h = _cuda_bag(10_007, 256)
    one = gated_attention_pool(h, params, return_weights=True, engine="cuda")
    rng = np.random.default_rng(4)
    cuts = [0, *np.sort(rng.choice(np.arange(1, 10_007), 9, replace=False)).tolist(), 10_007]
    state = PoolState(params, keep_logits=True, engine="cuda")
    for i in rng.permutation(len(cuts) - 1):
        state.update(h[cuts[i] : cuts[i + 1]], start=cuts[i])
    pooled, weights = state.result(return_weights=True)
    # the tensor-core projection of a row does not depend on the other rows; cuBLAS may pick
    # another algorithm for another chunk height, changing Z in its last bf16 bit
    tol = 1e-5 if projection in EXACT_PROJECTIONS else 5e-3
    assert_close(pooled, one[0].cpu().numpy(), tol, "streamed on cuda vs one pass")
    assert_close(weights, one[1].cpu().numpy(), tol, "streamed weights vs one pass")


def test_cuda_epilogues_agree_on_a_given_projection() -> None:
    """Both epilogues on the same Z (and the tensor-core slabs): only summation order differs."""
    import torch

    from hsafast.pooling.cuda import pool_state_cuda

    params = random_params(520, 96, seed=6, scale=4.0)
    h = _cuda_bag(54_321, 520)
    z = h @ torch.from_numpy(params.stacked()).to("cuda", torch.bfloat16).T
    for proj, given in (("cublas", z), ("tensor-cores", None)):
        states = {}
        for epilogue in ("one-pass", "three-kernel"):
            st, lg = pool_state_cuda(h, params, True, projection=proj, epilogue=epilogue, z=given)
            states[epilogue] = (st.cpu().numpy(), lg.cpu().numpy())
        (a, la), (b, lb) = states["one-pass"], states["three-kernel"]
        assert_close(la, lb, 1e-5, f"{proj}: logits of the two epilogues")
        assert abs(a[0] - b[0]) <= 1e-5 * max(1.0, abs(b[0])), f"{proj}: max {a[0]} vs {b[0]}"
        assert_close(a[1:], b[1:], 1e-5, f"{proj}: s and acc of the two epilogues")


def test_cuda_merge_of_more_than_1024_blocks() -> None:
    """Over a million rows: the one-pass merge walks its block states in several chunks."""
    params = random_params(48, 16, seed=7, scale=4.0)
    h = _cuda_bag(1_100_000, 48)
    ref = gated_attention_pool_torch(h.float(), _rounded(params, "bfloat16"))
    got = gated_attention_pool(h, params, engine="cuda")
    assert_close(got.cpu().numpy(), ref.cpu().numpy(), 1e-2, "pooled at N = 1.1M")


def test_cuda_auto_engine_takes_the_default_path(monkeypatch) -> None:
    import hsafast.pooling.cuda as cuda_mod

    params = random_params(64, 32, seed=8)
    h = _cuda_bag(3000, 64)
    auto = gated_attention_pool(h, params)
    assert auto.device.type == "cuda"
    assert_close(
        auto.cpu().numpy(),
        gated_attention_pool(h, params, engine="cuda").cpu().numpy(),
        1e-6,
        "auto vs cuda",
    )
    assert cuda_mod.choose_projection(3000, 32) == cuda_mod.DEFAULT_PROJECTION
    monkeypatch.setattr(cuda_mod, "DEFAULT_PROJECTION", "cublas")
    monkeypatch.setattr(cuda_mod, "MAX_PROJECTION_BYTES", 1000)
    assert cuda_mod.choose_projection(3000, 32) == "tensor-cores"
    ref = gated_attention_pool_torch(h.float(), _rounded(params, "bfloat16"))
    assert_close(
        gated_attention_pool(h, params).cpu().numpy(),
        ref.cpu().numpy(),
        2e-3,
        "auto with a small projection budget",
    )


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


@pytest.mark.parametrize(("n", "dim", "hidden"), [(20_011, 1000, 260), (7000, 1024, 256)])
def test_triton_candidate_tiles_match_reference(n: int, dim: int, hidden: int) -> None:
    """Every tile shape the benchmark may pick as the default, ragged and even D."""
    pytest.importorskip("triton")
    from hsafast.pooling import triton_fused as tf
    from hsafast.pooling.cuda import device_params

    params = random_params(dim, hidden, seed=9, scale=4.0)
    h = _cuda_bag(n, dim)
    ref, ref_w = gated_attention_pool_torch(
        h.float(), _rounded(params, "bfloat16"), return_weights=True
    )
    p = device_params(params, h.device, h.dtype)
    for tiles in tf.CANDIDATE_TILES:
        out = tf.launch(
            h,
            p["weights"],
            p["bV"],
            p["bU"],
            p["w"],
            params.b_w,
            want_logits=False,
            want_weights=True,
            tiles=tiles,
        )
        assert int(out["status"].item()) == 0, tiles
        assert_close(out["pooled"].cpu().numpy(), ref.cpu().numpy(), 2e-3, f"pooled, {tiles}")
        assert_close(out["logits"].cpu().numpy(), ref_w.cpu().numpy(), 2e-3, f"weights, {tiles}")


def test_triton_path_runs_without_a_cuda_build(monkeypatch) -> None:
    """A CPU-only build of hsafast still pools CUDA tensors on the GPU when Triton is there."""
    pytest.importorskip("triton")
    import hsafast.pooling.cuda as cuda_mod
    import hsafast.pooling.engines as engines_mod

    monkeypatch.setattr(cuda_mod, "cuda_built", lambda: False)
    monkeypatch.setattr(engines_mod, "cuda_built", lambda: False)
    params = random_params(200, 48, seed=10, scale=2.0)
    h = _cuda_bag(5000, 200)
    assert cuda_mod.choose_projection(5000, 48) == "triton"
    got = gated_attention_pool(h, params)
    assert got.device.type == "cuda"
    ref = gated_attention_pool_torch(h.float(), _rounded(params, "bfloat16"))
    assert_close(got.cpu().numpy(), ref.cpu().numpy(), 2e-3, "triton without a CUDA build")
    with pytest.raises(PoolingError, match="needs hsafast built with CUDA"):
        cuda_mod.pool_state_cuda(h, params, projection="cublas")
