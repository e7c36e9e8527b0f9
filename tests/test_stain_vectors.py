"""The slide's own hematoxylin vector and the matrix-free eosin colour test."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hsafast.slides import open_slide
from hsafast.stain import HED, StainMatrix, pixel_stats
from hsafast.stain.deconvolution import eosin_share
from hsafast.stain.vectors import estimate_hdab
from hsafast.synth.ihc_tile import render_ihc_tile


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def _tilted(h: tuple[float, float, float]) -> StainMatrix:
    return StainMatrix(HED.names, np.array([h, HED.rgb_from_stains[1], HED.rgb_from_stains[2]]))


@pytest.mark.parametrize(
    "hematoxylin",
    [(0.65, 0.70, 0.29), (0.56, 0.72, 0.41), (0.49, 0.77, 0.41), (0.58, 0.655, 0.486)],
)  # Ruifrok-Johnston, Macenko's reference, Landini's, the BIRL mouse H&E estimate
@pytest.mark.parametrize("stained", [0.0, 0.3])
def test_estimated_hematoxylin_follows_the_slide(
    hematoxylin: tuple[float, float, float], stained: float
) -> None:
    truth = _tilted(hematoxylin)
    tiles = np.stack([render_ihc_tile(256, positive_fraction=stained, density=0.7, matrix=truth,
                                      seed=s).rgb for s in range(3)])  # fmt: skip
    estimate = estimate_hdab(tiles)
    assert _angle(estimate.rgb_from_stains[0], np.array(hematoxylin)) < 3.0
    np.testing.assert_allclose(estimate.rgb_from_stains[1:], HED.rgb_from_stains[1:])
    # a section without DAB reads none, whatever its counterstain's hue
    dab1 = pixel_stats(tiles, estimate)[:, 1].sum() / pixel_stats(tiles, estimate)[:, 0].sum()
    if stained == 0:
        assert dab1 == 0.0
    else:
        assert dab1 > 0.05


def test_estimate_falls_back_without_enough_pixels() -> None:
    blank = np.full((64, 64, 3), 250, np.uint8)
    assert estimate_hdab(blank) is HED
    assert estimate_hdab(np.zeros((0, 3), np.uint8)) is HED


def test_eosin_share_tells_h_and_e_from_ihc(cmu_svs: Path, ihc_png: Path, birl_mouse: Path) -> None:
    ihc = cv2.cvtColor(cv2.imread(str(ihc_png)), cv2.COLOR_BGR2RGB)
    ihc_tiles = np.stack([ihc[y : y + 256, x : x + 256] for y in (0, 256) for x in (0, 256)])
    assert eosin_share(ihc_tiles).max() == 0.0
    spc = cv2.imread(str(birl_mouse / "Izd2-29-041-w35_proSPC.jpg"))[..., ::-1]
    assert eosin_share(np.ascontiguousarray(spc[:512, :512])).max() == 0.0
    with open_slide(cmu_svs) as slide:
        he = slide.read_regions(np.array([[1100, 1400], [1400, 2000], [850, 1900]]), 0, (256, 256))
    share = eosin_share(he)
    assert share.min() > 0.1
    # every 4th pixel estimates the full count
    np.testing.assert_allclose(share, eosin_share(he, step=1), atol=0.03)
    assert eosin_share(he[0]).shape == (1,)
