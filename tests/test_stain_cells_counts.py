"""Detected nuclei against nuclei counted by hand on a real IHC image.

The counts, how they were made and why the tolerance is what it is are in
tests/data/cell_counts/README.md.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from hsafast.stain import HED
from hsafast.stain.compartments import Cells, detect_cells

MPP = 0.5
TILE = 128
# Hand counts of the second pass (totals only): certain, and with possible nuclei.
SECOND_PASS = {"T1": (17, 21), "T2": (21, 27), "T3": (17, 25)}


def _hand(data_dir: Path) -> dict[str, tuple[tuple[int, int], np.ndarray, np.ndarray]]:
    """tile -> (top-left corner, marks x/y in the image, certain flags)."""
    with (data_dir / "cell_counts" / "skimage_ihc_nuclei.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    corners = {"T1": (384, 300), "T2": (256, 320), "T3": (256, 192)}
    out = {}
    for tile, corner in corners.items():
        mine = [r for r in rows if r["tile"] == tile]
        xy = np.array([[float(r["x"]), float(r["y"])] for r in mine])
        out[tile] = (corner, xy, np.array([r["certain"] == "1" for r in mine]))
    return out


def _in_tile(cells: Cells, corner: tuple[int, int]) -> np.ndarray:
    x0, y0 = corner
    x, y = cells.xy[:, 0], cells.xy[:, 1]
    return (x >= x0) & (x < x0 + TILE) & (y >= y0) & (y < y0 + TILE)


def _band(tile: str, certain: np.ndarray) -> tuple[float, float]:
    """The hand count's interval over both passes, widened by their 12 % difference."""
    low = min(int(certain.sum()), SECOND_PASS[tile][0])
    high = max(len(certain), SECOND_PASS[tile][1])
    return 0.85 * low, 1.15 * high


@pytest.fixture(scope="module")
def image(ihc_png: Path) -> np.ndarray:
    bgr = cv2.imread(str(ihc_png))
    assert bgr is not None
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.mark.parametrize("engine", ["native", "python"])
def test_hematoxylin_nuclei_match_hand_counts(image, data_dir, engine) -> None:
    from hsafast.stain.compartments import CellConfig

    (cells,) = detect_cells(image, HED, MPP, "pdl1", CellConfig(engine=engine))
    for tile, (corner, _, certain) in _hand(data_dir).items():
        n = int(_in_tile(cells, corner).sum())
        low, high = _band(tile, certain)
        assert low <= n <= high, f"{tile}: {n} nuclei detected, hand count band {low}-{high}"


def test_stroma_nuclei_read_as_hematoxylin_plus_dab(image, data_dir) -> None:
    """On stroma (no DAB) the nuclear-marker map finds the same nuclei, none DAB-positive."""
    (cells,) = detect_cells(image, HED, MPP, "ki67")
    corner, _, certain = _hand(data_dir)["T1"]
    inside = _in_tile(cells, corner)
    low, high = _band("T1", certain)
    assert low <= inside.sum() <= high
    assert int(cells.positive()[inside].sum()) == 0  # hand count of DAB-positive nuclei: 0
