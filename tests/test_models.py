"""Slide models: the gated-attention head pools as hsafast.pooling's kernels do; padding,
aggregators, heads and the configuration's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pooling_helpers import assert_close, random_bag

from hsafast.errors import ConfigError, InvalidParameterError
from hsafast.models import (
    ClassifierHead,
    GatedAttentionPool,
    MeanPool,
    SlideModel,
    SlideModelConfig,
    TransformerPool,
)
from hsafast.pooling import GatedAttentionParams, PoolState, gated_attention_pool
from hsafast.pooling.reference import gated_attention_pool_numpy


def trained_like_head(dim: int, hidden: int, seed: int) -> GatedAttentionPool:
    """A head with sharper weights than at initialisation, as after training."""
    torch.manual_seed(seed)
    pool = GatedAttentionPool(dim, hidden)
    with torch.no_grad():
        pool.w.mul_(8.0)
    return pool


@pytest.mark.parametrize(("n", "dim", "hidden"), [(1, 8, 4), (257, 64, 32), (3000, 256, 128)])
def test_gated_head_pools_like_the_native_kernel(n, dim, hidden):
    pool = trained_like_head(dim, hidden, seed=n)
    h = random_bag(n, dim, seed=n)
    with torch.no_grad():
        pooled, weights = pool(torch.from_numpy(h))
    params = pool.to_params()
    native, native_weights = gated_attention_pool(h, params, return_weights=True, engine="cpu")
    reference, ref_weights = gated_attention_pool_numpy(h, params, return_weights=True)
    # float32 sums over N rows: the error grows like sqrt(N) * eps relative to max|h|
    assert_close(pooled[0].numpy(), native, 1e-5, "module vs native kernel")
    assert_close(pooled[0].numpy(), reference, 1e-5, "module vs float64 NumPy")
    assert_close(weights[0].numpy(), native_weights, 1e-5, "attention weights")
    assert_close(weights[0].numpy(), ref_weights, 1e-5, "attention weights vs NumPy")
    state = PoolState(params)
    for start in range(0, n, 100):  # streamed in chunks, as the scorer does
        state.update(h[start : start + 100], start=start)
    assert_close(pooled[0].numpy(), state.result(), 1e-5, "module vs PoolState stream")


@pytest.mark.gpu
def test_gated_head_pools_like_the_cuda_kernels():
    pool = trained_like_head(256, 128, seed=7)
    h = random_bag(5000, 256, seed=7)
    with torch.no_grad():
        pooled, _ = pool(torch.from_numpy(h))
    cuda_out = gated_attention_pool(torch.from_numpy(h).cuda(), pool.to_params(), engine="cuda")
    # the GPU kernels project with 16-bit operands on tensor cores: hsafast.pooling's own
    # CUDA-vs-CPU bound, 1e-2 of max|pooled|, applies
    assert_close(cuda_out.cpu().numpy(), pooled[0].numpy(), 1e-2, "module vs CUDA kernel")


def test_params_round_trip_through_safetensors(tmp_path):
    pool = trained_like_head(32, 16, seed=1)
    pool.to_params().save(tmp_path / "head.safetensors")
    loaded = GatedAttentionPool.from_params(
        GatedAttentionParams.load(tmp_path / "head.safetensors")
    )
    for name, tensor in pool.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_slide_model_tensors_use_the_kernel_names():
    model = SlideModel(SlideModelConfig(in_dim=32))
    names = set(model.state_dict())
    assert {f"pool.{n}" for n in ("V", "bV", "U", "bU", "w", "b_w")} <= names
    assert {"head.0.weight", "head.3.weight", "proj.0.weight"} <= names


def test_slide_model_pools_its_projection_with_the_native_kernel():
    model = SlideModel(SlideModelConfig(in_dim=48, embed_dim=64, attention_hidden=32)).eval()
    features = torch.from_numpy(random_bag(400, 48, seed=2))
    with torch.no_grad():
        out = model(features)
    native = gated_attention_pool(out.tiles[0].numpy(), model.pool_params(), engine="cpu")
    assert_close(out.embedding[0].numpy(), native, 1e-5, "slide embedding")


@pytest.mark.parametrize("aggregator", ["gated", "mean", "transformer"])
def test_padding_does_not_change_a_bag(aggregator):
    config = SlideModelConfig(in_dim=16, embed_dim=32, aggregator=aggregator, positivity_outputs=2)
    model = SlideModel(config).eval()
    rng = np.random.default_rng(0)
    bags = [torch.from_numpy(random_bag(n, 16, seed=n)) for n in (30, 7, 19)]
    padded = torch.zeros(3, 30, 16)
    mask = torch.zeros(3, 30, dtype=torch.bool)
    for i, bag in enumerate(bags):
        padded[i, : len(bag)] = bag
        padded[i, len(bag) :] = torch.from_numpy(rng.normal(size=(30 - len(bag), 16)))
        mask[i, : len(bag)] = True
    with torch.no_grad():
        batch = model(padded, mask)
        for i, bag in enumerate(bags):
            single = model(bag)
            assert_close(batch.embedding[i].numpy(), single.embedding[0].numpy(), 1e-5, f"bag {i}")
            assert_close(batch.logits[i].numpy(), single.logits[0].numpy(), 1e-5, f"logits {i}")
            assert float(batch.attention[i, len(bag) :].abs().sum()) == 0.0
            assert abs(float(batch.attention[i].sum()) - 1.0) < 1e-5
    assert batch.positivity is not None and batch.positivity.shape == (3, 30, 2)


def test_mean_pool_is_the_mean():
    h = torch.from_numpy(random_bag(50, 8, seed=3))
    pooled, weights = MeanPool()(h)
    assert torch.allclose(pooled[0], h.mean(dim=0), atol=1e-6)
    assert torch.allclose(weights, torch.full((1, 50), 0.02))


def test_transformer_pool_uses_context():
    torch.manual_seed(0)
    pool = TransformerPool(32, 16, layers=1, heads=4, dropout=0.0).eval()
    h = torch.from_numpy(random_bag(20, 32, seed=4))
    other = h.clone()
    other[5:] = torch.from_numpy(random_bag(15, 32, seed=5))
    with torch.no_grad():
        # tile 0 is the same in both bags; its contextualised embedding is not
        assert not torch.allclose(pool.blocks(h[None])[0, 0], pool.blocks(other[None])[0, 0])


def test_classifier_head_is_the_authors_layout():
    head = ClassifierHead(768, 2)
    layers = [type(m).__name__ for m in head]
    assert layers == ["Linear", "ReLU", "Dropout", "Linear"]
    assert head[0].out_features == 256 and head[2].p == 0.5


def test_ihc_branches():
    features = torch.from_numpy(random_bag(12, 16, seed=6))
    shared = SlideModel(SlideModelConfig(in_dim=16, ihc="shared")).eval()
    separate = SlideModel(SlideModelConfig(in_dim=16, ihc="separate", align_dim=8)).eval()
    with torch.no_grad():
        assert torch.equal(shared.encode_ihc(features)[0], shared(features).embedding)
        assert not torch.allclose(separate.encode_ihc(features)[0], separate(features).embedding)
        assert separate.align_ihc(separate.encode_ihc(features)[2]).shape == (1, 12, 8)
    assert any(k.startswith("ihc.") for k in separate.state_dict())
    with pytest.raises(InvalidParameterError, match="without an IHC branch"):
        SlideModel(SlideModelConfig(in_dim=16, ihc="none")).encode_ihc(features)


def test_config_checks_name_the_field():
    with pytest.raises(InvalidParameterError, match="SlideModelConfig.aggregator"):
        SlideModelConfig(in_dim=8, aggregator="max")
    with pytest.raises(InvalidParameterError, match="SlideModelConfig.classes"):
        SlideModelConfig(in_dim=8, classes=("only",))
    with pytest.raises(InvalidParameterError, match="SlideModelConfig.head_dropout"):
        SlideModelConfig(in_dim=8, head_dropout=1.5)
    with pytest.raises(ConfigError, match="unknown key 'embed_size'"):
        SlideModelConfig.from_dict({"in_dim": 8, "embed_size": 4})
    config = SlideModelConfig(in_dim=8, classes=("a", "b", "c"), aggregator="mean")
    assert SlideModelConfig.from_dict(config.to_dict()) == config


def test_pool_params_needs_the_gated_aggregator():
    with pytest.raises(InvalidParameterError, match="'mean' aggregator"):
        SlideModel(SlideModelConfig(in_dim=8, aggregator="mean")).pool_params()
