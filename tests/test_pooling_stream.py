"""PoolState: streaming in any chunk order and merging in any shard split equal one pass."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pooling_helpers import assert_close, random_bag, random_params

from hsafast.errors import PoolingError
from hsafast.pooling import PoolState, gated_attention_pool

N, D, H = 3001, 75, 37


@pytest.fixture(scope="module")
def bag():
    params = random_params(D, H, seed=21, scale=5.0)
    h = random_bag(N, D, seed=22)
    pooled, weights = gated_attention_pool(h, params, return_weights=True)
    return params, h, pooled, weights


def random_cuts(rng: np.random.Generator, n: int, pieces: int) -> list[tuple[int, int]]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=pieces - 1, replace=False))
    bounds = [0, *cuts.tolist(), n]
    return list(itertools.pairwise(bounds))


@pytest.mark.parametrize("seed", range(6))
def test_any_chunk_order_equals_one_pass(bag, seed: int) -> None:
    params, h, pooled, weights = bag
    rng = np.random.default_rng(seed)
    pieces = random_cuts(rng, N, int(rng.integers(2, 40)))
    state = PoolState(params, keep_logits=True, chunk=int(rng.integers(1, 500)))
    for i in rng.permutation(len(pieces)):
        start, stop = pieces[i]
        state.update(h[start:stop], start=start)
    assert state.count == N
    got, got_w = state.result(return_weights=True)
    assert_close(got, pooled, 1e-6, "streamed vs one pass")
    assert_close(got_w, weights, 1e-6, "streamed weights vs one pass")


@pytest.mark.parametrize("seed", range(6))
def test_any_shard_split_merges_to_one_pass(bag, seed: int) -> None:
    params, h, pooled, weights = bag
    rng = np.random.default_rng(100 + seed)
    shards = []
    for start, stop in random_cuts(rng, N, int(rng.integers(2, 12))):
        shard = PoolState(params, keep_logits=True)
        for a, b in random_cuts(rng, stop - start, 2) if stop - start > 1 else [(0, 1)]:
            shard.update(h[start + a : start + b], start=start + a)
        shards.append(shard)
    order = rng.permutation(len(shards))
    total = PoolState(params, keep_logits=True)
    for i in order:
        total.merge(shards[i])
    got, got_w = total.result(return_weights=True)
    assert_close(got, pooled, 1e-6, "merged shards vs one pass")
    assert_close(got_w, weights, 1e-6, "merged weights vs one pass")


@pytest.mark.parametrize("engine", ["cpu", "torch"])
def test_engines_stream_alike(bag, engine: str) -> None:
    params, h, pooled, weights = bag
    state = PoolState(params, keep_logits=True, engine=engine)
    for start, stop in ((2000, N), (0, 1000), (1000, 2000)):
        state.update(h[start:stop], start=start)
    got, got_w = state.result(return_weights=True)
    assert_close(got, pooled, 1e-5, f"streamed with engine={engine}")
    assert_close(got_w, weights, 1e-5, f"weights with engine={engine}")


def test_default_starts_follow_the_stream(bag) -> None:
    params, h, pooled, weights = bag
    state = PoolState(params, keep_logits=True)
    for start in range(0, N, 250):
        state.update(torch.from_numpy(h[start : start + 250]))
    got, got_w = state.result(return_weights=True)
    assert_close(got, pooled, 1e-6, "in-order stream")
    assert_close(got_w, weights, 1e-6, "in-order weights")


def test_states_travel_through_safetensors(bag, tmp_path) -> None:
    params, h, pooled, weights = bag
    paths = []
    for k, (start, stop) in enumerate([(0, 1000), (1000, 1001), (1001, N)]):
        shard = PoolState(params, keep_logits=True).update(h[start:stop], start=start)
        paths.append(shard.save(tmp_path / f"shard{k}.safetensors"))
    total = PoolState(params, keep_logits=True)
    for path in reversed(paths):
        total.merge(PoolState.load(path, params))
    got, got_w = total.result(return_weights=True)
    assert_close(got, pooled, 1e-6, "merged from files")
    assert_close(got_w, weights, 1e-6, "weights merged from files")
    other = random_params(D, H, seed=99)
    with pytest.raises(PoolingError, match="shard0.safetensors: pool state was computed with"):
        PoolState.load(paths[0], other)
    with pytest.raises(PoolingError, match="different parameters"):
        PoolState(other).merge(total)
    params.save(tmp_path / "head.safetensors")
    with pytest.raises(PoolingError, match="not a pool state"):
        PoolState.load(tmp_path / "head.safetensors", params)


def test_empty_and_bad_updates(bag) -> None:
    params, h, pooled, _ = bag
    state = PoolState(params)
    with pytest.raises(PoolingError, match="empty"):
        state.result()
    state.update(h[:0])
    state.merge(PoolState(params))
    assert state.count == 0
    state.update(h[:500])
    before = state.state.copy()
    broken = h[500:900].copy()
    broken[17, 3] = np.nan
    with pytest.raises(PoolingError, match="h row 517 contains NaN or Inf"):
        state.update(broken, start=500)
    np.testing.assert_array_equal(state.state, before)  # a failed update absorbs nothing
    state.update(h[500:])
    assert_close(state.result(), pooled, 1e-6, "after a rejected chunk")
    with pytest.raises(PoolingError, match="keep_logits=False"):
        state.weights()
    with pytest.raises(PoolingError, match="head expects D"):
        state.update(h[:, :-1])
    overlapping = PoolState(params, keep_logits=True)
    overlapping.update(h[:10], start=0).update(h[10:20], start=5)
    with pytest.raises(PoolingError, match="overlap"):
        overlapping.weights()


def test_state_fields_are_the_online_softmax(bag) -> None:
    params, h, pooled, _ = bag
    state = PoolState(params, keep_logits=True).update(h)
    logits = state.logits().astype(np.float64)
    assert state.m == pytest.approx(logits.max(), rel=1e-7)
    assert state.s == pytest.approx(np.exp(logits - logits.max()).sum(), rel=1e-6)
    assert_close(state.acc / state.s, pooled, 1e-6, "acc / s")
