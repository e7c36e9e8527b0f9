"""Every SIMD path this CPU runs, forced in turn, against the NumPy references.

The portable build compiles the hot loops for the baseline, AVX2 and AVX-512 and picks one
at run time (csrc/core/simd.hpp); each path this machine can execute is forced here with
``hsafast.info.use_simd`` and every dispatched kernel is compared with its reference
(tests/simd_checks.py), so no path goes untested on a machine that has it.
"""

from __future__ import annotations

import numpy as np
import pytest
import simd_checks

from hsafast.info import build_info, use_simd

PATHS = ("scalar", "avx2", "avx512")


@pytest.fixture(params=PATHS)
def simd_path(request: pytest.FixtureRequest):
    path = request.param
    if path not in build_info()["simd_supported"]:
        pytest.skip(f"this CPU or build has no {path} path")
    with use_simd(path) as active:
        assert active == path
        yield path


@pytest.mark.parametrize("check", sorted(simd_checks.CHECKS))
def test_kernel_matches_reference_on_every_path(simd_path: str, check: str) -> None:
    simd_checks.CHECKS[check]()


def test_paths_give_identical_integer_results() -> None:
    """Counts and masks do not depend on the path (the float sums may differ in rounding)."""
    from hsafast._native import core
    from hsafast.stain import pixel_stats

    tiles = np.stack([t for t in simd_checks.stain_tiles()[:1]] * 2)
    rgb = simd_checks.tissue_rgb(7)
    results = {}
    for path in build_info()["simd_supported"]:
        with use_simd(path):
            mask = np.asarray(core.tissue_od_threshold(rgb, (238, 231, 244), 6))
            results[path] = (pixel_stats(tiles)[:, :6], mask, np.asarray(core.dilate_disk(mask, 5)))
    first = next(iter(results.values()))
    for path, got in results.items():
        for a, b, what in zip(got, first, ("stain counts", "tissue mask", "dilation"), strict=True):
            assert np.array_equal(a, b), f"{what} on {path}: {simd_checks.worst(a, b)}"
