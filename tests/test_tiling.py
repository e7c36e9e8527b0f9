"""Tile grids: level choice, coordinates, and native tissue fractions vs a NumPy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hsafast
from hsafast._native import core
from hsafast.errors import InvalidParameterError, MissingPixelSizeError
from hsafast.tiling import choose_level, tile_fractions

RNG = np.random.default_rng(7)


def ref_box_fractions(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Exact overlap of real-valued boxes with unit pixels, by separable weights."""
    h, w = mask.shape
    out = np.empty(len(boxes))
    xs, ys = np.arange(w), np.arange(h)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        wx = np.clip(np.minimum(xs + 1, x1) - np.maximum(xs, x0), 0, None)
        wy = np.clip(np.minimum(ys + 1, y1) - np.maximum(ys, y0), 0, None)
        area = (x1 - x0) * (y1 - y0)
        out[i] = (wy @ mask.astype(np.float64) @ wx) / area if area > 0 else 0.0
    return out


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, atol: float = 1e-9) -> None:
    diff = np.abs(np.asarray(actual) - np.asarray(expected))
    if diff.size and diff.max() > atol:
        i = int(np.argmax(diff))
        pytest.fail(f"{what}: worst element {i}: native {actual[i]} vs reference {expected[i]}")


def test_integral_image_matches_cumsum() -> None:
    for shape, p in [((37, 53), 0.5), ((1, 9), 0.3), ((64, 1), 0.7)]:
        mask = (RNG.random(shape) < p).astype(np.uint8)
        ref = np.zeros((shape[0] + 1, shape[1] + 1), dtype=np.int64)
        ref[1:, 1:] = mask.cumsum(0).cumsum(1)
        got = core.integral_image(mask)
        assert_close(got.ravel(), ref.ravel(), f"integral image {shape}", atol=0)


def test_box_fractions_match_reference_on_random_boxes() -> None:
    mask = (RNG.random((45, 70)) < 0.4).astype(np.uint8)
    x0 = RNG.uniform(-10, 75, 500)
    y0 = RNG.uniform(-10, 50, 500)
    side = RNG.uniform(0.2, 20, 500)
    boxes = np.stack([x0, y0, x0 + side, y0 + side * RNG.uniform(0.5, 2, 500)], axis=1)
    got = core.box_fractions(mask, boxes)
    assert_close(got, ref_box_fractions(mask, boxes), "box fractions")
    assert core.box_fractions(mask, np.array([[5.0, 5.0, 5.0, 9.0]]))[0] == 0.0


def test_grid_fractions_match_reference(cmu_svs: Path) -> None:
    with hsafast.open_slide(cmu_svs) as slide:
        mask = hsafast.detect_tissue(slide)
        grid = hsafast.tile_grid(slide, mask, mpp=0.5, size=256, min_tissue=0.0)
    dx, dy = mask.downsample
    p = grid.patch_size_level0
    c = grid.coords.astype(np.float64)
    boxes = np.stack([c[:, 0] / dx, c[:, 1] / dy, (c[:, 0] + p) / dx, (c[:, 1] + p) / dy], 1)
    assert_close(grid.tissue_fraction, ref_box_fractions(mask.mask, boxes), "tile fractions", 1e-6)


def test_grid_layout_on_the_real_svs(cmu_svs: Path) -> None:
    with hsafast.open_slide(cmu_svs) as slide:
        mask = hsafast.detect_tissue(slide)
        every = hsafast.tile_grid(slide, mask, min_tissue=0.0)
        kept = hsafast.tile_grid(slide, mask, min_tissue=0.5)
        width, height = slide.dimensions
    assert every.coords.dtype == np.int64 and every.coords.shape[1] == 2
    assert (every.level, every.read_size, every.patch_size_level0) == (0, 256, 256)
    assert len(every) == int(np.ceil(width / 256) * np.ceil(height / 256))
    order = np.lexsort((every.coords[:, 0], every.coords[:, 1]))
    assert (order == np.arange(len(every))).all(), "row-major order"
    assert (every.coords % 256 == 0).all()
    assert 0 < len(kept) < len(every)
    assert (kept.tissue_fraction >= 0.5).all()
    # the last column reaches past the edge: the outside part counts as glass
    last = every.coords[:, 0].max()
    assert last + 256 > width


def test_magnification_matches_mpp_and_is_deterministic(cmu_svs: Path) -> None:
    with hsafast.open_slide(cmu_svs) as slide:
        mask = hsafast.detect_tissue(slide)
        by_mpp = hsafast.tile_grid(slide, mask, mpp=1.0, size=224, overlap=32)
        by_mag = hsafast.tile_grid(slide, mask, size=224, overlap=32, magnification=10)
        again = hsafast.tile_grid(slide, mask, mpp=1.0, size=224, overlap=32)
    assert by_mag.target_mpp == 1.0
    assert np.array_equal(by_mpp.coords, by_mag.coords)
    assert np.array_equal(by_mpp.coords, again.coords)
    assert np.array_equal(by_mpp.tissue_fraction, again.tissue_fraction)
    # no level at 1 um/px: read 449 level-0 pixels and resize to 224
    assert (by_mpp.level, by_mpp.read_size) == (0, 449)
    assert by_mpp.stride_level0 == round(192 * 449 / 224)
    assert by_mpp.scale == pytest.approx(224 / 449)


def test_level_choice_on_a_pyramid(tcga_svs: Path) -> None:
    with hsafast.open_slide(tcga_svs, mpp=0.25) as slide:  # levels at 0.25 and ~0.5 um/px
        assert choose_level(slide, 0.25, 256) == (0, 256)
        assert choose_level(slide, 0.5, 256) == (1, 256)
        assert choose_level(slide, 0.7, 256) == (1, round(256 * 0.7 / slide.level_mpp(1)))
        assert choose_level(slide, 0.4, 256) == (0, round(256 * 0.4 / 0.25))
        mask = hsafast.detect_tissue(slide)
        grid = hsafast.tile_grid(slide, mask, mpp=0.5, size=256)
        downsample = slide.level_downsamples[1]
    assert grid.level == 1 and grid.read_size == 256
    assert grid.patch_size_level0 == round(256 * downsample)
    assert len(grid) > 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "tile size"),
        ({"size": 64, "overlap": 64}, "overlap"),
        ({"overlap": -1}, "overlap"),
        ({"mpp": 0.0}, "positive"),
        ({"mpp": -1.0}, "positive"),
        ({"min_tissue": 1.5}, "min_tissue"),
        ({"min_tissue": -0.1}, "min_tissue"),
        ({"mpp": 0.25}, "finer than the scan"),
        ({"magnification": 40}, "finer than the scan"),
        ({"magnification": 0}, "magnification"),
        ({"mpp": None}, "mpp or a magnification"),
    ],
)
def test_absurd_parameters_name_the_slide(cmu_svs: Path, kwargs: dict, message: str) -> None:
    with hsafast.open_slide(cmu_svs) as slide:
        mask = hsafast.detect_tissue(slide)
        with pytest.raises(InvalidParameterError, match=message) as info:
            hsafast.tile_grid(slide, mask, **kwargs)
    assert "CMU-1-Small-Region.svs" in str(info.value)


def test_mask_of_another_slide_and_missing_pixel_size(cmu_svs: Path, tcga_svs: Path) -> None:
    cmu_mask = hsafast.detect_tissue(cmu_svs)
    with hsafast.open_slide(tcga_svs, mpp=0.25) as tcga:
        with pytest.raises(InvalidParameterError, match="mask was made for"):
            hsafast.tile_grid(tcga, cmu_mask)
    with hsafast.open_slide(tcga_svs) as tcga:
        with pytest.raises(MissingPixelSizeError, match="tcga-cr-7395"):
            hsafast.tile_grid(tcga, None)


def test_without_mask_every_tile_is_kept(cmu_svs: Path) -> None:
    with hsafast.open_slide(cmu_svs) as slide:
        grid = hsafast.tile_grid(slide, None, mpp=2.0, size=128)
    assert (grid.tissue_fraction == 1).all()
    assert len(grid) == int(np.ceil(2220 / 513) * np.ceil(2967 / 513))


def test_tile_fractions_helper_counts_outside_as_glass(cmu_svs: Path) -> None:
    mask = hsafast.detect_tissue(cmu_svs)
    full = np.ones_like(mask.mask)
    mask.mask = full
    w, h = mask.level0_size
    f = tile_fractions(mask, np.array([[0, 0], [w - 100, h - 100], [w + 5, 0]]), 200)
    assert f[0] == pytest.approx(1.0)
    assert f[1] == pytest.approx(0.25, abs=0.01)
    assert f[2] == 0.0


def test_tissue_grid_is_tissue_then_grid(cmu_svs: Path) -> None:
    with hsafast.open_slide(cmu_svs) as slide:
        grid = hsafast.tissue_grid(slide, mpp=1.0, size=224, overlap=32, min_tissue=0.3)
        mask = hsafast.detect_tissue(slide)
        by_hand = hsafast.tile_grid(slide, mask, mpp=1.0, size=224, overlap=32, min_tissue=0.3)
        coarse = hsafast.TissueConfig(mpp=16.0)
        again = hsafast.tissue_grid(slide, 1.0, 224, overlap=32, min_tissue=0.3, tissue=coarse)
        reused = hsafast.tissue_grid(slide, 1.0, 224, overlap=32, min_tissue=0.3, tissue=mask)
    assert np.array_equal(grid.coords, by_hand.coords)
    assert np.array_equal(grid.tissue_fraction, by_hand.tissue_fraction)
    assert grid.tissue is not None and np.array_equal(grid.tissue.mask, mask.mask)
    assert reused.tissue is mask and np.array_equal(reused.coords, grid.coords)
    assert again.tissue is not None and again.tissue.mask_mpp == pytest.approx(16.0, rel=0.02)
    assert 0 < len(grid) < len(hsafast.tile_grid(slide, None, mpp=1.0, size=224, overlap=32))


def test_tissue_grid_of_a_field_without_glass_keeps_every_tile(data_dir: Path) -> None:
    with hsafast.open_slide(data_dir / "stardist_histo.jpg", mpp=0.25) as slide:
        grid = hsafast.tissue_grid(slide, mpp=0.25, size=100, min_tissue=0.5)
    assert grid.tissue is not None and not grid.tissue.glass_visible
    full = grid.coords[(grid.coords[:, 0] + 100 <= 500) & (grid.coords[:, 1] + 100 <= 300)]
    assert len(full) == 15 and (grid.tissue_fraction >= 0.5).all()


def test_tissue_grid_names_the_slide_without_tissue(tmp_path: Path) -> None:
    import cv2

    from hsafast.errors import NoTissueError

    glass = np.clip(RNG.normal(244, 2.0, size=(256, 320, 3)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "empty.png"), glass)
    with hsafast.open_slide(tmp_path / "empty.png", mpp=0.5) as slide:
        with pytest.raises(NoTissueError, match="empty.png"):
            hsafast.tissue_grid(slide)
