"""Cells from concentration maps: nuclear and membranous DAB positivity.

Both compartments start from nucleus-sized blobs, found the way a pathologist's
eye does at 20x: smooth the nuclear stain at the scale of a nucleus and take
local maxima at least one nucleus radius apart (a difference-of-Gaussians-free
LoG approximation that costs two separable filters and one maximum filter).

* Nuclear markers (Ki-67, P53): nuclei are blobs of hematoxylin + DAB (a
  DAB-positive nucleus carries little hematoxylin); a nucleus is graded by the
  mean DAB within 0.7 radius of its centre against the 1+/2+/3+ thresholds.
* Membranous markers (PD-L1): nuclei are blobs of hematoxylin alone; a cell is
  positive when DAB-positive pixels lie in at least ``ring_coverage`` of the
  circumference of a ring just outside its own nucleus (partial or complete
  membrane staining, as the tumour proportion score counts it); its grade is the
  mean DAB of the ring's stained pixels.

Clinical scores count tumour cells only (Ki-67 index, P53 pattern, PD-L1 TPS).
Without a trained classifier, cells are called tumour-like from the size and
width of their nucleus (a watershed basin of the nuclear stain, cut at half its
peak): carcinoma nuclei are large (>= ~50 um^2) and wide (>= ~5.5 um), while
lymphocytes are small and round (~30-45 um^2) and fibroblasts are thin spindles
(< ~5 um wide); a nucleus must also be about elliptical (touching nuclei merged into
one blob are not) and lie among other tumour-like nuclei. Setting the limits to zero
scores every detected cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from hsafast.errors import InvalidParameterError

if TYPE_CHECKING:
    from hsafast.stain.markers import Marker
    from hsafast.stain.vectors import StainMatrix

Engine = Literal["auto", "native", "python"]
ENGINES = ("auto", "native", "python")


@dataclass(frozen=True)
class CellConfig:
    """Cell detection parameters, in micrometres and log10 OD."""

    nucleus_radius_um: float = 3.5
    """Typical nucleus radius (7 um diameter at 20x-40x)."""
    min_nuclear_od: float = 0.15
    """Smoothed nuclear stain (OD) a blob centre must exceed."""
    min_contrast: float = 0.06
    """OD by which a blob centre must exceed its local background (an opening with
    a disk of four nucleus radii), so that stromal fibres and cytoplasm are not nuclei."""
    ring_um: float = 3.0
    """Width of the membrane ring outside the nucleus (the cytoplasm rim and membrane)."""
    ring_coverage: float = 0.4
    """Share of the circumference (10-degree sectors of the ring) that must hold DAB 1+
    for a membrane-positive cell: partial staining counts, as in the TPS, while the
    stretch of a stained neighbour's membrane that touches the ring does not."""
    tumour_min_area_um2: float = 50.0
    """Least nucleus area (um^2, at half the peak stain) of a tumour-like cell."""
    tumour_min_width_um: float = 5.5
    """Least nucleus width (minor axis, um) of a tumour-like cell."""
    tumour_min_fill: float = 0.85
    """Least ellipse fill (area / area of the moment ellipse) of a tumour-like nucleus:
    touching nuclei that merged into one blob are not elliptical."""
    tumour_min_neighbours: int = 2
    """Least number of other tumour-like cells within ``tumour_neighbour_um``."""
    tumour_neighbour_um: float = 25.0
    engine: Engine = "auto"
    """Which implementation :func:`detect_cells` runs: ``native`` (the C++ kernel),
    ``python`` (the NumPy/scikit-image reference it is tested against) or ``auto``
    (native when the extension provides it)."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidParameterError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        for name in ("nucleus_radius_um", "min_nuclear_od", "ring_um"):
            if not getattr(self, name) > 0:
                raise InvalidParameterError(f"{name} must be positive")
        if self.tumour_min_neighbours < 0 or not self.tumour_neighbour_um > 0:
            raise InvalidParameterError(
                "tumour neighbours: a count >= 0 within a positive distance"
            )
        for name in ("tumour_min_area_um2", "tumour_min_width_um", "tumour_min_fill"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise InvalidParameterError(f"{name} must be zero or positive")
        if not 0 < self.ring_coverage <= 1:
            raise InvalidParameterError("ring_coverage must be in (0, 1]")


@dataclass(frozen=True)
class Cells:
    """Cells of one tile: centres (x, y in tile pixels), DAB measure, grade 0-3, and
    nucleus area (um^2), width (um) and whether the cell is tumour-like."""

    xy: np.ndarray
    dab: np.ndarray
    grade: np.ndarray
    area_um2: np.ndarray | None = None
    width_um: np.ndarray | None = None
    tumour: np.ndarray | None = None
    """Tumour-like cells (the ones clinical scores count); None: all of them."""

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def positive(self, level: int = 1) -> np.ndarray:
        return self.grade >= level

    @property
    def scored(self) -> np.ndarray:
        """The cells a clinical score counts (tumour-like ones)."""
        if self.tumour is None:
            return np.ones(len(self), dtype=bool)
        return self.tumour


_SECTORS = 36  # 10-degree sectors of a membrane ring


def _grade(values: np.ndarray, thresholds: tuple[float, float, float]) -> np.ndarray:
    return np.searchsorted(np.asarray(thresholds), values, side="left").astype(np.int8)


def find_nuclei(
    nuclear: np.ndarray, radius_px: float, min_od: float, min_contrast: float = 0.0
) -> np.ndarray:
    """Centres (K x 2, x then y) of nucleus-sized blobs of a nuclear-stain map."""
    import cv2
    from scipy import ndimage

    sigma = max(radius_px / 2.0, 0.8)
    smooth = cv2.GaussianBlur(nuclear.astype(np.float32), (0, 0), sigma)
    size = max(3, round(radius_px * 1.5) | 1)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=size)) & (smooth > min_od)
    if min_contrast > 0:
        # a nucleus stands out from the tissue around it: the morphological opening
        # with a disk wider than a nucleus is the local background (stroma, cytoplasm)
        d = max(3, round(radius_px * 4) | 1)
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
        background = cv2.morphologyEx(smooth, cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_REFLECT)
        peaks &= smooth - background > min_contrast
    ys, xs = np.nonzero(peaks)
    if len(xs) > 1:  # flat-topped blobs give several equal maxima: keep one per blob
        lab, n = ndimage.label(peaks, structure=np.ones((3, 3)))
        idx = np.arange(1, n + 1)
        cy = ndimage.mean(ys, lab[ys, xs], idx) if n else np.empty(0)
        cx = ndimage.mean(xs, lab[ys, xs], idx) if n else np.empty(0)
        return np.stack([cx, cy], axis=1)
    return np.stack([xs, ys], axis=1).astype(np.float64)


def nucleus_shapes(
    nuclear: np.ndarray, xy: np.ndarray, radius_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area (pixels), width (minor-axis length, pixels) and ellipse fill of each nucleus.

    Each nucleus is its watershed basin of the lightly smoothed nuclear stain, cut
    at half the basin's peak (a full width at half maximum, which does not depend
    on how dark the stain is); width is the minor axis of the basin's
    second-moment ellipse (4 sqrt(smaller eigenvalue)); fill is the area over that
    ellipse's area (1 for an elliptical nucleus, ~0.85 or less for two touching ones).
    """
    import cv2
    from scipy import ndimage
    from skimage.segmentation import watershed

    n = len(xy)
    if n == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    h, w = nuclear.shape
    sm = cv2.GaussianBlur(nuclear.astype(np.float32), (0, 0), max(radius_px / 6.0, 0.7))
    peak = cv2.GaussianBlur(nuclear.astype(np.float32), (0, 0), max(radius_px / 2.0, 0.8))
    cx = np.clip(np.rint(xy[:, 0]).astype(np.intp), 0, w - 1)
    cy = np.clip(np.rint(xy[:, 1]).astype(np.intp), 0, h - 1)
    markers = np.zeros((h, w), np.int32)
    markers[cy, cx] = np.arange(1, n + 1)
    lab = watershed(-sm, markers, mask=(sm > 0.05) | (markers > 0))
    top = np.maximum(ndimage.maximum(sm, lab, np.arange(1, n + 1)), peak[cy, cx])
    level = np.concatenate([[np.inf], 0.5 * top]).astype(np.float32)
    lab = np.where(sm >= level[lab], lab, 0)
    count = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    yy, xx = np.indices((h, w), dtype=np.float64)
    flat = lab.ravel()

    def mean(v: np.ndarray) -> np.ndarray:
        s = np.bincount(flat, v.ravel(), minlength=n + 1)[1:]
        return np.divide(s, count, out=np.zeros(n), where=count > 0)

    mx, my = mean(xx), mean(yy)
    vxx = mean(xx * xx) - mx * mx
    vyy = mean(yy * yy) - my * my
    vxy = mean(xx * yy) - mx * my
    half = 0.5 * (vxx + vyy)
    disc = np.sqrt(np.maximum(half * half - (vxx * vyy - vxy * vxy), 0.0))
    small, large = np.maximum(half - disc, 0.0), half + disc
    # a filled ellipse has area 4 pi sqrt(l1 l2) for second moments l1, l2
    ellipse = 4.0 * np.pi * np.sqrt(small * large)
    fill = np.divide(count, ellipse, out=np.zeros(n), where=ellipse > 0)
    return count, 4.0 * np.sqrt(small), np.minimum(fill, 1.0)


def _tumour_like(
    nuclear: np.ndarray, xy: np.ndarray, r: float, mpp: float, cfg: CellConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    area, width, fill = nucleus_shapes(nuclear, xy, r)
    area_um2, width_um = area * mpp * mpp, width * mpp
    tumour = (area_um2 >= cfg.tumour_min_area_um2) & (width_um >= cfg.tumour_min_width_um)
    tumour &= fill >= cfg.tumour_min_fill
    if cfg.tumour_min_neighbours > 0 and tumour.any():
        # carcinoma grows in cohesive groups: a large nucleus alone among small
        # ones is more likely an activated lymphocyte or a pair of touching ones
        from scipy.spatial import cKDTree

        big = xy[tumour]
        counts = cKDTree(big).query_ball_point(
            big, cfg.tumour_neighbour_um / mpp, return_length=True
        )
        tumour[np.flatnonzero(tumour)] = counts - 1 >= cfg.tumour_min_neighbours
    return area_um2, width_um, tumour


def _sample(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    if len(xy) == 0:
        return np.empty(0, dtype=np.float64)
    x = np.clip(np.rint(xy[:, 0]).astype(int), 0, img.shape[1] - 1)
    y = np.clip(np.rint(xy[:, 1]).astype(int), 0, img.shape[0] - 1)
    return img[y, x].astype(np.float64)


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.float32)


def nuclear_cells(
    hema: np.ndarray,
    dab: np.ndarray,
    mpp: float,
    thresholds: tuple[float, float, float],
    config: CellConfig | None = None,
) -> Cells:
    """Nuclei graded by their mean DAB (nuclear markers)."""
    import cv2

    cfg = config or CellConfig()
    r = cfg.nucleus_radius_um / mpp
    nuclear = hema + dab
    xy = find_nuclei(nuclear, r, cfg.min_nuclear_od, cfg.min_contrast)
    k = _disk(max(0.7 * r, 1.0))
    mean_dab = cv2.filter2D(dab.astype(np.float32), -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)
    values = _sample(mean_dab, xy)
    area, width, tumour = _tumour_like(nuclear, xy, r, mpp, cfg)
    return Cells(xy, values, _grade(values, thresholds), area, width, tumour)


def membranous_cells(
    hema: np.ndarray,
    dab: np.ndarray,
    mpp: float,
    thresholds: tuple[float, float, float],
    config: CellConfig | None = None,
) -> Cells:
    """Cells graded by DAB in a ring around their nucleus (membranous markers).

    The ring starts just outside each cell's own nucleus (its equivalent radius
    from the measured area, or the configured radius where that is smaller) and
    is ``ring_um`` wide, so that it holds the membrane of small and large cells.
    """
    cfg = config or CellConfig()
    r = cfg.nucleus_radius_um / mpp
    xy = find_nuclei(hema, r, cfg.min_nuclear_od, cfg.min_contrast)
    area, width, tumour = _tumour_like(hema, xy, r, mpp, cfg)
    d = dab.astype(np.float32)
    hit = d > thresholds[0]
    n = len(xy)
    cov = np.zeros(n)
    intensity = np.zeros(n)
    r_in = 1.15 * np.maximum(np.sqrt(area / np.pi) / mpp, r)
    r_out = r_in + cfg.ring_um / mpp
    h, w = d.shape
    for i in range(n):
        reach = int(np.ceil(r_out[i]))
        cx, cy = round(float(xy[i, 0])), round(float(xy[i, 1]))
        x0, x1 = max(cx - reach, 0), min(cx + reach + 1, w)
        y0, y1 = max(cy - reach, 0), min(cy + reach + 1, h)
        yy, xx = np.ogrid[y0 - cy : y1 - cy, x0 - cx : x1 - cx]
        rr = xx * xx + yy * yy
        ring = (rr >= r_in[i] ** 2) & (rr <= r_out[i] ** 2)
        on = ring & hit[y0:y1, x0:x1]
        if not on.any():
            continue
        # share of the circumference stained: sectors holding a stained ring pixel
        yo, xo = np.nonzero(on)
        angle = np.arctan2(yo + (y0 - cy), xo + (x0 - cx))
        sector = ((angle + np.pi) * (_SECTORS / (2 * np.pi))).astype(np.intp) % _SECTORS
        cov[i] = len(np.unique(sector)) / _SECTORS
        intensity[i] = float(d[y0:y1, x0:x1][on].mean())
    positive = cov >= cfg.ring_coverage
    grade = np.where(positive, np.maximum(_grade(intensity, thresholds), 1), 0)
    return Cells(xy, intensity * positive, grade.astype(np.int8), area, width, tumour)


def detect_cells(
    tiles: np.ndarray,
    matrix: StainMatrix,
    mpp: float,
    marker: Marker | str,
    config: CellConfig | None = None,
) -> list[Cells]:
    """Cells of every tile of a batch (N x H x W x 3 uint8, or one H x W x 3 tile).

    The batched entry point of cell-level scoring: nuclei are found on the
    marker's nuclear stain and graded by its compartment (nuclear or membranous)
    against its DAB thresholds, at pixel size ``mpp`` (um/px). Cytoplasmic
    markers are scored on pixels and have no cells.
    """
    from hsafast.stain.deconvolution import concentrations
    from hsafast.stain.markers import get_marker

    cfg = config or CellConfig()
    m = get_marker(marker)
    if m.compartment not in ("nuclear", "membranous"):
        raise InvalidParameterError(
            f"marker {m.name!r} is {m.compartment}: it is scored on pixels, not cells"
        )
    if not (np.isfinite(mpp) and mpp > 0):
        raise InvalidParameterError(f"mpp must be a positive pixel size in um, got {mpp}")
    a = np.asarray(tiles)
    if a.dtype != np.uint8 or a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise InvalidParameterError(
            f"tiles must be uint8 (N, H, W, 3) or (H, W, 3), got {a.dtype} {a.shape}"
        )
    batch = a[None] if a.ndim == 3 else a
    h_idx, d_idx = matrix.index("hematoxylin"), matrix.index("dab")
    fn = nuclear_cells if m.compartment == "nuclear" else membranous_cells
    out = []
    for tile in batch:
        conc = concentrations(tile, matrix)
        out.append(fn(conc[..., h_idx], conc[..., d_idx], mpp, m.dab_thresholds, cfg))
    return out
