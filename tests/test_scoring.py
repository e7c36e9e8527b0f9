"""Scoring a real slide end to end against the bundle's own PyTorch forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pooling_helpers import assert_close
from scoring_helpers import random_bundle

from hsafast.errors import BundleError, EngineError, FeatureFileError
from hsafast.scoring import Scorer, SlideResult


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "patch"
    random_bundle(path)
    return path


@pytest.fixture(scope="module")
def scorer(bundle_dir):
    return Scorer(bundle_dir, engine="torch", device="cpu")


def reference(bundle, slide_path, coords):
    """The bundle's own SlideModel forward pass on the same tiles, read in one go by
    read_tiles (which decodes at reduced scale in the DCT domain, as the scorer does)."""
    from hsafast.bundle import ModelBundle
    from hsafast.reading import read_tiles
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    b = ModelBundle.load(bundle)
    enc = b.tile_encoder()
    with open_slide(slide_path) as slide:
        grid = tile_grid(
            slide,
            detect_tissue(slide),
            mpp=b.preprocessing.target_mpp,
            size=b.preprocessing.tile_size,
        )
        np.testing.assert_array_equal(grid.coords, coords)
        tiles = next(iter(read_tiles(slide, grid, batch_size=len(grid)))).tiles
    feats = enc.embed(tiles)
    out = {}
    with torch.inference_mode():
        for name, model in b.models.items():
            o = model(feats)
            out[name] = (
                torch.softmax(o.logits[0].double(), 0).numpy(),
                o.attention[0].numpy(),
                None if o.positivity is None else torch.sigmoid(o.positivity[0, :, 0]).numpy(),
                feats,
            )
    return out


def test_score_matches_the_bundles_torch_forward(scorer, bundle_dir, cmu_svs):
    result = scorer.score(cmu_svs)
    assert result.status == "ok" and result.n_tiles > 100
    # grid order: row-major, y then x
    keys = result.coords[:, 1] * 10**9 + result.coords[:, 0]
    assert (np.diff(keys) > 0).all()
    ref = reference(bundle_dir, cmu_svs, result.coords)
    for name, (probs, attention, positivity, _) in ref.items():
        m = result.markers[name]
        assert_close(m.probabilities, probs, 1e-5, f"{name} probabilities")
        assert_close(m.attention, attention, 1e-4, f"{name} attention")
        assert_close(m.positivity, positivity, 1e-4, f"{name} positivity")
        assert abs(float(m.attention.sum()) - 1.0) < 1e-4
        assert m.predicted in m.classes
    assert "encode" in result.timings and result.timings["encode"]["tiles"] == result.n_tiles


def test_onnxruntime_engine_gives_the_same_result(scorer, bundle_dir, cmu_svs):
    ort_result = Scorer(bundle_dir, engine="onnxruntime", device="cpu").score(cmu_svs)
    torch_result = scorer.score(cmu_svs)
    np.testing.assert_array_equal(ort_result.coords, torch_result.coords)
    for name, m in torch_result.markers.items():
        o = ort_result.markers[name]
        assert_close(o.probabilities, m.probabilities, 1e-3, f"{name} probabilities")
        assert_close(o.attention, m.attention, 1e-3, f"{name} attention")
        assert_close(o.positivity, m.positivity, 1e-3, f"{name} positivity")
    assert "onnxruntime" in ort_result.engine


def test_feature_files_score_like_the_tiles_they_came_from(scorer, bundle_dir, cmu_svs, tmp_path):
    from hsafast.features import FeatureFile, write_feature_file

    result = scorer.score(cmu_svs)
    ref = reference(bundle_dir, cmu_svs, result.coords)
    feats = next(iter(ref.values()))[3].numpy()
    enc = scorer.model.encoder
    ff = FeatureFile(
        coords=result.coords,
        patch_size=64,
        patch_size_level0=result.patch_size_level0,
        features=feats,
        target_mpp=1.0,
        encoder=enc.name,
        encoder_hash=enc.weights_hash,
        slide_id="cmu",
    )
    path = write_feature_file(tmp_path / "cmu.h5", ff)
    from_features = scorer.score(path)
    assert from_features.slide_id == "cmu"
    for name, m in result.markers.items():
        f = from_features.markers[name]
        assert_close(f.probabilities, m.probabilities, 1e-5, f"{name} probabilities")
        assert_close(f.attention, m.attention, 1e-4, f"{name} attention")

    other = FeatureFile(
        coords=result.coords,
        patch_size=64,
        patch_size_level0=result.patch_size_level0,
        features=feats,
        encoder="uni",
    )
    with pytest.raises(FeatureFileError, match="encoder 'uni'"):
        scorer.score(other)
    wrong_hash = FeatureFile(
        coords=result.coords,
        patch_size=64,
        patch_size_level0=result.patch_size_level0,
        features=feats,
        encoder=enc.name,
        encoder_hash="0" * 64,
    )
    with pytest.raises(FeatureFileError, match="weights 000000000000"):
        scorer.score(wrong_hash)


@pytest.mark.parametrize("aggregator", ["mean", "transformer"])
def test_other_aggregators_match_the_torch_forward(aggregator, tmp_path, cmu_svs):
    path = tmp_path / aggregator
    random_bundle(path, aggregator=aggregator, patch=False, markers=("pdl1",))
    result = Scorer(path, engine="torch", device="cpu").score(cmu_svs)
    ref = reference(path, cmu_svs, result.coords)
    probs, attention, positivity, _ = ref["pdl1"]
    m = result.markers["pdl1"]
    assert positivity is None and m.positivity is None
    if aggregator == "transformer":
        # the bundle's context is max_tiles = 512 tiles, more than this slide has
        assert result.n_tiles < 512
    assert_close(m.probabilities, probs, 1e-4, "probabilities")
    assert_close(m.attention, attention, 1e-4, "attention")


def test_blank_slide_gives_a_no_tissue_result(scorer, tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(242, 3, size=(600, 800, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), glass)
    from hsafast.scoring import ScoringOptions

    blank = Scorer(
        scorer.model, engine="torch", device="cpu", options=ScoringOptions(slide_mpp=0.5)
    )
    result = blank.score(path)
    assert result.status == "no_tissue" and result.n_tiles == 0 and not result.markers
    assert "no tissue" in result.message


def test_nan_from_the_engine_is_an_error_naming_the_tile_and_the_run_goes_on(
    bundle_dir, cmu_svs, monkeypatch
):
    bad = Scorer(bundle_dir, engine="torch", device="cpu")
    real_run = bad.engine.run
    calls = {"n": 0}

    def poisoned(x):
        out = real_run(x)
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch of the first slide
            out["p53.h"] = out["p53.h"].clone()
            out["p53.h"][3, 5] = float("nan")
        return out

    monkeypatch.setattr(bad.engine, "run", poisoned)
    outcomes = list(bad.score_iter([("first", cmu_svs), ("second", cmu_svs)]))
    first, second = outcomes[0][1], outcomes[1][1]
    assert isinstance(first, EngineError)
    assert "NaN or Inf in 'p53.h'" in first.reason and "level-0 (" in first.reason
    assert isinstance(second, SlideResult) and second.status == "ok"


def test_broken_bundles_are_clear_errors(bundle_dir, tmp_path):
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    del config["markers"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="missing keys"):
        Scorer(broken, engine="torch", device="cpu")
    newer = tmp_path / "newer"
    shutil.copytree(bundle_dir, newer)
    config = json.loads((newer / "config.json").read_text())
    config["format_version"] = 99
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="newer than this hsafast reads"):
        Scorer(newer, engine="torch", device="cpu")


def test_result_json_round_trip(scorer, cmu_svs, tmp_path):
    result = scorer.score(cmu_svs)
    loaded = SlideResult.load(result.save(tmp_path / "r.json"))
    np.testing.assert_array_equal(loaded.coords, result.coords)
    for name, m in result.markers.items():
        got = loaded.markers[name]
        np.testing.assert_array_equal(got.attention, m.attention)  # float32 round trip
        np.testing.assert_array_equal(got.positivity, m.positivity)
        np.testing.assert_allclose(got.probabilities, m.probabilities, rtol=1e-12)
        assert got.predicted == m.predicted
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    from hsafast.errors import ConfigError

    with pytest.raises(ConfigError, match="not a slide result"):
        SlideResult.load(tmp_path / "bad.json")


def test_rgb_jpeg_tiles_stay_on_the_cpu_reader(cmu_svs):
    """Aperio's JPEG tiles hold RGB samples, which nvImageCodec decodes with wrong colours."""
    from hsafast.scoring.gpu_decode import gpu_level
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid

    with open_slide(cmu_svs) as slide:
        level, why = gpu_level(slide, tile_grid(slide, None, mpp=slide.mpp, size=256))
    assert level is None and "RGB samples" in why
