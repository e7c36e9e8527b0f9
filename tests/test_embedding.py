"""hsafast embed: the overlapped pipeline gives what encoding each batch in turn gives; the
FeatureFile records the encoder; errors on either side stop it cleanly."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch

from hsafast.cli import main
from hsafast.cohort import path_id
from hsafast.embedding import EmbedConfig, embed_slide, encode_batches, grid_from_features
from hsafast.encoders import create_encoder
from hsafast.errors import InvalidParameterError, SlideError
from hsafast.features import FeatureFile, read_feature_file
from hsafast.reading import TileBatch, read_tiles
from hsafast.slides import open_slide
from hsafast.tiling import tile_grid
from hsafast.tissue import detect_tissue


@pytest.fixture(scope="module")
def cmu_grid(cmu_svs):
    with open_slide(cmu_svs) as slide:
        return tile_grid(slide, detect_tissue(slide), mpp=0.5, size=256, min_tissue=0.25)


def test_pipeline_equals_encoding_batch_by_batch(cmu_svs, cmu_grid):
    encoder = create_encoder("hsafast-cnn-s")
    config = EmbedConfig(batch_size=16, workers=2)
    result = embed_slide(cmu_svs, encoder, cmu_grid, config, stain="he")
    expected = np.concatenate(
        [
            encoder.embed(b.tiles).numpy()
            for b in read_tiles(cmu_svs, cmu_grid, batch_size=16, workers=1)
        ]
    )
    assert len(cmu_grid) > 30
    assert result.features is not None and result.features.shape == (len(cmu_grid), 256)
    worst = np.unravel_index(np.argmax(np.abs(result.features - expected)), expected.shape)
    assert np.abs(result.features - expected).max() < 1e-5, f"worst element {worst}"
    assert (result.encoder, result.encoder_hash) == ("hsafast-cnn-s", encoder.weights_hash)
    assert (result.stain, result.slide_id, result.patch_size, result.target_mpp) == (
        "he",
        "CMU-1-Small-Region",
        256,
        0.5,
    )
    np.testing.assert_array_equal(result.coords, cmu_grid.coords)


def test_coordinates_file_keeps_targets_and_order(tmp_path, cmu_svs, cmu_grid):
    encoder = create_encoder("hsafast-test-tiny")
    order = np.random.default_rng(0).permutation(len(cmu_grid))
    targets = np.random.default_rng(1).random((len(cmu_grid), 2)).astype(np.float32)
    coords_file = FeatureFile.from_grid(cmu_grid, slide_id="cmu")
    coords_file = FeatureFile(
        coords_file.coords[order],
        256,
        coords_file.patch_size_level0,
        target_mpp=0.5,
        slide_id="cmu",
        targets=targets[order],
    )
    coords_file.write(tmp_path / "cmu.h5")
    result = embed_slide(cmu_svs, encoder, read_feature_file(tmp_path / "cmu.h5"))
    in_grid_order = embed_slide(cmu_svs, encoder, cmu_grid)
    assert result.features is not None and in_grid_order.features is not None
    np.testing.assert_allclose(result.features, in_grid_order.features[order], atol=1e-5)
    np.testing.assert_array_equal(result.targets, targets[order])
    assert result.slide_id == "cmu"


def test_grid_from_trident_style_coordinates(cmu_svs, cmu_grid):
    """A file without level or target pixel size reads the same tiles."""
    trident = FeatureFile(cmu_grid.coords, 256, cmu_grid.patch_size_level0, layout="trident")
    with open_slide(cmu_svs) as slide:
        grid = grid_from_features(slide, trident)
    assert (grid.level, grid.read_size, grid.size) == (
        cmu_grid.level,
        cmu_grid.read_size,
        cmu_grid.size,
    )
    assert abs(grid.target_mpp - 0.5) < 0.01


class _Failing:
    """Yields two batches of random tiles, then fails as a corrupt tile would."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self):
        rng = np.random.default_rng(0)
        for start in (0, 4):
            yield TileBatch(
                rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
                np.zeros((4, 2), np.int64),
                start,
            )
        raise SlideError("corrupt tile at (512, 0)", "slide.svs")

    def close(self) -> None:
        self.closed = True


def test_a_reading_error_reaches_the_caller_and_stops_the_feeder():
    before = threading.active_count()
    batches = _Failing()
    with pytest.raises(SlideError, match="corrupt tile"):
        encode_batches(create_encoder("hsafast-test-tiny"), iter(batches), EmbedConfig(prefetch=1))
    assert threading.active_count() == before


def test_an_encoder_error_stops_the_feeder():
    encoder = create_encoder("hsafast-test-tiny")
    calls = {"n": 0}
    original = encoder.forward

    def forward(x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory")
        return original(x)

    encoder.forward = forward  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    batches = (
        TileBatch(
            rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.zeros((4, 2), np.int64), s
        )
        for s in range(0, 400, 4)
    )
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="out of memory"):
        encode_batches(encoder, batches, EmbedConfig(prefetch=1))
    assert threading.active_count() == before


def test_bf16_features_are_close_to_fp32(cmu_svs, cmu_grid):
    encoder = create_encoder("hsafast-cnn-s")
    full = embed_slide(cmu_svs, encoder, cmu_grid).features
    half = embed_slide(cmu_svs, encoder, cmu_grid, EmbedConfig(precision="bf16")).features
    assert full is not None and half is not None
    rel = np.linalg.norm(half - full, axis=1) / np.linalg.norm(full, axis=1)
    assert float(np.median(rel)) < 0.03  # bf16 keeps 8 bits of mantissa: ~0.4% per operation


def test_config_checks_name_the_field():
    with pytest.raises(InvalidParameterError, match="EmbedConfig.precision"):
        EmbedConfig(precision="int8")
    with pytest.raises(
        InvalidParameterError, match="EmbedConfig.precision: fp16 autocast needs a CUDA"
    ):
        EmbedConfig(precision="fp16")
    with pytest.raises(InvalidParameterError, match="EmbedConfig.batch_size"):
        EmbedConfig(batch_size=0)


@pytest.mark.gpu
def test_cuda_embeddings_match_the_cpu(cmu_svs, cmu_grid, monkeypatch):
    # cuDNN convolutions default to TF32 (10-bit mantissa); compare in full float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    encoder = create_encoder("hsafast-cnn-s")
    cpu = embed_slide(cmu_svs, encoder, cmu_grid).features
    gpu = embed_slide(cmu_svs, encoder, cmu_grid, EmbedConfig(device="cuda")).features
    assert cpu is not None and gpu is not None
    worst = np.unravel_index(np.argmax(np.abs(gpu - cpu)), cpu.shape)
    assert np.abs(gpu - cpu).max() <= 1e-4 * np.abs(cpu).max(), f"worst element {worst}"


def test_command_line(tmp_path, cmu_svs, capsys):
    """hsafast embed on the cohort runner: manifest IDs and stains, resume, one encoder per
    folder, a failure recorded, an unknown encoder refused before any slide."""
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(cmu_svs, slides / "he1.svs")
    shutil.copy(cmu_svs, slides / "ihc1.svs")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "case_id,patient_id,he_path,ihc_path,marker,label\n"
        "c1,p1,slides/he1.svs,slides/ihc1.svs,ki67,low\n"
    )
    out = tmp_path / "features"
    args = ["embed", str(manifest), "--out", str(out), "--encoder", "hsafast-test-tiny"]
    assert main([*args, "--batch-size", "16"]) == 0
    he, ihc = read_feature_file(out / "c1.HE.h5"), read_feature_file(out / "c1.ki67.h5")
    assert (he.stain, ihc.stain, he.encoder) == ("HE", "IHC", "hsafast-test-tiny")
    assert (
        he.slide_id == "c1.HE"
        and he.encoder_hash == create_encoder("hsafast-test-tiny").weights_hash
    )
    assert he.features is not None and he.features.shape[1] == 16
    assert "hsafast embed: 2 slides embedded, 0 failed" in capsys.readouterr().out
    from hsafast.trainer.features import features_from_files  # training finds them by ID

    cases = [("c1", slides / "he1.svs", slides / "ihc1.svs", "ki67")]
    found, encoder = features_from_files(out, cases, max_tiles=4096)
    assert found["c1"][0].shape == he.features.shape and encoder["name"] == "hsafast-test-tiny"
    assert main(args) == 0  # another batch size gives the same bytes: nothing to redo
    assert "2 already done" in capsys.readouterr().out
    other = ["embed", str(manifest), "--out", str(out), "--encoder", "hsafast-cnn-s"]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "encoder hsafast-test-tiny -> hsafast-cnn-s" in err and "--overwrite" in err
    assert main(["embed", str(tmp_path / "missing.svs"), "--out", str(out), *args[4:]]) == 1
    assert "missing.svs" in (out / "failures.csv").read_text()
    assert main(["embed", str(slides), "--out", str(out), "--encoder", "nope"]) == 2
    assert "unknown encoder 'nope'" in capsys.readouterr().err


def test_command_line_encodes_the_tiles_of_coordinates_files(tmp_path, cmu_svs, capsys):
    coords, out = tmp_path / "coords", tmp_path / "features"
    tile = ["tile", str(cmu_svs), "--out", str(coords), "--target-mpp", "2", "--tile-size", "64"]
    assert main(tile) == 0
    args = ["embed", str(cmu_svs), "--out", str(out), "--encoder", "hsafast-test-tiny"]
    assert main([*args, "--coords", str(coords)]) == 0
    name = f"{path_id(cmu_svs)}.h5"
    tiles, features = read_feature_file(coords / name), read_feature_file(out / name)
    np.testing.assert_array_equal(features.coords, tiles.coords)
    assert (features.patch_size, features.target_mpp) == (64, pytest.approx(2.0))
    assert main([*args, "--coords", str(tmp_path / "none")]) == 2
    assert "no such coordinates folder" in capsys.readouterr().err
