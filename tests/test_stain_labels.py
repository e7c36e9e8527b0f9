"""Slides a pathologist would not score get no label, with the reason: H&E, mixed stains,
no DAB, DAB that is not nuclear, a resolution too coarse for cells."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hsafast.errors import StainError
from hsafast.slides import open_slide
from hsafast.stain import HED, StainMatrix, quantify, slide_label
from hsafast.stain.deconvolution import od_lut
from hsafast.stain.stats import BLANK
from hsafast.synth.ihc_tile import render_ihc_tile


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


def _grid(shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    return np.array([(x, y) for y in range(0, h, 256) for x in range(0, w, 256)], np.int64)


def _mosaic(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    rows = [np.concatenate(tiles[i : i + cols], axis=1) for i in range(0, len(tiles), cols)]
    return np.concatenate(rows, axis=0)


def _label(path: Path, marker: str = "ki67", mpp: float = 0.5):
    with open_slide(path, mpp=mpp) as slide:
        w, h = slide.dimensions
        stats = quantify(slide, _grid((h, w)), marker)
    return stats, slide_label(stats)


def _ihc_tiles(n: int, compartment: str = "nuclear", positive: float = 0.4) -> list[np.ndarray]:
    return [
        render_ihc_tile(256, compartment=compartment, positive_fraction=positive,  # type: ignore[arg-type]
                        nucleus_radius_um=4.5, density=0.7, seed=s).rgb
        for s in range(n)
    ]  # fmt: skip


def _he_tiles(cmu_svs: Path, n: int) -> list[np.ndarray]:
    with open_slide(cmu_svs) as slide:
        coords = np.array([[600, 600], [1100, 1400], [1400, 2000], [850, 1900], [1300, 900]])
        return list(slide.read_regions(coords[:n], 0, (256, 256)))


def test_h_and_e_slide_has_no_label(cmu_svs: Path) -> None:
    coords = np.array([[600, 600], [1100, 1400], [1400, 2000]])
    stats = quantify(cmu_svs, coords, "ki67")
    lab = slide_label(stats)
    assert lab.label is None and lab.binary is None
    assert lab.reason.startswith("not hematoxylin-DAB") and "H&E" in lab.reason
    assert "not hematoxylin-DAB" in lab.flags
    readable = (stats.flags & BLANK) == 0
    assert readable.sum() >= 2 and (stats.eosin[readable] > 0.05).all()


def test_mixed_he_and_ihc_tiles_have_no_label(cmu_svs: Path, tmp_path: Path) -> None:
    tiles = _ihc_tiles(4) + _he_tiles(cmu_svs, 2)
    _, lab = _label(_write(tmp_path / "mixed.png", _mosaic(tiles, 3)))
    assert lab.label is None and lab.reason.startswith("mixed stain"), lab
    # the same IHC tiles alone read
    _, alone = _label(_write(tmp_path / "ihc.png", _mosaic(tiles[:4], 2)))
    assert alone.label == "high" and alone.reason == ""


def test_dab_over_h_and_e_has_no_label(cmu_svs: Path, tmp_path: Path) -> None:
    """H&E and DAB on one section: the optical densities add."""
    he = _he_tiles(cmu_svs, 4)
    ki67 = _ihc_tiles(4)
    lut = od_lut()
    mixed = []
    for a, b in zip(he, ki67, strict=True):
        od = lut[a] + lut[b]
        mixed.append(np.clip(np.rint(255 * 10.0**-od), 0, 255).astype(np.uint8))
    stats, lab = _label(_write(tmp_path / "he_dab.png", _mosaic(mixed, 2)))
    assert lab.label is None and lab.reason.startswith("mixed stain"), lab
    assert stats.eosin.max() > 0.2


def test_section_without_dab_has_no_label(tmp_path: Path) -> None:
    # a counterstain whose hue is 12 degrees off Ruifrok-Johnston's: read with the
    # slide's own vectors it stays free of DAB
    tilted = StainMatrix(
        HED.names, np.array([[0.56, 0.72, 0.41], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    )
    tiles = [render_ihc_tile(256, positive_fraction=0.0, density=0.7, matrix=tilted, seed=s).rgb
             for s in range(4)]  # fmt: skip
    path = _write(tmp_path / "no_dab.png", _mosaic(tiles, 2))
    stats, lab = _label(path, "ki67")
    assert lab.label is None and lab.reason.startswith("no DAB signal"), lab
    assert stats.cells[:, 1].sum() == 0  # no nucleus read as stained
    # Ruifrok-Johnston's hematoxylin would have read DAB into the nuclei
    with open_slide(path, mpp=0.5) as slide:
        rj = quantify(slide, _grid((512, 512)), "ki67", matrix=HED)
    assert rj.dab_fraction(1).mean() > 10 * max(stats.dab_fraction(1).mean(), 1e-4)


def test_cytoplasmic_stain_scored_as_nuclear_has_no_label(ihc_png: Path, tmp_path: Path) -> None:
    # the real FHL2 image: brown cytoplasm around blue nuclei
    _, lab = _label(ihc_png)
    assert lab.label is None and lab.reason.startswith("non-nuclear pattern"), lab
    # a simulated cytoplasmic stain too; as a cytoplasmic marker it is read
    path = _write(tmp_path / "cyto.png", _mosaic(_ihc_tiles(4, "cytoplasmic", 0.6), 2))
    _, lab = _label(path)
    assert lab.label is None and lab.reason.startswith("non-nuclear pattern"), lab
    from hsafast.stain import get_marker

    cyto = get_marker("ki67").with_options(compartment="cytoplasmic", cutoffs=(0.1,))
    with open_slide(path, mpp=0.5) as slide:
        lab = slide_label(quantify(slide, _grid((512, 512)), cyto))
    assert lab.label == "high" and lab.reason == ""


@pytest.mark.parametrize("positive", [0.05, 0.5, 0.95])
def test_nuclear_stain_passes_the_pattern_check(tmp_path: Path, positive: float) -> None:
    tiles = [render_ihc_tile(256, positive_fraction=positive, nucleus_radius_um=4.5, spacing=2.1,
                             density=0.8, seed=10 + s).rgb for s in range(4)]  # fmt: skip
    _, lab = _label(_write(tmp_path / "nuclear.png", _mosaic(tiles, 2)))
    assert lab.label is not None and lab.reason == "", lab
    assert lab.details["pattern_stained"] > 0


@pytest.mark.parametrize("positive", [0.6, 0.9])
def test_unstained_nuclei_between_stained_ones_are_not_holes(positive: float) -> None:
    # touching nuclei, most stained (a proliferative tumour): an unstained nucleus is
    # ringed by its stained neighbours, not by cytoplasmic or membranous DAB
    from hsafast.stain import detect_cells, get_marker
    from hsafast.stain.pattern import dab_holes
    from hsafast.stain.stats import QuantifyConfig
    from hsafast.stain.vectors import estimate_hdab

    cells_cfg, ki67 = QuantifyConfig().cells, get_marker("ki67")
    holes = stained = 0
    for seed in range(4):
        tile = render_ihc_tile(256, positive_fraction=positive, spacing=2.0, density=1.0,
                               seed=seed).rgb  # fmt: skip
        matrix = estimate_hdab(tile)
        cells = detect_cells(tile, matrix, 0.5, ki67, cells_cfg)[0]
        stained += int((cells.grade >= 1).sum())
        holes += dab_holes(tile, matrix, 0.5, ki67, cells_cfg, stained=cells)[1]
    assert stained > 300
    assert holes < 0.03 * stained, (holes, stained)


def test_coarse_pixels_are_refused_for_cells(ihc_png: Path) -> None:
    coords = _grid((512, 512))
    with pytest.raises(StainError, match=r"too coarse.*6 um nucleus spans 1\.2 px") as info:
        quantify(open_slide(ihc_png, mpp=5.0), coords, "ki67")
    assert info.value.path == ihc_png
    with pytest.raises(StainError, match="too coarse"):
        quantify(open_slide(ihc_png, mpp=1.3), coords, "pdl1")
    quantify(open_slide(ihc_png, mpp=1.2), coords, "ki67")  # the limit itself is fine
    # a cytoplasmic marker is scored on pixels, at any resolution
    from hsafast.stain import get_marker

    cyto = get_marker("ki67").with_options(compartment="cytoplasmic")
    assert len(quantify(open_slide(ihc_png, mpp=5.0), coords, cyto)) == 4


def _p53_slide(tmp_path: Path, name: str, tumour: tuple[float, tuple[float, float]],
               immune: float) -> Path:  # fmt: skip
    """Carcinoma-sized nuclei (10 um) stained as ``tumour`` (share, DAB OD range) beside
    lymphocyte-sized ones (5.6 um), a share ``immune`` of them weakly stained."""
    share, od = tumour
    tiles = [render_ihc_tile(256, positive_fraction=share, positive_od=od, nucleus_radius_um=5.0,
                             density=0.7, seed=20 + s).rgb for s in range(4)]  # fmt: skip
    tiles += [render_ihc_tile(256, positive_fraction=immune, positive_od=(0.25, 0.5),
                              nucleus_radius_um=2.8, density=0.6, seed=30 + s).rgb
              for s in range(2)]  # fmt: skip
    return _write(tmp_path / f"{name}.png", _mosaic(tiles, 3))


@pytest.mark.parametrize(
    ("name", "tumour", "immune", "label"),
    [
        ("overexpression", (0.97, (0.7, 1.1)), 0.05, "overexpression"),
        ("wild-type", (0.2, (0.25, 0.45)), 0.05, "wild-type"),
        ("null", (0.0, (0.3, 0.5)), 0.2, "null"),
        ("no control", (0.0, (0.3, 0.5)), 0.0, None),
    ],
)
def test_p53_patterns_read_right_on_cells(
    tmp_path: Path, name: str, tumour: tuple[float, tuple[float, float]], immune: float,
    label: str | None,
) -> None:  # fmt: skip
    stats, lab = _label(_p53_slide(tmp_path, name.replace(" ", "_"), tumour, immune), "p53")
    assert lab.label == label, lab
    # p53 scores nuclei of twice a lymphocyte's area and more: part of the 10-um ones
    assert stats.cells[:, 0].sum() >= 50 and stats.others is not None
    assert stats.others[:, 0].sum() > 100  # the lymphocyte-sized nuclei are not scored
    if label is None:
        assert lab.reason  # no DAB at all: nothing shows the stain worked
