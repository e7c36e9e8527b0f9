"""Streaming: tiles pushed in any order and batch size give the whole-slide result."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pooling_helpers import assert_close
from scoring_helpers import random_bundle

from hsafast.errors import InvalidParameterError
from hsafast.scoring import Scorer, SlideInfo


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "b"
    random_bundle(path)
    return Scorer(path, engine="torch", device="cpu")


@pytest.fixture(scope="module")
def slide_tiles(cmu_svs, scorer):
    """The scorer's own grid of the real slide, read in one go, and its whole-slide result."""
    from hsafast.reading import read_tiles
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    with open_slide(cmu_svs) as slide:
        grid = tile_grid(slide, detect_tissue(slide), mpp=1.0, size=64)
        tiles = next(iter(read_tiles(slide, grid, batch_size=len(grid)))).tiles
    return tiles, grid.coords.copy(), grid.patch_size_level0, scorer.score(cmu_svs)


def test_stream_in_shuffled_order_and_odd_batches_equals_scoring_at_once(scorer, slide_tiles):
    tiles, coords, side, whole = slide_tiles
    order = np.random.default_rng(3).permutation(len(coords))
    stream = scorer.stream(SlideInfo("cmu", patch_size_level0=side))
    cuts = [0, 1, 8, 45, 46, 120, len(order)]
    for a, b in itertools.pairwise(cuts):
        stream.push(tiles[order[a:b]], coords[order[a:b]])
    streamed = stream.result()
    np.testing.assert_array_equal(streamed.coords, whole.coords)
    assert streamed.patch_size_level0 == whole.patch_size_level0
    for name, m in whole.markers.items():
        s = streamed.markers[name]
        assert_close(s.probabilities, m.probabilities, 1e-6, f"{name} probabilities")
        assert_close(s.attention, m.attention, 1e-5, f"{name} attention")
        assert_close(s.positivity, m.positivity, 1e-5, f"{name} positivity")
        assert_close(s.embedding, m.embedding, 1e-5, f"{name} embedding")
    with pytest.raises(InvalidParameterError, match="result was taken"):
        stream.push(tiles[:1], coords[:1])


def test_partial_results_grow_with_the_tiles(scorer, slide_tiles):
    tiles, coords, _, _ = slide_tiles
    stream = scorer.stream("scan-1")
    stream.push(tiles[:10], coords[:10])
    first = stream.partial()
    assert first.n_tiles == 10
    stream.push(tiles[10:30], coords[10:30])
    assert stream.partial().n_tiles == 30 and stream.count == 30
    probs = first.markers["ki67"].probabilities
    assert probs.shape == (2,) and abs(probs.sum() - 1) < 1e-9


def test_stream_rejects_bad_tiles(scorer, slide_tiles):
    tiles, coords, _, _ = slide_tiles
    stream = scorer.stream("scan-2")
    with pytest.raises(InvalidParameterError, match="uint8 N x 64 x 64 x 3"):
        stream.push(tiles[:2, :32], coords[:2])
    with pytest.raises(InvalidParameterError, match="uint8"):
        stream.push(tiles[:2].astype(np.float32), coords[:2])
    with pytest.raises(InvalidParameterError, match="3 tiles but 2 coordinates"):
        stream.push(tiles[:3], coords[:2])
    stream.push(tiles[:4], coords[:4])
    stream.push(tiles[3:5], coords[3:5])
    x, y = coords[3]
    with pytest.raises(InvalidParameterError, match=f"level-0 \\({x}, {y}\\) was given more"):
        stream.result()
    with pytest.raises(InvalidParameterError, match="no tiles"):
        scorer.stream("empty").result()
