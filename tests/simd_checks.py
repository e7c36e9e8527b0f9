"""Each SIMD-dispatched native kernel against a NumPy reference, on the active SIMD path.

Shared by tests/test_build_simd.py (every path this CPU runs, forced in turn) and by the
emulated-CPU test of tests/test_build.py, which runs ``check_all`` in a Python process
under QEMU on CPUs without AVX-512 and without AVX. Imports stay light (NumPy, OpenCV,
hsafast; no PyTorch) so that the emulated run takes seconds, not minutes. Every failure
names the worst element.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parent / "data"


def worst(actual: np.ndarray, expected: np.ndarray) -> str:
    err = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    i = np.unravel_index(int(np.argmax(err)), err.shape)
    return f"worst element {i}: {np.asarray(actual)[i]!r} vs {np.asarray(expected)[i]!r}"


def ihc_image() -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(DATA / "skimage_ihc.png"))[..., ::-1])


def stain_tiles() -> list[np.ndarray]:
    """Real IHC crops (odd widths reach every loop tail) and random pixels."""
    ihc = ihc_image()
    rng = np.random.default_rng(11)
    return [
        np.ascontiguousarray(ihc[:128, :128]),
        np.ascontiguousarray(ihc[200:301, 100:177]),  # width 77: 4-pixel steps + tail of 1
        rng.integers(0, 256, (3, 40, 63, 3), dtype=np.uint8),
    ]


def check_stain_statistics() -> None:
    from hsafast.stain import pixel_stats, pixel_stats_reference

    for k, tiles in enumerate(stain_tiles()):
        got, ref = pixel_stats(tiles), pixel_stats_reference(tiles)
        assert np.array_equal(got[:, :6], ref[:, :6]), f"counts of input {k}: {worst(got, ref)}"
        assert np.allclose(got[:, 6:], ref[:, 6:], rtol=1e-4, atol=1e-2), (
            f"sums of input {k}: {worst(got[:, 6:], ref[:, 6:])}"
        )


def check_stain_concentrations() -> None:
    from hsafast.stain import concentrations, concentrations_reference

    for k, tiles in enumerate(stain_tiles()):
        for clamp in (True, False):
            got = concentrations(tiles, clamp=clamp)
            ref = concentrations_reference(tiles, clamp=clamp)
            err = float(np.abs(got - ref).max())
            assert err <= 1e-4, f"input {k}, clamp {clamp}: {worst(got, ref)}"


def check_gated_logits() -> None:
    """The vector body (4, 8 or 16 lanes) and the scalar tail, over extreme inputs."""
    from hsafast._native import core

    for hidden in (3, 16, 37, 256):
        rng = np.random.default_rng(hidden)
        z = np.concatenate(
            [
                rng.normal(0, 3, size=(120, 2 * hidden)),
                rng.normal(0, 1e-4, size=(20, 2 * hidden)),
                rng.uniform(-200, 200, size=(20, 2 * hidden)),
            ]
        ).astype(np.float32)
        bv, bu, w = (rng.normal(0, 0.5, size=hidden).astype(np.float32) for _ in range(3))
        got = core.gated_logits(z, bv, bu, w, 0.25)
        z64 = z.astype(np.float64)
        gate = np.tanh(z64[:, :hidden] + bv) / (1.0 + np.exp(-(z64[:, hidden:] + bu)))
        want = gate @ w.astype(np.float64) + 0.25
        err = np.abs(got - want) / (np.abs(w).sum() + 1.0)
        assert err.max() < 2e-6, f"hidden {hidden}: {worst(got, want)}"


def check_pool_chunk() -> None:
    """One chunk pooled natively (logits, softmax, weighted sum) against float64 NumPy."""
    from hsafast._native import core

    rng = np.random.default_rng(5)
    n, dim, hidden = 300, 70, 24
    z = rng.normal(0, 1.5, size=(n, 2 * hidden)).astype(np.float32)
    h = (rng.normal(0, 1, size=dim) + rng.standard_t(5, size=(n, dim))).astype(np.float32)
    bv, bu, w = (rng.normal(0, 0.5, size=hidden).astype(np.float32) for _ in range(3))
    state = np.zeros(dim + 2, np.float64)
    state[0] = -np.inf
    assert core.pool_chunk(z, h, bv, bu, w, 0.1, state)
    z64 = z.astype(np.float64)
    logits = (np.tanh(z64[:, :hidden] + bv) / (1 + np.exp(-(z64[:, hidden:] + bu)))) @ w + 0.1
    e = np.exp(logits - logits.max())
    want = (e / e.sum()) @ h.astype(np.float64)
    got = state[2:] / state[1]
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-5, f"pooled: {worst(got, want)}"


def tissue_rgb(seed: int) -> np.ndarray:
    """Tissue-like colour fields with no pixel an artefact rule could drop (none black, none
    green-dominant), so that the plain optical-density rule is the whole reference."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(60, 256, (24, 31, 3)).astype(np.uint8)
    rgb = cv2.resize(coarse, (497, 383), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    rgb = np.clip(rgb + rng.integers(-12, 13, rgb.shape), 60, 255).astype(np.uint8)
    rgb[..., 1] = np.minimum(rgb[..., 1], rgb[..., 0])
    return np.ascontiguousarray(rgb)


def quantised_od(rgb: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """round(100 * max_c max(0, log10((bg_c + 1) / (I_c + 1)))), saturated at 255."""
    bg = np.asarray(background, np.float64)
    od = np.maximum(0.0, np.log10(bg + 1.0) - np.log10(rgb.astype(np.float64) + 1.0))
    return np.minimum(255, np.rint(100 * od)).astype(np.int64).max(axis=-1)


def check_tissue_threshold() -> None:
    from hsafast._native import core

    for seed in (1, 2):
        rgb = tissue_rgb(seed)
        bg = (238, 231, 244)
        od = quantised_od(rgb, bg)
        for t in (0, 4, 9, 30):
            got = np.asarray(core.tissue_od_threshold(rgb, bg, t))
            want = (od > t).astype(np.uint8)
            assert np.array_equal(got, want), f"seed {seed}, OD > {t}: {worst(got, want)}"


def check_disk_morphology() -> None:
    from hsafast._native import core

    rng = np.random.default_rng(3)
    masks = [(rng.random((211, 173)) < p).astype(np.uint8) for p in (0.05, 0.5, 0.95)] + [
        (quantised_od(tissue_rgb(4), (238, 231, 244)) > 9).astype(np.uint8)
    ]
    for radius in (1, 3, 8):
        ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        disk = (xs**2 + ys**2 <= radius**2).astype(np.uint8)
        for k, m in enumerate(masks):
            for name, got, want in (
                ("dilation", core.dilate_disk(m, radius), cv2.dilate(m, disk)),
                ("erosion", core.erode_disk(m, radius), cv2.erode(m, disk)),
            ):
                got = np.asarray(got)
                assert np.array_equal(got, want), f"{name} r{radius} mask {k}: {worst(got, want)}"


CHECKS = {
    "stain statistics": check_stain_statistics,
    "stain concentrations": check_stain_concentrations,
    "gated logits": check_gated_logits,
    "pooling chunk": check_pool_chunk,
    "tissue threshold": check_tissue_threshold,
    "disk morphology": check_disk_morphology,
}


def check_all() -> None:
    for check in CHECKS.values():
        check()
