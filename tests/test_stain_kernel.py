"""The native stain kernels against scikit-image and the NumPy references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.color import hdx_from_rgb, rgb2hed, rgb_from_hdx, separate_stains

from hsafast._native import core
from hsafast.errors import InvalidParameterError, StainError
from hsafast.stain import (
    HED,
    PixelThresholds,
    StainMatrix,
    concentrations,
    concentrations_reference,
    estimate_macenko,
    pixel_stats,
    pixel_stats_reference,
)
from hsafast.synth.ihc_tile import render_ihc_tile


def _worst(a: np.ndarray, b: np.ndarray) -> str:
    err = np.abs(a.astype(np.float64) - b)
    i = np.unravel_index(int(np.argmax(err)), err.shape)
    return f"max abs error {err[i]:.3g} at {i}: {a[i]} vs {b[i]}"


def _read(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.fixture(scope="module")
def ihc(ihc_png) -> np.ndarray:
    return _read(ihc_png)


def _random_images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        rng.integers(0, 256, (2, 64, 61, 3), dtype=np.uint8),
        rng.integers(200, 256, (128, 128, 3), dtype=np.uint8),  # near-white background
    ]


def test_matches_skimage_rgb2hed_on_real_ihc(ihc: np.ndarray) -> None:
    ours = concentrations(ihc, scale="skimage")
    ref = rgb2hed(ihc)
    err = np.abs(ours - ref).max()
    assert err <= 1e-3, _worst(ours, ref)
    assert err <= 1e-5, _worst(ours, ref)  # float32 tables: far inside the tolerance


@pytest.mark.parametrize("index", range(3))
def test_matches_skimage_on_random_images(index: int) -> None:
    img = _random_images()[index]
    ours = concentrations(img, scale="skimage")
    ref = rgb2hed(img)
    assert np.abs(ours - ref).max() <= 1e-3, _worst(ours, ref)


def test_user_matrix_matches_separate_stains(ihc: np.ndarray) -> None:
    hdx = StainMatrix(("hematoxylin", "dab", "residual"), rgb_from_hdx)
    ours = concentrations(ihc, hdx, scale="skimage")
    ref = separate_stains(ihc, hdx_from_rgb)
    assert np.abs(ours - ref).max() <= 1e-3, _worst(ours, ref)


def test_log10_scale_is_six_times_skimage(ihc: np.ndarray) -> None:
    a = concentrations(ihc, scale="log10")
    b = 6.0 * rgb2hed(ihc)
    np.testing.assert_allclose(a, b, atol=6e-5)


@pytest.mark.parametrize("clamp", [True, False])
def test_concentrations_native_vs_numpy(clamp: bool) -> None:
    for img in _random_images():
        ours = concentrations(img, clamp=clamp)
        ref = concentrations_reference(img, clamp=clamp)
        assert np.abs(ours - ref).max() <= 1e-4, _worst(ours, ref)


def _tiles() -> np.ndarray:
    rng = np.random.default_rng(3)
    synth = [render_ihc_tile(96, positive_fraction=f, seed=i).rgb for i, f in enumerate((0.2, 0.8))]
    noise = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(2)]
    return np.stack(synth + noise)


def test_pixel_stats_native_vs_numpy() -> None:
    tiles = _tiles()
    ours = pixel_stats(tiles)
    ref = pixel_stats_reference(tiles)
    np.testing.assert_array_equal(ours[:, :6], ref[:, :6])
    np.testing.assert_allclose(ours[:, 6:], ref[:, 6:], rtol=1e-4, atol=1e-2)


def test_pixel_stats_odd_width_and_single_tile(ihc: np.ndarray) -> None:
    tile = np.ascontiguousarray(ihc[:101, :77])  # tail of the four-pixel loop
    ours = pixel_stats(tile)
    ref = pixel_stats_reference(tile)
    np.testing.assert_array_equal(ours[:, :6], ref[:, :6])
    np.testing.assert_allclose(ours[:, 6:], ref[:, 6:], rtol=1e-4)


def test_pixel_stats_agree_with_skimage_thresholding(ihc: np.ndarray) -> None:
    t = PixelThresholds()
    stats = pixel_stats(ihc)[0]
    hed = 6.0 * rgb2hed(ihc)  # log10 OD
    od = -np.log10(np.maximum(ihc / 255.0, 1e-6)).sum(axis=-1)
    tissue = od > t.tissue_od
    for k, thr in enumerate(t.dab):
        expected = int((tissue & (hed[..., 2] > thr)).sum())
        assert abs(stats[1 + k] - expected) <= 3, (k, stats[1 + k], expected)
    assert abs(stats[0] - tissue.sum()) <= 3
    np.testing.assert_allclose(stats[6], hed[..., 2][tissue].sum(), rtol=1e-4)


def test_pixel_stats_independent_of_threads() -> None:
    tiles = _tiles()
    before = core.get_num_threads()
    try:
        core.set_num_threads(1)
        one = pixel_stats(tiles)
        core.set_num_threads(2)
        two = pixel_stats(tiles)
    finally:
        core.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_residual_separates_he_from_ihc(ihc: np.ndarray, cmu_svs) -> None:
    from hsafast.slides import open_slide

    with open_slide(cmu_svs) as slide:
        he = slide.read_region((600, 600), 0, (512, 512))
    ihc_stats, he_stats = pixel_stats(ihc)[0], pixel_stats(he)[0]
    assert ihc_stats[8] / ihc_stats[0] < 0.0 < 0.05 < he_stats[8] / he_stats[0]


def test_bad_inputs(ihc: np.ndarray) -> None:
    with pytest.raises(InvalidParameterError, match="uint8"):
        concentrations(ihc.astype(np.float32))
    with pytest.raises(InvalidParameterError, match="RGB"):
        pixel_stats(ihc[..., :2])
    singular = StainMatrix(("hematoxylin", "eosin", "dab"), np.array([[0.65, 0.7, 0.29]] * 3))
    with pytest.raises(StainError, match="linearly dependent"):
        pixel_stats(ihc, singular)
    with pytest.raises(StainError, match="no stain 'dab'"):
        pixel_stats(ihc, StainMatrix(("hematoxylin", "eosin", "aec"), HED.rgb_from_stains))
    with pytest.raises(InvalidParameterError, match="thresholds"):
        PixelThresholds(dab=(0.5, 0.2, 0.6))
    lut = np.zeros(256, np.float32)
    inv = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.stain_concentrations(ihc[:, ::2], lut, inv, True)


def test_macenko_recovers_dab_and_hematoxylin(ihc: np.ndarray) -> None:
    est = estimate_macenko(ihc)
    ref = HED.rgb_from_stains / np.linalg.norm(HED.rgb_from_stains, axis=1, keepdims=True)
    assert est.rgb_from_stains[0] @ ref[0] > 0.98
    assert est.rgb_from_stains[2] @ ref[2] > 0.98
    assert np.linalg.cond(est.rgb_from_stains) < 10
    with pytest.raises(StainError, match="too few stained pixels"):
        estimate_macenko(np.full((20, 20, 3), 250, np.uint8))
