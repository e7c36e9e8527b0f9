"""The test that keeps a displacement field: effective samples of smooth images, and the
standard error of two dependent correlations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hsafast.registration.quality import (
    dependent_correlation_z,
    effective_samples,
    normalised_cross_correlation,
)


def _smooth(rng: np.random.Generator, sigma: float, size: int = 128) -> np.ndarray:
    return cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), sigma)


def _ellipse(size: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    half = size / 2
    return ((xx - half) / (0.45 * size)) ** 2 + ((yy - half) / (0.35 * size)) ** 2 < 1


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_effective_samples_predict_the_spread_of_a_correlation(sigma: float) -> None:
    """Between independent smooth images r has variance 1 / N_eff (here N / (2 pi sigma^2)
    for blurred white noise), far from the N pixels."""
    rng = np.random.default_rng(3)
    mask = _ellipse()
    r, n_eff = [], []
    for i in range(300):
        a, b = _smooth(rng, sigma), _smooth(rng, sigma)
        r.append(normalised_cross_correlation(a, b, mask))
        if i < 8:
            n_eff.append(effective_samples(a, b, mask))
    measured = 1.0 / np.var(r)
    estimated = float(np.mean(n_eff))
    assert estimated == pytest.approx(measured, rel=0.2), (estimated, measured)
    assert estimated == pytest.approx(mask.sum() / (2 * np.pi * sigma**2), rel=0.15)
    assert estimated < 0.1 * mask.sum()


def test_effective_samples_of_white_noise_are_the_pixels() -> None:
    rng = np.random.default_rng(4)
    mask = _ellipse()
    n = effective_samples(rng.normal(size=mask.shape), rng.normal(size=mask.shape), mask)
    assert n == pytest.approx(mask.sum(), rel=0.1)
    assert effective_samples(np.ones(mask.shape), np.ones(mask.shape), mask[:3, :3]) == 0


@pytest.mark.parametrize("noise", [0.15, 0.6])
def test_dependent_correlations_z_is_standard_normal_under_the_null(noise: float) -> None:
    """b and c carry the same information about a (two maps of one IHC image that are
    equally right): z is N(0, 1), so z > 2 happens about 2 % of the time."""
    rng = np.random.default_rng(5)
    mask = np.ones((96, 96), bool)
    zs = []
    for _ in range(250):
        a, shared = _smooth(rng, 2.0, 96), _smooth(rng, 2.0, 96)
        b = 0.5 * a + shared + noise * _smooth(rng, 2.0, 96)
        c = 0.5 * a + shared + noise * _smooth(rng, 2.0, 96)
        r_ab = normalised_cross_correlation(a, b, mask)
        r_ac = normalised_cross_correlation(a, c, mask)
        r_bc = normalised_cross_correlation(b, c, mask)
        zs.append(dependent_correlation_z(r_ab, r_ac, r_bc, effective_samples(a, b, mask)))
    z = np.asarray(zs)
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.25, (z.mean(), z.std())
    assert np.mean(z > 2.0) < 0.06


def test_dependent_correlations_z_detects_a_real_gain() -> None:
    rng = np.random.default_rng(6)
    mask = np.ones((96, 96), bool)
    a, shared = _smooth(rng, 2.0, 96), _smooth(rng, 2.0, 96)
    b = 0.5 * a + shared + 0.6 * _smooth(rng, 2.0, 96)  # a worse map
    c = 0.5 * a + shared + 0.1 * _smooth(rng, 2.0, 96)  # a better one
    n = effective_samples(a, b, mask)
    r_ab, r_ac = (normalised_cross_correlation(a, x, mask) for x in (b, c))
    r_bc = normalised_cross_correlation(b, c, mask)
    assert dependent_correlation_z(r_ab, r_ac, r_bc, n) > 2.0
    assert dependent_correlation_z(r_ac, r_ab, r_bc, n) < -2.0


def test_dependent_correlation_formula() -> None:
    """Uncorrelated b and c give the independent-samples error sqrt(2 / (n - 3)); alike
    ones a much smaller one (Meng, Rosenthal and Rubin 1992)."""
    independent = (np.arctanh(0.3) - np.arctanh(0.2)) * np.sqrt(997 / 2)
    assert dependent_correlation_z(0.2, 0.3, 0.0, 1000) == pytest.approx(independent, rel=0.06)
    alike = dependent_correlation_z(0.2, 0.3, 0.95, 1000)
    assert alike > 4 * independent
    # exact value of the formula at one point
    r1, r2, r12, n = 0.2, 0.3, 0.95, 1000.0
    mean_sq = (r1 * r1 + r2 * r2) / 2
    f = (1 - r12) / (2 * (1 - mean_sq))
    h = (1 - f * mean_sq) / (1 - mean_sq)
    want = (np.arctanh(r2) - np.arctanh(r1)) * np.sqrt((n - 3) / (2 * (1 - r12) * h))
    assert alike == pytest.approx(want)
    assert dependent_correlation_z(0.2, 0.3, 0.5, 4) == 0.0
