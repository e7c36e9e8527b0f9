"""Tissue detection: every native step against a NumPy/OpenCV/SciPy/scikit-image
reference, and plausible masks on the real H&E and IHC images."""

from __future__ import annotations

import logging
import math
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import disk, remove_small_holes

import hsafast
from hsafast._native import core
from hsafast.errors import InvalidParameterError, MissingPixelSizeError, NoTissueError
from hsafast.tissue import TissueConfig, _native_params, detect_tissue_image

RNG = np.random.default_rng(20260126)


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Exact equality, naming the worst element when it fails."""
    actual = np.asarray(actual).astype(np.int64)
    expected = np.asarray(expected).astype(np.int64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual - expected)
    if diff.size and diff.max() > 0:
        idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
        pytest.fail(
            f"{what}: {int((diff > 0).sum())} elements differ; worst at {idx}: "
            f"native {actual[idx]} vs reference {expected[idx]}"
        )


def real_images(data_dir: Path) -> dict[str, np.ndarray]:
    """Low-resolution RGB images of every real slide in tests/data."""
    files = {
        "tcga": ("tcga-cr-7395-01a-01-ts1.svs", None),
        "dicom": ("multiframe_camelyon_challenge_image.dcm", None),
        "ihc": ("skimage_ihc.png", 0.5),
        "mouse_prospc": ("paired/birl_mouse_lung_lesion/Izd2-29-041-w35_proSPC.jpg", None),
        "kidney_ck": ("paired/birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg", None),
    }
    out = {}
    for name, (rel, mpp) in files.items():
        with hsafast.open_slide(data_dir / rel, mpp=mpp) as slide:
            out[name] = slide.thumbnail(700)[0]
    return out


@pytest.fixture(scope="module")
def images(data_dir: Path) -> dict[str, np.ndarray]:
    return real_images(data_dir)


def random_rgb(h: int = 61, w: int = 83) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def random_mask(h: int = 97, w: int = 131, p: float = 0.45) -> np.ndarray:
    return (RNG.random((h, w)) < p).astype(np.uint8)


# ---- references ------------------------------------------------------------------------


def ref_background(rgb: np.ndarray, stride: int, floor: int = 200) -> np.ndarray:
    sample = rgb.reshape(-1, 3)[::stride]
    p99 = np.percentile(sample, 99, axis=0, method="inverted_cdf")
    return np.maximum(p99, floor).astype(np.int64)


def ref_od(rgb: np.ndarray, bg: np.ndarray, exclude: bool = True) -> np.ndarray:
    od = np.log10((bg.astype(np.float64) + 1) / (rgb.astype(np.float64) + 1))
    q = np.minimum(255, np.rint(100 * np.clip(od, 0, None))).astype(np.int64).max(axis=-1)
    if exclude:
        r, g, b = (rgb[..., c].astype(np.int64) for c in range(3))
        artefact = (np.maximum(np.maximum(r, g), b) < 50) | ((g > r + 20) & (g > b + 20))
        q[artefact] = 0
    return q


def ref_otsu(hist: np.ndarray, centers: np.ndarray) -> int:
    best, best_k = -1.0, -1
    total = hist.sum()
    for k in range(len(hist) - 1):
        w0 = hist[: k + 1].sum()
        w1 = total - w0
        if w0 == 0 or w1 == 0:
            continue
        m0 = (hist[: k + 1] * centers[: k + 1]).sum() / w0
        m1 = (hist[k + 1 :] * centers[k + 1 :]).sum() / w1
        var = w0 * w1 * (m0 - m1) ** 2
        if var > best * (1 + 1e-12):
            best, best_k = var, k
    return best_k


def ref_fill_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    if max_area < 0:
        return ndi.binary_fill_holes(mask)
    if max_area == 0:
        return mask.astype(bool)
    labels, n = ndi.label(mask == 0)  # 4-connected background
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    area = np.bincount(labels.ravel(), minlength=n + 1)
    small = area <= max_area
    small[edge] = False
    small[0] = False
    filled = mask.astype(bool) | small[labels]
    if filled.shape[0] > 20 and filled.shape[1] > 20 and max_area < 2 * sum(filled.shape):
        # scikit-image agrees once padding joins the edge regions into one large region
        padded = np.pad(mask.astype(bool), 1)
        assert (remove_small_holes(padded, max_size=max_area)[1:-1, 1:-1] == filled).all()
    return filled


def ref_filter(mask: np.ndarray, min_area: int, keep_largest: int) -> np.ndarray:
    labels, n = ndi.label(mask, structure=np.ones((3, 3)))
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    ok = np.flatnonzero(area >= min_area)
    if keep_largest > 0:
        ok = ok[np.argsort(-area[ok], kind="stable")][:keep_largest]
    return np.isin(labels, ok + 1)


def ref_pipeline(rgb: np.ndarray, p: dict) -> np.ndarray:
    n = rgb.shape[0] * rgb.shape[1]
    stride = core.sample_stride(n)
    bg = ref_background(rgb, stride)
    od = ref_od(rgb, bg, p["exclude_artefacts"])
    centers = np.log(np.arange(256) / 100 + 0.01)
    hist = np.bincount(od.ravel()[::stride], minlength=256)
    otsu = ref_otsu(hist, centers)
    t = p["min_threshold"] if otsu < 0 else min(max(otsu, p["min_threshold"]), p["max_threshold"])
    m = (od > t).astype(np.uint8)
    rc, ro = p["closing_radius"], p["opening_radius"]
    if rc:
        m = cv2.erode(cv2.dilate(m, disk(rc).astype(np.uint8)), disk(rc).astype(np.uint8))
    if ro:
        m = cv2.dilate(cv2.erode(m, disk(ro).astype(np.uint8)), disk(ro).astype(np.uint8))
    m = ref_fill_holes(m, p["max_hole_area"])
    return ref_filter(m, p["min_area"], p["keep_largest"])


# ---- native kernels vs references ------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 3, 7])
def test_background_matches_numpy_percentile(stride: int, images: dict[str, np.ndarray]) -> None:
    for name, rgb in [("random", random_rgb()), *images.items()]:
        got = core.tissue_background(rgb, stride)
        assert_same(np.array(got), ref_background(rgb, stride), f"background of {name}")


def test_od_map_matches_numpy(images: dict[str, np.ndarray]) -> None:
    for name, rgb in [("random", random_rgb()), *images.items()]:
        bg = np.array(core.tissue_background(rgb))
        for exclude in (True, False):
            got = core.tissue_od_map(rgb, tuple(int(v) for v in bg), exclude)
            assert_same(got, ref_od(rgb, bg, exclude), f"OD of {name} (artefacts {exclude})")


def test_od_histogram_and_threshold_match_od_map(images: dict[str, np.ndarray]) -> None:
    for name, rgb in [("random", random_rgb()), *images.items()]:
        bg = tuple(int(v) for v in core.tissue_background(rgb))
        od = np.asarray(core.tissue_od_map(rgb, bg))
        for stride in (1, 5):
            hist = core.tissue_od_histogram(rgb, bg, stride=stride)
            ref = np.bincount(od.ravel()[::stride], minlength=256)
            assert_same(hist, ref, f"OD histogram of {name}")
        for t in (0, 3, 6, 40):
            got = core.tissue_od_threshold(rgb, bg, t)
            assert_same(got, od > t, f"OD > {t} of {name}")


def test_histogram_matches_bincount() -> None:
    x = RNG.integers(0, 256, size=(123, 77), dtype=np.uint8)
    assert_same(core.tissue_histogram(x), np.bincount(x.ravel(), minlength=256), "histogram")


def test_otsu_matches_bruteforce_and_skimage(images: dict[str, np.ndarray]) -> None:
    from skimage.filters import threshold_otsu

    centers = np.log(np.arange(256) / 100 + 0.01)
    hists = [RNG.integers(0, 1000, size=256) for _ in range(5)]
    for rgb in images.values():
        bg = tuple(int(v) for v in core.tissue_background(rgb))
        hists.append(core.tissue_od_histogram(rgb, bg))
    for i, hist in enumerate(hists):
        k = core.otsu_index(hist, centers)
        assert k == ref_otsu(hist, centers), f"histogram {i}: native {k}"
        nz = np.flatnonzero(hist)
        lo, hi = nz[0], nz[-1] + 1  # scikit-image needs populated end bins
        sk = threshold_otsu(hist=(hist[lo:hi], centers[lo:hi]))
        assert centers[k] == pytest.approx(sk), f"histogram {i}: skimage {sk} vs {centers[k]}"
    assert core.otsu_index(np.eye(1, 256, 9, dtype=np.int64)[0] * 50, centers) == -1


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 8])
def test_disk_morphology_matches_opencv(radius: int, images: dict[str, np.ndarray]) -> None:
    kernel = disk(radius).astype(np.uint8)
    masks = [random_mask(), random_mask(40, 1), random_mask(1, 40), random_mask(p=0.9)]
    for rgb in images.values():
        bg = tuple(int(v) for v in core.tissue_background(rgb))
        masks.append(np.asarray(core.tissue_od_threshold(rgb, bg, 5)))
    for i, m in enumerate(masks):
        assert_same(core.dilate_disk(m, radius), cv2.dilate(m, kernel), f"dilation {i} r{radius}")
        assert_same(core.erode_disk(m, radius), cv2.erode(m, kernel), f"erosion {i} r{radius}")


@pytest.mark.parametrize("connectivity", [4, 8])
def test_labels_match_scipy(connectivity: int, images: dict[str, np.ndarray]) -> None:
    structure = np.ones((3, 3)) if connectivity == 8 else None
    masks = [random_mask(), random_mask(p=0.6), (random_mask() * 255).astype(np.uint8)]
    for rgb in images.values():
        bg = tuple(int(v) for v in core.tissue_background(rgb))
        masks.append(np.asarray(core.tissue_od_threshold(rgb, bg, 5)))
    for i, m in enumerate(masks):
        labels, area = core.label(m, connectivity)
        ref, n = ndi.label(m, structure=structure)
        assert_same(labels, ref, f"labels of mask {i}")
        assert_same(area, np.bincount(ref.ravel(), minlength=n + 1)[1:], f"areas of mask {i}")


@pytest.mark.parametrize("max_area", [-1, 0, 1, 4, 30, 500])
def test_fill_holes_matches_scipy_and_skimage(max_area: int) -> None:
    for i, m in enumerate([random_mask(p=0.55), random_mask(p=0.7), random_mask(50, 3, 0.6)]):
        got = core.fill_holes(m, max_area)
        assert_same(got, ref_fill_holes(m, max_area), f"fill holes {i} (max {max_area})")


@pytest.mark.parametrize(("min_area", "keep"), [(0, 0), (1, 0), (5, 0), (20, 0), (0, 1), (3, 4)])
def test_filter_components_matches_scipy(min_area: int, keep: int) -> None:
    for i, m in enumerate([random_mask(p=0.4), random_mask(p=0.55)]):
        got, kept = core.filter_components(m, min_area, keep)
        ref = ref_filter(m, min_area, keep)
        assert_same(got, ref, f"component filter {i} (min {min_area}, keep {keep})")
        assert kept == ndi.label(ref, structure=np.ones((3, 3)))[1]


def test_pipeline_matches_reference_chain(images: dict[str, np.ndarray]) -> None:
    configs = [TissueConfig(), TissueConfig(keep_largest=1, max_hole_mm2=math.inf)]
    for name, rgb in images.items():
        for config in configs:
            params = _native_params(config, 8.0)
            got, info = core.tissue_mask(rgb, **params)
            assert_same(got, ref_pipeline(rgb, params), f"tissue mask of {name}")
            assert params["min_threshold"] <= info["threshold"] <= params["max_threshold"]


def test_kernels_reject_bad_buffers() -> None:
    with pytest.raises(TypeError, match="uint8"):
        core.dilate_disk(np.zeros((4, 4), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.erode_disk(random_mask()[:, ::2], 1)
    with pytest.raises(ValueError, match="connectivity"):
        core.label(random_mask(), 6)
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        core.tissue_background(np.zeros((4, 4, 4), dtype=np.uint8))


# ---- masks on real slides ----------------------------------------------------------------


# (file, slide mpp override, expected tissue fraction range)
REAL = [
    ("CMU-1-Small-Region.svs", None, (0.25, 0.6)),
    ("tcga-cr-7395-01a-01-ts1.svs", None, (0.5, 0.75)),
    ("multiframe_camelyon_challenge_image.dcm", None, (0.1, 0.4)),
    ("multi_frame_jpeg2000_camelyon_challenge_image.dcm", None, (0.15, 0.45)),
    ("skimage_ihc.png", 0.5, (0.95, 1.0)),
    ("paired/birl_mouse_lung_lesion/Izd2-29-041-w35_HE.jpg", None, (0.55, 0.95)),
    ("paired/birl_mouse_lung_lesion/Izd2-29-041-w35_proSPC.jpg", None, (0.55, 0.95)),
    ("paired/birl_rat_kidney/Rat-Kidney_HE.jpg", None, (0.5, 0.8)),
    ("paired/birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg", None, (0.5, 0.8)),
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


def test_blank_image_raises_no_tissue_naming_the_file(tmp_path: Path) -> None:
    blank = np.clip(RNG.normal(247, 2.0, size=(300, 400, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "blank_slide.png"
    cv2.imwrite(str(path), blank)
    with pytest.raises(NoTissueError, match="blank_slide.png"):
        hsafast.detect_tissue(hsafast.open_slide(path, mpp=0.5))


def test_artefacts_are_excluded(images: dict[str, np.ndarray]) -> None:
    rgb = images["kidney_ck"].copy()
    h, w = rgb.shape[:2]
    rgb[h // 2 - 8 : h // 2 + 8, 20:120] = (30, 160, 60)  # green ink on glass and tissue
    rgb[10:30, w - 60 : w - 10] = (20, 20, 25)  # black dirt on glass
    mask = detect_tissue_image(rgb, 8.0).mask
    assert not mask[10:30, w - 60 : w - 10].any()
    kept = detect_tissue_image(rgb, 8.0, TissueConfig(exclude_artefacts=False)).mask
    assert kept[12:28, w - 58 : w - 12].all()  # corners are rounded by the opening


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
    assert_same(back > 0, mask.mask, "mask PNG round trip")
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
        {"closing_um": -1},
        {"max_hole_mm2": -1},
        {"min_area_mm2": float("inf")},
        {"keep_largest": 0},
        {"black_level": 300},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(InvalidParameterError, match="TissueConfig"):
        TissueConfig(**kwargs)


def test_bad_image_input_names_the_slide(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="some.svs"):
        detect_tissue_image(np.zeros((5, 5), dtype=np.uint8), slide_path=tmp_path / "some.svs")
    with pytest.raises(InvalidParameterError, match="some.svs"):
        detect_tissue_image(random_rgb(), 0.001, TissueConfig(), slide_path="some.svs")


def test_same_mask_with_any_thread_count(images: dict[str, np.ndarray]) -> None:
    rgb = images["tcga"]
    params = _native_params(TissueConfig(), 8.0)
    before = core.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            core.set_num_threads(threads)
            results.append(np.asarray(core.tissue_mask(rgb, **params)[0]))
    finally:
        core.set_num_threads(before)
    for threads, mask in zip((2, 3), results[1:], strict=True):
        assert_same(mask, results[0], f"mask with {threads} threads vs 1")
