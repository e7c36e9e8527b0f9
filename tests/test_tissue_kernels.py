"""Tissue detection kernels: every native step against a NumPy/OpenCV/SciPy/scikit-image
reference, on random inputs and on the real images, and the whole chain against the same
chain built from those libraries."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import disk, remove_small_holes

import hsafast
from hsafast._native import core
from hsafast.tissue import OD_SCALE, PixelParams, TissueConfig, find_tissue, glass_visible

RNG = np.random.default_rng(20260126)
EIGHT = np.ones((3, 3))


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


@pytest.fixture(scope="module")
def images(data_dir: Path) -> dict[str, np.ndarray]:
    """Low-resolution RGB images of real slides: H&E, IHC, ink and coverslip edges."""
    files = {
        "tcga": ("tcga-cr-7395-01a-01-ts1.svs", None),
        "dicom_j2k": ("multi_frame_jpeg2000_camelyon_challenge_image.dcm", None),
        "ihc": ("skimage_ihc.png", 0.5),
        "mouse_prospc": ("paired/birl_mouse_lung_lesion/Izd2-29-041-w35_proSPC.jpg", None),
        "kidney_ck": ("paired/birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg", None),
    }
    out = {}
    for name, (rel, mpp) in files.items():
        with hsafast.open_slide(data_dir / rel, mpp=mpp) as slide:
            out[name] = slide.thumbnail(700)[0]
    return out


def random_rgb(h: int = 61, w: int = 83) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def random_mask(h: int = 97, w: int = 131, p: float = 0.45) -> np.ndarray:
    return (RNG.random((h, w)) < p).astype(np.uint8)


def background_of(rgb: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in core.tissue_background(rgb))  # type: ignore[return-value]


# ---- references ------------------------------------------------------------------------


def ref_background(rgb: np.ndarray, stride: int, floor: int = 200) -> np.ndarray:
    sample = rgb.reshape(-1, 3)[::stride]
    p99 = np.percentile(sample, 99, axis=0, method="inverted_cdf")
    return np.maximum(p99, floor).astype(np.int64)


def ref_channel_od(rgb: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Quantised OD per channel relative to the background (x 100, 0..255)."""
    od = np.log10((np.asarray(bg, np.float64) + 1) / (rgb.astype(np.float64) + 1))
    return np.minimum(255, np.rint(OD_SCALE * np.clip(od, 0, None))).astype(np.int64)


def ref_od(rgb: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return ref_channel_od(rgb, bg).max(axis=-1)


def ref_artefacts(rgb: np.ndarray, bg: np.ndarray, black_od: float, ink_od: float) -> np.ndarray:
    """The colour rules of csrc/core/tissue.hpp on the quantised ODs."""
    q = ref_channel_od(rgb, bg)
    r, g, b = q[..., 0], q[..., 1], q[..., 2]
    lo, hi = q.min(axis=-1), q.max(axis=-1)
    dense_od = math.ceil(ink_od * OD_SCALE - 1e-9)
    black = (lo >= math.ceil(black_od * OD_SCALE - 1e-9)) & (2 * lo >= hi)
    inky = ~black & (hi >= (dense_od + 2) // 3)
    blue = inky & (r > g) & (100 * b < 35 * r)
    green = inky & ~blue & (10 * g < 9 * np.minimum(r, b))
    red = inky & ~blue & ~green & (5 * r < g) & (4 * b > 3 * g)
    codes = np.zeros(r.shape, np.int64)
    codes[red] = 4
    codes[green] = 3
    codes[blue] = 2
    codes[(codes > 0) & (hi < dense_od)] = 5
    codes[black] = 1
    return codes


def ref_filter(
    mask: np.ndarray, min_area: int, keep_largest: int, thin_width: float = 0, thin_length: int = 0
) -> np.ndarray:
    labels, n = ndi.label(mask, structure=EIGHT)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    ok = area >= min_area
    if thin_length > 0:
        for i, box in enumerate(ndi.find_objects(labels)):
            h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
            if max(h, w) >= thin_length and area[i] <= thin_width * (h + w):
                ok[i] = False
    kept = np.flatnonzero(ok)
    if keep_largest > 0:
        kept = kept[np.argsort(-area[kept], kind="stable")][:keep_largest]
    return np.isin(labels, kept + 1)


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


def column_window(m: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel (y, x): set pixels of column x in rows [a[y], b[y]) (clamped)."""
    h = m.shape[0]
    prefix = np.vstack([np.zeros((1, m.shape[1]), np.int64), np.cumsum(m, axis=0)])
    a, b = np.clip(a, 0, h), np.clip(b, 0, h)
    return np.where((b > a)[:, None], prefix[b] - prefix[a], 0)


def ref_horizontal_lines(m: np.ndarray, r: int, length: int) -> np.ndarray:
    h, w = m.shape
    y = np.arange(h)
    near, far, most = 2 * r + 1, 3 * r + 2, (r + 2) // 3
    flanked = (
        (m > 0)
        & (column_window(m, y - far, y - near + 1) <= most)
        & (column_window(m, y + near, y + far + 1) <= most)
    )
    gathered = column_window(flanked, y - r, y + r + 1) > 0
    runs = np.zeros((h, w), bool)
    for row in range(h):
        edges = np.flatnonzero(np.diff(np.r_[0, gathered[row].astype(np.int8), 0]))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            if stop - start >= length:
                runs[row, start:stop] = True
    return flanked & (column_window(runs, y - r, y + r + 1) > 0)


def ref_straight_lines(m: np.ndarray, r: int, length: int) -> np.ndarray:
    b = max(1, r // 2)
    if b == 1:
        return ref_horizontal_lines(m, r, length) | ref_horizontal_lines(m.T, r, length).T
    h, w = m.shape
    hb, wb = -(-h // b), -(-w // b)
    padded = np.zeros((hb * b, wb * b), np.uint8)
    padded[:h, :w] = m > 0
    pooled = padded.reshape(hb, b, wb, b).max(axis=(1, 3))
    rb, lb = -(-r // b), length // b
    lines = ref_horizontal_lines(pooled, rb, lb) | ref_horizontal_lines(pooled.T, rb, lb).T
    return (m > 0) & lines[np.arange(h) // b][:, np.arange(w) // b]


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), disk(r).astype(np.uint8)) if r else mask


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), disk(r).astype(np.uint8)) if r else mask


def ref_artefact_mask(rgb: np.ndarray, bg: np.ndarray, config: TissueConfig, px: PixelParams):
    codes = ref_artefacts(rgb, bg, config.black_od, config.ink_od)
    labels, n = ndi.label(codes >= 2, structure=EIGHT)
    dense = np.bincount(labels[(codes >= 2) & (codes <= 4)], minlength=n + 1)
    dense[0] = 0
    ink = (dense >= px.ink_min_area)[labels]
    if ink.any():
        ink |= dilate(ink, px.ink_spray).astype(bool) & (codes >= 2)
    found = (ink | ref_filter(codes == 1, px.ink_min_area, 0)).astype(np.uint8)
    return dilate(found, px.ink_margin if found.any() else 0).astype(bool)


def ref_find_tissue(rgb: np.ndarray, mask_mpp: float, config: TissueConfig) -> np.ndarray:
    """The detection chain of hsafast.tissue.find_tissue, step by step from NumPy, SciPy
    and OpenCV."""
    h, w = rgb.shape[:2]
    px = PixelParams.of(config, mask_mpp, (h, w))
    stride = core.sample_stride(h * w)
    bg = ref_background(rgb, stride, floor=0)
    if not glass_visible(tuple(int(v) for v in bg), config):  # type: ignore[arg-type]
        bg = np.array([255, 255, 255])
        glass = False
    else:
        glass = True
    art = np.zeros((h, w), bool)
    if config.exclude_artefacts:
        art = ref_artefact_mask(rgb, bg, config, px)
    if glass:
        od = ref_od(rgb, bg)
        hist = np.bincount(od[~art].ravel()[::1], minlength=256) if stride == 1 else None
        if hist is None:  # the native histogram samples every stride-th pixel of the image
            flat, skip = od.ravel(), art.ravel()
            idx = np.arange(0, flat.size, stride)
            hist = np.bincount(flat[idx][~skip[idx]], minlength=256)
        otsu = ref_otsu(hist, np.log(np.arange(256) / 100 + 0.01))
        lo, hi = round(config.min_threshold * 100), round(config.max_threshold * 100)
        t = lo if otsu < 0 else min(max(otsu, lo), hi)
        if config.threshold is not None:
            t = round(config.threshold * 100)
        m = (od > t) & ~art
        if px.line_length:
            m &= ~ref_straight_lines(m.astype(np.uint8), px.line_half_width, px.line_length)
    else:
        m = ~art
    m = ref_filter(m, px.speck, 0).astype(np.uint8)
    if px.closing:
        m = erode(dilate(m, px.closing), px.closing) & ~art
    if px.opening:
        m = dilate(erode(m, px.opening), px.opening)
    m = ref_fill_holes(m, px.max_hole)
    return ref_filter(m, px.min_area, config.keep_largest or 0, px.line_width, px.line_length)


# ---- native kernels vs references ------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 3, 7])
def test_background_matches_numpy_percentile(stride: int, images: dict[str, np.ndarray]) -> None:
    for name, rgb in [("random", random_rgb()), *images.items()]:
        for floor in (0, 200):
            got = core.tissue_background(rgb, stride, 99.0, floor)
            assert_same(np.array(got), ref_background(rgb, stride, floor), f"background of {name}")


def test_od_map_matches_numpy(images: dict[str, np.ndarray]) -> None:
    for name, rgb in [("random", random_rgb()), *images.items()]:
        bg = background_of(rgb)
        assert_same(core.tissue_od_map(rgb, bg), ref_od(rgb, np.array(bg)), f"OD of {name}")


def test_od_histogram_and_threshold_match_od_map(images: dict[str, np.ndarray]) -> None:
    for name, rgb in [("random", random_rgb()), *images.items()]:
        bg = background_of(rgb)
        od = np.asarray(core.tissue_od_map(rgb, bg))
        skip = random_mask(*od.shape, p=0.3)
        for stride in (1, 5):
            hist = core.tissue_od_histogram(rgb, bg, None, stride)
            assert_same(hist, np.bincount(od.ravel()[::stride], minlength=256), f"{name} histogram")
            kept = od.ravel()[::stride][skip.ravel()[::stride] == 0]
            hist = core.tissue_od_histogram(rgb, bg, skip, stride)
            assert_same(hist, np.bincount(kept, minlength=256), f"{name} histogram with skip")
        for t in (0, 3, 6, 40):
            assert_same(core.tissue_od_threshold(rgb, bg, t), od > t, f"OD > {t} of {name}")


def test_histogram_matches_bincount() -> None:
    x = RNG.integers(0, 256, size=(123, 77), dtype=np.uint8)
    assert_same(core.tissue_histogram(x), np.bincount(x.ravel(), minlength=256), "histogram")


def test_otsu_matches_bruteforce_and_skimage(images: dict[str, np.ndarray]) -> None:
    from skimage.filters import threshold_otsu

    centers = np.log(np.arange(256) / 100 + 0.01)
    hists = [RNG.integers(0, 1000, size=256) for _ in range(5)]
    for rgb in images.values():
        hists.append(core.tissue_od_histogram(rgb, background_of(rgb)))
    for i, hist in enumerate(hists):
        k = core.otsu_index(hist, centers)
        assert k == ref_otsu(hist, centers), f"histogram {i}: native {k}"
        nz = np.flatnonzero(hist)
        lo, hi = nz[0], nz[-1] + 1  # scikit-image needs populated end bins
        sk = threshold_otsu(hist=(hist[lo:hi], centers[lo:hi]))
        assert centers[k] == pytest.approx(sk), f"histogram {i}: skimage {sk} vs {centers[k]}"
    assert core.otsu_index(np.eye(1, 256, 9, dtype=np.int64)[0] * 50, centers) == -1


@pytest.mark.parametrize(("black_od", "ink_od"), [(1.0, 0.3), (0.5, 0.1), (1.5, 0.8)])
def test_artefact_codes_match_numpy(
    black_od: float, ink_od: float, images: dict[str, np.ndarray]
) -> None:
    # random pixels reach every code; the real images add stains of every kind and ink
    seen: set[int] = set()
    for name, rgb in [("random", random_rgb(200, 300)), *images.items()]:
        bg = background_of(rgb)
        got = np.asarray(core.tissue_artefacts(rgb, bg, black_od, ink_od))
        assert_same(got, ref_artefacts(rgb, np.array(bg), black_od, ink_od), f"codes of {name}")
        seen |= set(np.unique(got).tolist())
    assert seen == {0, 1, 2, 3, 4, 5}


def test_artefact_mask_matches_reference(images: dict[str, np.ndarray]) -> None:
    config = TissueConfig()
    for name, rgb in [("random", random_rgb(200, 300)), *images.items()]:
        bg = background_of(rgb)
        for mpp in (8.0, 29.0):
            px = PixelParams.of(config, mpp, rgb.shape[:2])
            got, found = core.tissue_artefact_mask(
                rgb,
                bg,
                config.black_od,
                config.ink_od,
                px.ink_min_area,
                px.ink_spray,
                px.ink_margin,
            )
            ref = ref_artefact_mask(rgb, np.array(bg), config, px)
            assert_same(got, ref, f"artefact mask of {name} at {mpp} um/px")
            assert (found > 0) == bool(ref.any())


def test_squared_distance_matches_scipy() -> None:
    masks = [random_mask(), random_mask(p=0.02), random_mask(40, 1), random_mask(1, 40)]
    masks += [np.zeros((9, 7), np.uint8), np.ones((9, 7), np.uint8)]
    for i, m in enumerate(masks):
        for target in (True, False):
            source = m if target else 1 - m
            got = np.asarray(core.squared_distance(m, target))
            if source.any():
                ref = np.rint(ndi.distance_transform_edt(1 - source) ** 2).astype(np.int64)
                assert_same(got, ref, f"squared distance {i} (target {target})")
            else:
                assert (got == 2**31 - 1).all(), f"mask {i}: no target, every distance infinite"


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 8, 61, 75])
def test_disk_morphology_matches_opencv(radius: int, images: dict[str, np.ndarray]) -> None:
    kernel = disk(radius).astype(np.uint8)
    masks = [random_mask(), random_mask(40, 1), random_mask(1, 40), random_mask(p=0.9)]
    masks.append(random_mask(300, 280, p=0.01))
    for rgb in images.values():
        masks.append(np.asarray(core.tissue_od_threshold(rgb, background_of(rgb), 5)))
    for i, m in enumerate(masks):
        for method in ("auto", "rows", "distance"):
            what = f"mask {i} r{radius} ({method})"
            got = core.dilate_disk(m, radius, method)
            assert_same(got, cv2.dilate(m, kernel), "dilation " + what)
            assert_same(core.erode_disk(m, radius, method), cv2.erode(m, kernel), "erosion " + what)


def test_straight_lines_match_reference(images: dict[str, np.ndarray]) -> None:
    drawn = random_mask(160, 220, p=0.01)
    cv2.line(drawn, (3, 20), (215, 24), 1, 2)  # nearly along a row, and along a column
    cv2.line(drawn, (150, 5), (151, 150), 1, 3)
    cv2.circle(drawn, (60, 100), 25, 1, -1)
    cv2.line(drawn, (0, 100), (200, 100), 1, 1)  # a line into the disk
    masks = [drawn, random_mask(p=0.3)]
    for rgb in images.values():
        masks.append(np.asarray(core.tissue_od_threshold(rgb, background_of(rgb), 6)))
    for i, m in enumerate(masks):
        for r, length in ((1, 30), (3, 35), (5, 120), (12, 125)):
            got, found = core.straight_lines(m, r, length)
            ref = ref_straight_lines(m, r, length)
            assert_same(got, ref, f"straight lines of mask {i} (r {r}, length {length})")
            assert found == int(ref.sum())
    lines = np.asarray(core.straight_lines(drawn, 3, 35)[0])
    assert lines[18:27, 10:200].any(axis=0).all(), "the line along the rows"
    assert lines[30:140, 148:154].any(axis=1).all(), "the line along the columns"
    assert not lines[80:120, 40:80].any(), "the disk"
    assert lines[100, 90:140].all(), "the line reaching into the disk, outside it"


@pytest.mark.parametrize("connectivity", [4, 8])
def test_labels_match_scipy(connectivity: int, images: dict[str, np.ndarray]) -> None:
    structure = EIGHT if connectivity == 8 else None
    masks = [random_mask(), random_mask(p=0.6), (random_mask() * 255).astype(np.uint8)]
    for rgb in images.values():
        masks.append(np.asarray(core.tissue_od_threshold(rgb, background_of(rgb), 5)))
    for i, m in enumerate(masks):
        labels, area, boxes = core.label(m, connectivity)
        ref, n = ndi.label(m, structure=structure)
        assert_same(labels, ref, f"labels of mask {i}")
        assert_same(area, np.bincount(ref.ravel(), minlength=n + 1)[1:], f"areas of mask {i}")
        ref_boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndi.find_objects(ref)]
        assert_same(boxes, np.array(ref_boxes).reshape(-1, 4), f"boxes of mask {i}")


@pytest.mark.parametrize("max_area", [-1, 0, 1, 4, 30, 500])
def test_fill_holes_matches_scipy_and_skimage(max_area: int) -> None:
    for i, m in enumerate([random_mask(p=0.55), random_mask(p=0.7), random_mask(50, 3, 0.6)]):
        got = core.fill_holes(m, max_area)
        assert_same(got, ref_fill_holes(m, max_area), f"fill holes {i} (max {max_area})")


@pytest.mark.parametrize(
    ("min_area", "keep", "thin_width", "thin_length"),
    [
        *[(0, 0, 0, 0), (1, 0, 0, 0), (5, 0, 0, 0), (20, 0, 0, 0), (0, 1, 0, 0), (3, 4, 0, 0)],
        *[(0, 0, 0.6, 5), (2, 0, 1.5, 8), (0, 2, 3.0, 20)],  # with thin pieces dropped
    ],
)
def test_filter_components_matches_scipy(
    min_area: int, keep: int, thin_width: float, thin_length: int
) -> None:
    lines = np.zeros((97, 131), np.uint8)
    cv2.line(lines, (5, 5), (120, 9), 1, 1)  # a line, an L and a blob among random specks
    cv2.line(lines, (10, 90), (10, 40), 1, 2)
    cv2.line(lines, (10, 90), (80, 90), 1, 2)
    cv2.circle(lines, (70, 50), 12, 1, -1)
    for i, m in enumerate([random_mask(p=0.4), random_mask(p=0.55), lines | random_mask(p=0.02)]):
        got, kept = core.filter_components(m, min_area, keep, thin_width, thin_length)
        ref = ref_filter(m, min_area, keep, thin_width, thin_length)
        what = f"filter {i} (min {min_area}, keep {keep}, thin {thin_width}/{thin_length})"
        assert_same(got, ref, what)
        assert kept == ndi.label(ref, structure=EIGHT)[1]


CHAIN_CONFIGS = [
    TissueConfig(),
    TissueConfig(keep_largest=1, max_hole_mm2=math.inf),
    TissueConfig(exclude_artefacts=False, closing_um=24, threshold=0.05),
]


@pytest.mark.parametrize("config", CHAIN_CONFIGS, ids=["default", "largest", "plain"])
def test_chain_matches_reference(config: TissueConfig, images: dict[str, np.ndarray]) -> None:
    covered = np.full((120, 160, 3), (200, 150, 190), np.uint8) + random_rgb(120, 160) // 8
    for name, rgb in [*images.items(), ("covered", covered)]:
        for mpp in (8.0, 29.0):
            found = find_tissue(rgb, mpp, config)
            ref = ref_find_tissue(rgb, mpp, config)
            assert_same(found.mask, ref, f"tissue mask of {name} at {mpp} um/px")
            assert found.pieces == ndi.label(ref, structure=EIGHT)[1]


def test_kernels_reject_bad_buffers() -> None:
    with pytest.raises(TypeError, match="uint8"):
        core.dilate_disk(np.zeros((4, 4), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.erode_disk(random_mask()[:, ::2], 1)
    with pytest.raises(ValueError, match="method"):
        core.erode_disk(random_mask(), 1, "fast")
    with pytest.raises(ValueError, match="connectivity"):
        core.label(random_mask(), 6)
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        core.tissue_background(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="half_width"):
        core.straight_lines(random_mask(), 0, 10)
    with pytest.raises(ValueError, match="skip"):
        core.tissue_od_histogram(random_rgb(), (250, 250, 250), random_mask(5, 5))


def test_same_mask_with_any_thread_count(images: dict[str, np.ndarray]) -> None:
    before = core.get_num_threads()
    try:
        for name, rgb in images.items():
            results = []
            for threads in (1, 2, 3):
                core.set_num_threads(threads)
                results.append(find_tissue(rgb, 8.0, TissueConfig()).mask)
                results.append(np.asarray(core.squared_distance(results[-1].view(np.uint8))))
            for i in (2, 4):
                assert_same(results[i], results[0], f"{name}: mask with more threads vs 1")
                assert_same(results[i + 1], results[1], f"{name}: distances with more threads")
    finally:
        core.set_num_threads(before)
