"""Tissue detection on real slides: plausible masks, artefacts (pen ink, coverslip
edges, specks), fields without glass, pale sparse tissue, outputs and bad input.
The native kernels are checked against references in test_tissue_kernels.py and the
masks against outlines drawn by hand in test_tissue_truth.py."""

from __future__ import annotations

import logging
import math
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from tissue_truth import BIRL_KIDNEY_MPP, BIRL_LUNG_MPP, truth_mask

import hsafast
from hsafast.errors import InvalidParameterError, MissingPixelSizeError, NoTissueError
from hsafast.tissue import TissueConfig, detect_tissue_image, working_image

RNG = np.random.default_rng(20260126)
EIGHT = np.ones((3, 3))


def working(path: Path, mpp: float | None = None) -> tuple[np.ndarray, float]:
    """The image detect_tissue works on, and its pixel size (pixel units: 8 um)."""
    with hsafast.open_slide(path, mpp=mpp) as slide:
        rgb, mask_mpp, _ = working_image(slide, TissueConfig())
    return rgb, mask_mpp or TissueConfig().mpp


def feathered(stroke: np.ndarray, mpp: float) -> np.ndarray:
    """Ink cover of each pixel (0..1) for a stroke (0/1) whose edge fades over 25 um."""
    return cv2.GaussianBlur(stroke.astype(np.float32), (0, 0), max(0.5, 25 / mpp))


def paint(
    rgb: np.ndarray, stroke: np.ndarray, colour: tuple[int, int, int], mpp: float
) -> np.ndarray:
    """Lay ink of ``colour`` over ``stroke`` (0/1) with a feathered edge."""
    alpha = feathered(stroke, mpp)[..., None]
    out = rgb.astype(np.float32) * (1 - alpha) + np.array(colour, np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---- masks on real slides ----------------------------------------------------------------


# (file, slide mpp override, expected tissue fraction range)
REAL = [
    ("CMU-1-Small-Region.svs", None, (0.3, 0.6)),
    ("tcga-cr-7395-01a-01-ts1.svs", None, (0.5, 0.75)),
    ("multiframe_camelyon_challenge_image.dcm", None, (0.15, 0.45)),
    ("multi_frame_jpeg2000_camelyon_challenge_image.dcm", None, (0.2, 0.5)),
    ("skimage_ihc.png", 0.5, (0.95, 1.0)),
    ("paired/birl_mouse_lung_lesion/Izd2-29-041-w35_HE.jpg", BIRL_LUNG_MPP, (0.85, 1.0)),
    ("paired/birl_mouse_lung_lesion/Izd2-29-041-w35_proSPC.jpg", BIRL_LUNG_MPP, (0.85, 1.0)),
    ("paired/birl_rat_kidney/Rat-Kidney_HE.jpg", BIRL_KIDNEY_MPP, (0.5, 0.8)),
    ("paired/birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg", BIRL_KIDNEY_MPP, (0.5, 0.8)),
]


def _path(data_dir: Path, name: str) -> Path:
    if name.startswith("CMU-1"):
        from hsafast.data import sample_slide_path

        return sample_slide_path()
    return data_dir / name


@pytest.mark.parametrize(("name", "mpp", "expected"), REAL, ids=[r[0].split("/")[-1] for r in REAL])
def test_plausible_mask_on_real_images(
    data_dir: Path, name: str, mpp: float | None, expected: tuple[float, float]
) -> None:
    with hsafast.open_slide(_path(data_dir, name), mpp=mpp) as slide:
        mask = hsafast.detect_tissue(slide)
        width, height = slide.dimensions
    fraction = float(mask.mask.mean())
    assert expected[0] <= fraction <= expected[1], f"{name}: tissue fraction {fraction:.2f}"
    assert mask.mask.dtype == np.bool_
    assert max(mask.shape) <= TissueConfig().max_side
    assert mask.level0_size == (width, height)
    assert mask.downsample[0] * mask.shape[1] == pytest.approx(width)
    assert mask.downsample[1] * mask.shape[0] == pytest.approx(height)
    assert mask.glass_visible
    assert 0.03 <= mask.threshold <= 0.06


def test_known_tissue_and_glass_points(data_dir: Path) -> None:
    kidney = hsafast.detect_tissue(
        data_dir / "paired/birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg"
    )
    h, w = kidney.shape
    assert kidney.mask[h // 2, int(w * 0.8)]  # cortex of the faint IHC section
    assert not kidney.mask[5, 5]  # glass corner
    tcga = hsafast.detect_tissue(data_dir / "tcga-cr-7395-01a-01-ts1.svs")
    assert not tcga.mask[0, 0] and tcga.mask[tcga.shape[0] // 2, tcga.shape[1] // 2]


def test_working_resolution_follows_pixel_size(cmu_svs: Path) -> None:
    mask = hsafast.detect_tissue(cmu_svs, TissueConfig(mpp=16.0))
    assert mask.mask_mpp == pytest.approx(16.0, rel=0.02)
    finer = hsafast.detect_tissue(cmu_svs, TissueConfig(mpp=4.0))
    assert finer.shape[0] == pytest.approx(4 * mask.shape[0], abs=4)
    assert finer.area_mm2() == pytest.approx(mask.area_mm2(), rel=0.1)


def test_keep_largest_drops_the_second_section(data_dir: Path) -> None:
    path = data_dir / "multiframe_camelyon_challenge_image.dcm"
    every = hsafast.detect_tissue(path)
    largest = hsafast.detect_tissue(path, TissueConfig(keep_largest=1))
    assert ndi.label(largest.mask, structure=np.ones((3, 3)))[1] == 1
    assert 0 < largest.area_px() < every.area_px()
    assert len(largest.contours()) == 1


def test_min_area_in_physical_units(cmu_svs: Path) -> None:
    small = hsafast.detect_tissue(cmu_svs, TissueConfig(min_area_mm2=0.0))
    big = hsafast.detect_tissue(cmu_svs, TissueConfig(min_area_mm2=0.3))
    labels, n = ndi.label(big.mask, structure=np.ones((3, 3)))
    pixel_mm2 = big.mask_mpp**2 * 1e-6
    assert n >= 1 and np.bincount(labels.ravel())[1:].min() * pixel_mm2 >= 0.3
    assert small.area_px() >= big.area_px()


def test_missing_pixel_size_uses_pixel_units(
    tcga_svs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hsafast.tissue"):
        mask = hsafast.detect_tissue(tcga_svs)
    assert "pixel units" in caplog.text and "tcga-cr-7395" in caplog.text
    assert mask.mpp is None and mask.mask_mpp is None
    with pytest.raises(MissingPixelSizeError, match="tcga-cr-7395"):
        mask.area_mm2()


def test_blank_glass_raises_no_tissue_naming_the_file(tmp_path: Path) -> None:
    # smooth glass, and glass with strong independent noise in every channel (what a
    # closing would weld into tissue if the noise were not dropped first)
    for name, sigma in (("blank_slide.png", 2.0), ("noisy_glass.png", 4.0)):
        blank = np.clip(RNG.normal(245, sigma, size=(300, 400, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / name), blank)
        for mpp in (0.5, 5.0):
            with pytest.raises(NoTissueError, match=f"{name}.*blank glass"):
                hsafast.detect_tissue(hsafast.open_slide(tmp_path / name, mpp=mpp))


def _fields(data_dir: Path, cmu_svs: Path, tmp_path: Path) -> list[tuple[str, Path, float]]:
    """Fields with tissue from edge to edge, as files: a real field with no glass, and
    crops of the CMU-1 dermis and the mouse lung lesion given a 40x pixel size."""
    fields = [("stardist", data_dir / "stardist_histo.jpg", 0.25)]
    with hsafast.open_slide(cmu_svs) as slide:
        dermis = slide.read_region((900, 2300), 0, (512, 384))
    lesion = cv2.imread(str(data_dir / "paired/birl_mouse_lung_lesion/Izd2-29-041-w35_HE.jpg"))
    for name, rgb in (("dermis", dermis), ("lesion", lesion[300:500, 300:550, ::-1])):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
        fields.append((name, path, 0.25))
    return fields


def test_a_field_without_glass_is_all_tissue(
    data_dir: Path, cmu_svs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name, path, mpp in _fields(data_dir, cmu_svs, tmp_path):
        with caplog.at_level(logging.INFO, logger="hsafast.tissue"):
            mask = hsafast.detect_tissue(hsafast.open_slide(path, mpp=mpp))
        assert not mask.glass_visible, name
        assert mask.mask.all(), f"{name}: {mask.mask.mean():.3f} of the field"
        assert mask.background == (255, 255, 255)
    assert "no glass visible" in caplog.text


def test_ink_on_a_field_without_glass_is_still_taken_out(data_dir: Path) -> None:
    rgb = cv2.imread(str(data_dir / "stardist_histo.jpg"))[..., ::-1]
    rgb = np.ascontiguousarray(cv2.resize(rgb, (1000, 600)))  # 2 um/px
    stroke = np.zeros(rgb.shape[:2], np.uint8)
    cv2.line(stroke, (100, 300), (900, 320), 1, 250)  # a 0.5-mm stroke
    mask = detect_tissue_image(paint(rgb, stroke, (35, 55, 165), 2.0), 2.0)
    assert not mask.glass_visible
    assert not mask.mask[stroke > 0].any()
    assert mask.mask[:100].all() and mask.mask[-100:].all()


# Scanned colours of the usual pen inks: dense dye (a marker stroke passes 5-25% of
# the light in the colours it absorbs) in the hue of each ink.
INKS = {
    "blue": (35, 55, 165),
    "green": (30, 135, 70),
    "black": (28, 28, 34),
    "red": (200, 35, 45),
}


@pytest.mark.parametrize("ink", sorted(INKS))
@pytest.mark.parametrize(
    ("name", "mpp"),
    [
        ("paired/birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg", BIRL_KIDNEY_MPP),
        ("paired/birl_mouse_lung_lesion/Izd2-29-041-w35_HE.jpg", BIRL_LUNG_MPP),
        ("tcga-cr-7395-01a-01-ts1.svs", None),
    ],
    ids=["kidney_ck", "lung_he", "tcga"],
)
def test_pen_ink_is_not_tissue(data_dir: Path, name: str, mpp: float | None, ink: str) -> None:
    rgb, mask_mpp = working(data_dir / name, mpp)
    clean = detect_tissue_image(rgb, mask_mpp).mask
    h, w = rgb.shape[:2]
    width = max(3, round(500 / mask_mpp))  # a 0.5-mm stroke across glass and tissue
    stroke = np.zeros((h, w), np.uint8)
    cv2.line(stroke, (w // 20, h // 8), (w - w // 20, h - h // 6), 1, width)
    cv2.circle(stroke, (w // 8, h - h // 8), 2 * width, 1, width // 2)  # a ring on glass
    inked = detect_tissue_image(paint(rgb, stroke, INKS[ink], mask_mpp), mask_mpp).mask
    covered = feathered(stroke, mask_mpp) >= 0.5  # pixels at least half under ink
    assert not inked[covered].any(), f"{ink} ink kept as tissue"
    # away from the stroke (beyond its feathered edge, the ink margin and the
    # closing's reach) the mask is the clean one
    config = TissueConfig()
    reach = round((config.ink_margin_um + config.closing_um) / mask_mpp) + width // 2 + 6
    far = ndi.distance_transform_edt(stroke == 0) > reach
    # (up to the threshold's response to the stroke's pale edge, where Otsu's split
    # falls inside the clamp)
    assert (inked[far] == clean[far]).mean() > 0.99


def test_stains_are_not_taken_for_ink(data_dir: Path, cmu_svs: Path) -> None:
    # haematoxylin (H&E and bluish IHC counterstain), eosin, dense DAB: nothing of the
    # real images but the DICOM's blue pen mark reads as an artefact
    from hsafast._native import core
    from hsafast.tissue import PixelParams, artefact_mask

    files = [
        (cmu_svs, None),
        (data_dir / "tcga-cr-7395-01a-01-ts1.svs", None),
        (data_dir / "multiframe_camelyon_challenge_image.dcm", None),
        (data_dir / "skimage_ihc.png", 0.5),
        (data_dir / "stardist_histo.jpg", 0.5),
        (data_dir / "paired/birl_mouse_lung_lesion/Izd2-29-041-w35_proSPC.jpg", BIRL_LUNG_MPP),
        (data_dir / "paired/birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg", BIRL_KIDNEY_MPP),
        (data_dir / "paired/birl_rat_kidney/Rat-Kidney_HE.jpg", BIRL_KIDNEY_MPP),
    ]
    config = TissueConfig()
    for path, mpp in files:
        rgb, mask_mpp = working(path, mpp)
        background = tuple(int(v) for v in core.tissue_background(rgb, 1, 99.0, 0))
        px = PixelParams.of(config, mask_mpp, rgb.shape[:2])
        found = artefact_mask(rgb, background, config, px)  # type: ignore[arg-type]
        assert found.mean() < 0.001, f"{path.name}: {found.mean():.4f} of the image"


def test_real_pen_ink_and_coverslip_edges_are_not_tissue(data_dir: Path) -> None:
    path = data_dir / "multi_frame_jpeg2000_camelyon_challenge_image.dcm"  # 29 um/px
    mask = hsafast.detect_tissue(path).mask
    plain = hsafast.detect_tissue(path, TissueConfig(exclude_artefacts=False)).mask
    ink = np.s_[0:30, 160:260]  # the blue pen mark on the top coverslip edge
    top = np.s_[8:22, 300:1600]  # the top edge of the coverslip
    left = np.s_[20:240, 45:68]  # its left edge, above the tissue fragments beside it
    for where, what in ((ink, "pen ink"), (top, "top coverslip edge"), (left, "left edge")):
        assert plain[where].sum() > 100, f"{what}: the image changed?"
        assert mask[where].sum() <= 0.05 * plain[where].sum(), what
    truth = truth_mask("multi_frame_jpeg2000_camelyon_challenge_image")
    labels, n = ndi.label(mask, structure=EIGHT)
    # pieces wholly on glass (dust; the fat's septa left alone by the fat around them
    # lie inside the drawn outline)
    strays = sum(1 for i in range(1, n + 1) if not truth[labels == i].any())
    plain_labels, plain_n = ndi.label(plain, structure=EIGHT)
    plain_strays = sum(1 for i in range(1, plain_n + 1) if not truth[plain_labels == i].any())
    assert strays < plain_strays // 2, (strays, plain_strays)


@pytest.mark.parametrize("mpp", [4.0, 12.0])
def test_specks_are_dropped_by_physical_area(data_dir: Path, mpp: float) -> None:
    rgb = cv2.imread(str(data_dir / "paired/birl_rat_kidney/Rat-Kidney_HE.jpg"))[..., ::-1]
    glass = np.ascontiguousarray(rgb[0:90, 0:360])  # the glass above the section
    scale = BIRL_KIDNEY_MPP / mpp
    field = cv2.resize(glass, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    h, w = field.shape[:2]
    spots = np.zeros((h, w), np.uint8)
    cv2.rectangle(spots, (w * 4 // 5, 0), (w - 1, h - 1), 1, -1)  # tissue at the right
    config = TissueConfig()
    specks = {}  # diameter (um) -> centre; areas 0.003 to 0.05 mm^2, far enough apart
    for i, diameter in enumerate((60.0, 120.0, 200.0, 250.0)):  # for the closing not to join
        centre = (round((0.08 + 0.18 * i) * w), h // 2)
        cv2.circle(spots, centre, round(diameter / 2 / mpp), 1, -1)
        specks[diameter] = centre
    mask = detect_tissue_image(paint(field, spots, (150, 110, 160), mpp), mpp, config).mask
    for diameter, (x, y) in specks.items():
        area = math.pi * (diameter / 2) ** 2 * 1e-6
        assert mask[y, x] == (area >= config.min_area_mm2), f"{diameter}-um speck ({area:.3f} mm^2)"
    assert mask[:, -5:].all()


def test_pale_sparse_lung_at_10_um_per_pixel(data_dir: Path) -> None:
    # the report: read at about 10 um/px, the mask of the pale pro-SPC section covered
    # under half of the section, airway walls left out
    path = data_dir / "paired/birl_mouse_lung_lesion/Izd2-29-041-w35_proSPC.jpg"
    mask = hsafast.detect_tissue(hsafast.open_slide(path, mpp=10.0)).mask
    truth = truth_mask("Izd2-29-041-w35_proSPC")
    assert mask.shape == truth.shape
    covered = (mask & truth).sum() / truth.sum()
    # alveolar spaces wider than the 100-um closing (ten pixels, if these were 10 um)
    # may stay open: the floor leaves a tenth of the section for them
    assert covered > 0.9, covered
    assert mask[175:250, 70:130][truth[175:250, 70:130]].mean() > 0.8  # bronchiole wall


def test_geojson_polygons_rasterise_back_to_the_mask(tcga_svs: Path) -> None:
    mask = hsafast.detect_tissue(tcga_svs)
    collection = mask.to_geojson()
    assert collection["type"] == "FeatureCollection" and collection["features"]
    dx, dy = mask.downsample
    width, height = mask.level0_size
    redrawn = np.zeros(mask.shape, dtype=np.uint8)
    has_hole = False
    for feature in collection["features"]:
        assert feature["properties"]["classification"]["name"] == "Tissue"
        assert feature["properties"]["objectType"] == "annotation"
        assert uuid.UUID(feature["id"]).version == 5
        assert feature["geometry"]["type"] == "Polygon"
        rings = [np.array(r, dtype=np.float64) for r in feature["geometry"]["coordinates"]]
        has_hole |= len(rings) > 1
        for j, ring in enumerate(rings):
            assert len(ring) >= 4 and (ring[0] == ring[-1]).all()
            assert (ring[:, 0] >= 0).all() and (ring[:, 0] <= width).all()
            assert (ring[:, 1] >= 0).all() and (ring[:, 1] <= height).all()
            x, y = ring[:, 0], ring[:, 1]
            signed = 0.5 * (np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
            assert (signed > 0) == (j == 0), "exterior counter-clockwise, holes clockwise"
            pts = np.round(ring / [dx, dy] - 0.5).astype(np.int32)
            cv2.fillPoly(redrawn, [pts], 1 if j == 0 else 0)
    assert has_hole  # the TCGA section has a lumen larger than max_hole_mm2
    inter = np.logical_and(redrawn, mask.mask).sum()
    union = np.logical_or(redrawn, mask.mask).sum()
    assert inter / union > 0.97


def test_png_outputs(tmp_path: Path, cmu_svs: Path) -> None:
    mask = hsafast.detect_tissue(cmu_svs)
    mask.to_png(tmp_path / "m.png")
    back = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back > 0, mask.mask), "mask PNG round trip"
    mask.save_overlay(tmp_path / "o.png", max_side=200)
    overlay = cv2.imread(str(tmp_path / "o.png"))
    assert max(overlay.shape[:2]) <= 200 and overlay.std() > 10
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mpp": 0},
        {"mpp": float("nan")},
        {"max_side": 4},
        {"threshold": -0.1},
        {"min_threshold": 0.2, "max_threshold": 0.1},
        {"glass_max_tint": -0.1},
        {"black_od": 0},
        {"ink_od": 3.0},
        {"ink_min_area_mm2": float("nan")},
        {"line_length_mm": -1},
        {"closing_um": -1},
        {"max_hole_mm2": -1},
        {"min_area_mm2": float("inf")},
        {"keep_largest": 0},
    ],
)
def test_config_validation_names_the_field(kwargs: dict) -> None:
    field = next(iter(kwargs)) if len(kwargs) == 1 else "min_threshold"
    with pytest.raises(InvalidParameterError, match=f"TissueConfig: {field}"):
        TissueConfig(**kwargs)


def test_bad_image_input_names_the_slide(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="some.svs"):
        detect_tissue_image(np.zeros((5, 5), dtype=np.uint8), slide_path=tmp_path / "some.svs")
    with pytest.raises(InvalidParameterError, match="some.svs"):
        rgb = RNG.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
        detect_tissue_image(rgb, 0.001, TissueConfig(), slide_path="some.svs")
