"""The stain overlay: every cell drawn where it is, in its grade's colour."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hsafast.errors import InvalidParameterError
from hsafast.slides import open_slide
from hsafast.stain import QuantifyConfig, quantify, save_stain_overlay, stain_overlay
from hsafast.stain.overlay import EXCLUDED_COLOUR, GRADE_COLOURS
from hsafast.synth.ihc_tile import render_ihc_tile


@pytest.fixture(scope="module")
def slide_and_stats(tmp_path_factory: pytest.TempPathFactory):
    tiles = [render_ihc_tile(256, positive_fraction=0.4, nucleus_radius_um=4.5, seed=s).rgb
             for s in range(4)]  # fmt: skip
    blank = np.random.default_rng(0).integers(246, 256, (256, 256, 3), dtype=np.uint8)
    img = np.concatenate(
        [np.concatenate([*tiles[:2], blank], 1), np.concatenate([*tiles[2:], blank], 1)]
    )
    path = tmp_path_factory.mktemp("overlay") / "ki67.png"
    cv2.imwrite(str(path), img[..., ::-1])
    coords = np.array([(x, y) for y in (0, 256) for x in (0, 256, 512)], np.int64)
    with open_slide(path, mpp=0.5) as slide:
        stats = quantify(slide, coords, "ki67")
    return path, stats


def _colour_at(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    x, y = np.rint(xy).astype(int).T
    return image[y, x]


def test_cells_are_drawn_in_their_grade_colour(slide_and_stats) -> None:
    path, stats = slide_and_stats
    table = stats.cell_table
    assert table is not None and len(table) > 100
    with open_slide(path, mpp=0.5) as slide:
        image, ds = stain_overlay(slide, stats, max_size=4096)
    assert ds == 1.0 and image.shape == (512, 768, 3)
    legend = (table.xy[:, 0] < 260) & (table.xy[:, 1] < 110)  # under the key
    for grade in range(4):
        pick = (table.grade == grade) & table.scored & ~legend
        if pick.any():
            drawn = _colour_at(image, table.xy[pick])
            hit = np.all(drawn == GRADE_COLOURS[grade], axis=1)
            assert hit.mean() > 0.9, (grade, hit.mean())  # neighbours' dots may overlap
    # the blank tiles are outlined as excluded, the pixels elsewhere are the slide's
    assert np.all(image[300, 767] == EXCLUDED_COLOUR) and np.all(image[511, 700] == EXCLUDED_COLOUR)
    with open_slide(path, mpp=0.5) as slide:
        pixels = slide.read_region((0, 0), 0, (768, 512))
    untouched = np.all(image == pixels, axis=-1)
    assert 0.3 < untouched.mean() < 0.97


def test_downsampled_overlay_and_region(slide_and_stats, tmp_path: Path) -> None:
    path, stats = slide_and_stats
    with open_slide(path, mpp=0.5) as slide:
        small, ds = stain_overlay(slide, stats, max_size=192)
        assert ds == pytest.approx(4.0) and small.shape == (128, 192, 3)
        part, ds_part = stain_overlay(slide, stats, region=(256, 256, 256, 256))
        assert ds_part == 1.0 and part.shape == (256, 256, 3)
        with pytest.raises(InvalidParameterError, match="does not overlap"):
            stain_overlay(slide, stats, region=(5000, 0, 10, 10))
    out = save_stain_overlay(path, stats, tmp_path / "o" / "overlay.png", max_size=400)
    back = cv2.imread(str(out))
    assert back is not None and max(back.shape[:2]) == 400


def test_overlay_needs_the_cells(slide_and_stats) -> None:
    path, _ = slide_and_stats
    with open_slide(path, mpp=0.5) as slide:
        stats = quantify(slide, [[0, 0]], "ki67", config=QuantifyConfig(keep_cells=False))
        with pytest.raises(InvalidParameterError, match="kept no cells"):
            stain_overlay(slide, stats)
