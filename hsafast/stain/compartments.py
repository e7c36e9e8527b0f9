"""Cells of IHC tiles: nuclei found, measured and graded for nuclear and membranous markers.

:func:`detect_cells` is the entry point (a batch of uint8 RGB tiles in, one
:class:`Cells` per tile out). It runs the native kernel (``csrc/core/cells*``); the
functions below are the NumPy/OpenCV/scikit-image reference the kernel is tested
against (``CellConfig(engine="python")``), and both compute the same thing:

* Nuclei are found the way a pathologist's eye does at 20x: the nuclear stain
  smoothed at half a nucleus radius, local maxima about 1.5 radii apart that stand
  out from their local background.
* Nuclear markers (Ki-67, P53): nuclei are blobs of hematoxylin + DAB (a
  DAB-positive nucleus carries little hematoxylin), graded by the mean DAB within
  0.7 radius of the centre against the 1+/2+/3+ thresholds.
* Membranous markers (PD-L1): nuclei are blobs of hematoxylin alone; a cell is
  positive when DAB-positive pixels lie in at least ``ring_coverage`` of the
  circumference of a ring just outside its own nucleus (partial or complete
  membrane staining, as the tumour proportion score counts it); its grade is the
  mean DAB of the ring's stained pixels.

Clinical scores count tumour cells only (Ki-67 index, P53 pattern, PD-L1 TPS).
Without a trained classifier, cells are called tumour-like from their nucleus,
measured as its watershed basin cut at half height above the local background:
large (>= 38 um^2, above small lymphocytes; a marker may ask for more, as p53 and
PD-L1 do), wide (>= 4 um, above spindle nuclei seen edge-on), about elliptical
(touching nuclei merged into one blob are not), and in a group of such nuclei: at
least two within 25 um, and most of the nuclei within 20 um like them (a gland or a
nest, not a large cell among lymphocytes); the sources of these limits are in
:class:`CellConfig`. Setting the limits to zero scores every detected cell.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from hsafast.errors import InvalidParameterError

if TYPE_CHECKING:
    from hsafast.stain.markers import Marker
    from hsafast.stain.vectors import StainMatrix

Engine = Literal["native", "python"]
ENGINES = ("native", "python")
Simd = Literal["auto", "baseline", "avx2"]
SIMD_PATHS = ("auto", "baseline", "avx2")


@dataclass(frozen=True)
class CellConfig:
    """Cell detection parameters, in micrometres and log10 OD."""

    nucleus_radius_um: float = 3.5
    """Typical nucleus radius (7 um diameter at 20x-40x)."""
    min_nuclear_od: float = 0.15
    """Smoothed nuclear stain (OD) a blob centre must exceed: the hematoxylin-area and
    tissue level of the pixel statistics (``QuantifyConfig``); a paler blob is no nucleus."""
    min_contrast: float = 0.06
    """OD by which a blob centre must exceed its local background (an opening with
    a disk of four nucleus radii), so that stromal fibres and cytoplasm are not nuclei."""
    ring_um: float = 3.0
    """Width of the membrane ring outside the nucleus (the cytoplasm rim and membrane)."""
    ring_coverage: float = 0.4
    """Share of the circumference (10-degree sectors of the ring) that must hold DAB 1+
    for a membrane-positive cell: partial staining counts, as in the TPS, while the
    stretch of a stained neighbour's membrane that touches the ring does not."""
    tumour_min_area_um2: float = 38.0
    """Least nucleus area (um^2, cut at half height above the local background) of a
    tumour-like cell. Small lymphocyte nuclei measure 27-29 um^2 (SD 2-3) in sections
    (normal mantle-zone cells of reactive tonsil: Baek et al., Korean J Hematol 2010;
    45:193-6), so 38 um^2 lies three SD above them; carcinoma nuclei are larger:
    44 um^2 on average in low-grade and 72 um^2 in high-grade breast DCIS (Mod Pathol
    2001;14:937-41, doi:10.1038/modpathol.3880415), 97-106 um^2 in colorectal
    carcinoma (Buhmeida et al., Anticancer Res 2006;26:455-62)."""
    tumour_min_width_um: float = 4.0
    """Least nucleus width (minor axis, um) of a tumour-like cell: above the thickness of
    flattened spindle nuclei seen edge-on, 2.7 +- 0.7 um (twice the smallest semi-axis,
    1.36 +- 0.34 um, of endothelial nuclei reconstructed from serial sections:
    Greeley, Crapo and Vollmer, J Microsc 1978;114:31-9), by two SD; a small lymphocyte
    nucleus of 28 um^2 is 6 um across, so width alone does not exclude lymphocytes."""
    tumour_min_fill: float = 0.85
    """Least ellipse fill (area / area of the moment ellipse) of a tumour-like nucleus.
    Geometry, not a fitted number: any filled ellipse fills 1; two equal round nuclei
    merged into one blob fill 0.894 when they just touch, and 0.85 once a gap of 13 %
    of their radius lies between them (bridged by the blur), so merged pairs with a
    waist are not counted as one large nucleus."""
    tumour_min_neighbours: int = 2
    """Least number of other tumour-like cells within ``tumour_neighbour_um``:
    carcinoma grows in cohesive groups, so a lone large nucleus among small ones is
    more often an activated lymphocyte or a macrophage."""
    tumour_neighbour_um: float = 25.0
    """Radius of that neighbourhood: about two carcinoma cell diameters."""
    tumour_min_group_share: float = 0.5
    """Least share of the detected nuclei within ``tumour_group_um`` that pass the size
    and shape tests too: a tumour cell lies in a gland or nest of its kind, so most
    nuclei around it are large (intraepithelial lymphocytes are a minority among
    carcinoma cells, a few % of them; Salgado et al., Ann Oncol 2015;26:259-71), while
    a large immune or stromal cell lies among small lymphocytes and spindles. 0.5 is
    the plain majority, not a fitted figure (``python -m bench calibrate cells``
    prints the share it leaves of each cell type)."""
    tumour_group_um: float = 20.0
    """Radius of that group: the nuclei next to a cell and the next ring out (carcinoma
    cells 10-15 um across; columnar nuclei of a gland 5-6 um apart)."""
    engine: Engine = "native"
    """Which implementation :func:`detect_cells` runs: ``native`` (the C++ kernel) or
    ``python`` (the NumPy/OpenCV/scikit-image reference it is tested against)."""
    simd: Simd = "auto"
    """SIMD path of the native filters: ``auto`` (the widest this CPU runs),
    ``baseline`` or ``avx2``; the paths give identical results (tests force each)."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidParameterError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.simd not in SIMD_PATHS:
            raise InvalidParameterError(f"simd must be one of {SIMD_PATHS}, got {self.simd!r}")
        for name in ("nucleus_radius_um", "min_nuclear_od", "ring_um"):
            if not getattr(self, name) > 0:
                raise InvalidParameterError(f"{name} must be positive")
        if not self.tumour_neighbour_um > 0:
            raise InvalidParameterError("tumour_neighbour_um must be positive")
        if not self.tumour_group_um > 0:
            raise InvalidParameterError("tumour_group_um must be positive")
        if not 0 <= self.tumour_min_group_share <= 1:
            raise InvalidParameterError("tumour_min_group_share must lie in [0, 1]")
        if self.tumour_min_neighbours < 0:
            raise InvalidParameterError("tumour_min_neighbours must be zero or positive")
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
    fill: np.ndarray | None = None
    """Share of its moment ellipse each nucleus fills (1 for an ellipse)."""

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
_MASK_MIN_OD = 0.05  # no pixel fainter than this belongs to a nucleus


@dataclass(frozen=True)
class _Scales:
    """Pixel geometry derived from the nucleus radius; both engines use these numbers."""

    radius: float
    detect_sigma: float
    """Gaussian of the detection map: half a radius."""
    shape_sigma: float
    """Gaussian of the map nuclei are measured on: a quarter radius (0.9 um by default),
    wide enough to average chromatin clumps and nucleoli into the nucleus's mean
    stain, narrow next to a nucleus, so the half-maximum contour stays on its edge."""
    peak_window: int
    """Odd side of the square window a centre is the maximum of (~1.5 radii)."""
    background_diameter: int
    """Odd diameter, in pixels of the half-resolution map, of the disk of the background
    opening (~4 radii: 2 radii at half resolution)."""
    mean_radius: float
    """Radius of the disk a nucleus's DAB is averaged over (0.7 radius)."""
    reach: float
    """Farthest a nucleus extends from its centre (3 radii: 21 um across by default)."""


def _scales(radius_px: float) -> _Scales:
    r = float(radius_px)
    return _Scales(
        radius=r,
        detect_sigma=max(r / 2.0, 0.8),
        shape_sigma=max(r / 4.0, 0.7),
        peak_window=max(3, round(r * 1.5) | 1),
        background_diameter=max(3, round(r * 2) | 1),
        mean_radius=max(0.7 * r, 1.0),
        reach=3.0 * r,
    )


def _grade(values: np.ndarray, thresholds: tuple[float, float, float]) -> np.ndarray:
    return np.searchsorted(np.asarray(thresholds), values, side="left").astype(np.int8)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(np.asarray(image, dtype=np.float32), (0, 0), sigma)


def _background(smooth: np.ndarray, diameter: int) -> np.ndarray:
    """The local background of a nucleus: a morphological opening with a disk wider
    than a nucleus (what is left of stroma and cytoplasm once nuclei are removed).

    It varies over tens of micrometres, so it is computed on every other pixel of
    the detection map (smoothed at half a nucleus radius already) and read back
    from the nearest of them: a quarter of the pixels, an eighth of the work.
    """
    import cv2

    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))
    half = np.ascontiguousarray(smooth[::2, ::2])
    opened = cv2.morphologyEx(half, cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_REFLECT)
    full = np.repeat(np.repeat(opened, 2, axis=0), 2, axis=1)
    return full[: smooth.shape[0], : smooth.shape[1]]


def _centres(
    smooth: np.ndarray, background: np.ndarray, window: int, min_od: float, min_contrast: float
) -> np.ndarray:
    from scipy import ndimage

    peaks = (smooth == ndimage.maximum_filter(smooth, size=window)) & (smooth > min_od)
    if min_contrast > 0:  # stromal fibres and cytoplasm do not stand out like a nucleus
        peaks &= smooth - background > min_contrast
    ys, xs = np.nonzero(peaks)
    if len(xs) > 1:  # flat-topped blobs give several equal maxima: keep one per blob
        lab, n = ndimage.label(peaks, structure=np.ones((3, 3)))
        idx = np.arange(1, n + 1)
        cy = ndimage.mean(ys, lab[ys, xs], idx)
        cx = ndimage.mean(xs, lab[ys, xs], idx)
        return np.stack([cx, cy], axis=1)
    return np.stack([xs, ys], axis=1).astype(np.float64)


def find_nuclei(
    nuclear: np.ndarray, radius_px: float, min_od: float, min_contrast: float = 0.0
) -> np.ndarray:
    """Centres (K x 2, x then y) of nucleus-sized blobs of a nuclear-stain map."""
    s = _scales(radius_px)
    smooth = _blur(nuclear, s.detect_sigma)
    background = _background(smooth, s.background_diameter)
    return _centres(smooth, background, s.peak_window, min_od, min_contrast)


def _pixels(xy: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    cx = np.clip(np.rint(xy[:, 0]).astype(np.intp), 0, shape[1] - 1)
    cy = np.clip(np.rint(xy[:, 1]).astype(np.intp), 0, shape[0] - 1)
    return cx, cy


def nucleus_shapes(
    nuclear: np.ndarray,
    xy: np.ndarray,
    radius_px: float,
    *,
    smooth: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area (pixels), width (minor-axis length, pixels) and ellipse fill of each nucleus.

    Each nucleus is its watershed basin of the lightly smoothed nuclear stain, cut
    at half its height above the local background (a full width at half maximum
    that depends neither on how dark the stain is nor on how much stain the
    tissue around carries; a cut at half the peak from zero OD would reach out
    into stained cytoplasm and roughly double the area of a small nucleus).
    Width is the minor axis of the kept pixels' second-moment ellipse
    (4 sqrt(smaller eigenvalue)); fill is the area over that ellipse's area (1 for
    an elliptical nucleus, ~0.89 or less for two round ones seen as one blob).
    ``smooth`` and ``background`` are the detection map and its opening, when the
    caller has them already.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    n = len(xy)
    if n == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    s = _scales(radius_px)
    h, w = nuclear.shape
    sm = _blur(nuclear, s.shape_sigma)
    smooth = _blur(nuclear, s.detect_sigma) if smooth is None else smooth
    background = _background(smooth, s.background_diameter) if background is None else background
    cx, cy = _pixels(xy, nuclear.shape)
    peak = smooth[cy, cx].astype(np.float64)
    bg = background[cy, cx].astype(np.float64)
    markers = np.zeros((h, w), np.int32)
    markers[cy, cx] = np.arange(1, n + 1)
    # Flood only where a nucleus can be: at or above the lowest level of the seeds
    # within reach (each seed's level lies at least halfway from its background
    # to its peak, and no nucleus extends further than `reach` from its centre).
    # (a basin holds its seed pixel, so its maximum is at least the stain there)
    lower = bg + 0.5 * (np.maximum(peak, sm[cy, cx]) - bg)
    floor = np.full((h, w), np.inf)
    r = int(np.floor(s.reach))
    for x, y, low in zip(cx, cy, lower, strict=True):
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, h), max(x - r, 0), min(x + r + 1, w)
        dy, dx = np.ogrid[y0 - y : y1 - y, x0 - x : x1 - x]
        near = dx * dx + dy * dy <= s.reach * s.reach
        np.minimum(floor[y0:y1, x0:x1], np.where(near, low, np.inf), out=floor[y0:y1, x0:x1])
    mask = ((sm > _MASK_MIN_OD) & (sm >= floor)) | (markers > 0)
    lab = watershed(-sm, markers, mask=mask)
    top = np.maximum(ndimage.maximum(sm, lab, np.arange(1, n + 1)), peak)
    level = np.concatenate([[np.inf], bg + 0.5 * (top - bg)]).astype(np.float32)
    lab = np.where(sm >= level[lab], lab, 0)
    count = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    yy, xx = np.indices((h, w), dtype=np.float64)
    flat = lab.ravel()

    def mean(v: np.ndarray) -> np.ndarray:
        total = np.bincount(flat, v.ravel(), minlength=n + 1)[1:]
        return np.divide(total, count, out=np.zeros(n), where=count > 0)

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


def _tumour_rule(
    xy: np.ndarray, area_um2: np.ndarray, width_um: np.ndarray, fill: np.ndarray, mpp: float,
    cfg: CellConfig,
) -> np.ndarray:  # fmt: skip
    tumour = (area_um2 >= cfg.tumour_min_area_um2) & (width_um >= cfg.tumour_min_width_um)
    tumour &= fill >= cfg.tumour_min_fill
    by_count, by_share = cfg.tumour_min_neighbours > 0, cfg.tumour_min_group_share > 0
    if not (by_count or by_share) or not tumour.any():
        return tumour
    # carcinoma grows in cohesive groups: a large nucleus alone among small ones is
    # more likely an activated lymphocyte, a macrophage or a pair of touching nuclei
    from scipy.spatial import cKDTree

    big = xy[tumour]
    keep = np.ones(len(big), bool)
    like = cKDTree(big)
    if by_count:
        near = like.query_ball_point(big, cfg.tumour_neighbour_um / mpp, return_length=True)
        keep &= near - 1 >= cfg.tumour_min_neighbours
    if by_share:
        radius = cfg.tumour_group_um / mpp
        like_group = like.query_ball_point(big, radius, return_length=True) - 1
        all_group = cKDTree(xy).query_ball_point(big, radius, return_length=True) - 1
        keep &= like_group.astype(np.float64) >= cfg.tumour_min_group_share * all_group
    tumour[np.flatnonzero(tumour)] = keep
    return tumour


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.float32)


def _nuclei(
    nuclear: np.ndarray, mpp: float, cfg: CellConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, _Scales]:
    """Centres, then area (um^2), width (um), fill and tumour-likeness of each nucleus."""
    s = _scales(cfg.nucleus_radius_um / mpp)
    smooth = _blur(nuclear, s.detect_sigma)
    background = _background(smooth, s.background_diameter)
    xy = _centres(smooth, background, s.peak_window, cfg.min_nuclear_od, cfg.min_contrast)
    area, width, fill = nucleus_shapes(nuclear, xy, s.radius, smooth=smooth, background=background)
    area_um2, width_um = area * mpp * mpp, width * mpp
    return xy, area_um2, width_um, fill, _tumour_rule(xy, area_um2, width_um, fill, mpp, cfg), s


def nuclear_cells(
    hema: np.ndarray,
    dab: np.ndarray,
    mpp: float,
    thresholds: tuple[float, float, float],
    config: CellConfig | None = None,
) -> Cells:
    """Nuclei graded by their mean DAB (nuclear markers); the NumPy/OpenCV reference."""
    import cv2

    cfg = config or CellConfig()
    xy, area, width, fill, tumour, s = _nuclei(hema + dab, mpp, cfg)
    k = _disk(s.mean_radius)
    mean_dab = cv2.filter2D(
        np.asarray(dab, np.float32), -1, k / k.sum(), borderType=cv2.BORDER_REFLECT
    )
    cx, cy = _pixels(xy, mean_dab.shape)
    values = mean_dab[cy, cx].astype(np.float64)
    return Cells(xy, values, _grade(values, thresholds), area, width, tumour, fill)


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
    The NumPy reference of the native kernel.
    """
    cfg = config or CellConfig()
    xy, area, width, fill, tumour, s = _nuclei(hema, mpp, cfg)
    d = np.asarray(dab, np.float32)
    hit = d > thresholds[0]
    n = len(xy)
    cov = np.zeros(n)
    intensity = np.zeros(n)
    r_in = 1.15 * np.maximum(np.sqrt(area / np.pi) / mpp, s.radius)
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
        intensity[i] = float(d[y0:y1, x0:x1][on].astype(np.float64).mean())
    positive = cov >= cfg.ring_coverage
    grade = np.where(positive, np.maximum(_grade(intensity, thresholds), 1), 0)
    return Cells(xy, intensity * positive, grade.astype(np.int8), area, width, tumour, fill)


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
    against its DAB thresholds, at pixel size ``mpp`` (um/px). The native kernel
    spreads the tiles over threads with the GIL released; ``config.engine =
    "python"`` runs the reference instead (one tile at a time). Cytoplasmic
    markers are scored on pixels and have no cells.
    """
    from hsafast.stain.markers import get_marker

    cfg = config or CellConfig()
    m = get_marker(marker)
    if 0 < cfg.tumour_min_area_um2 < m.tumour_min_area_um2:  # the marker asks for larger nuclei
        cfg = replace(cfg, tumour_min_area_um2=m.tumour_min_area_um2)
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
    batch = np.ascontiguousarray(a[None] if a.ndim == 3 else a)
    if cfg.engine == "python":
        return _detect_reference(batch, matrix, mpp, m, cfg)
    return _detect_native(batch, matrix, mpp, m, cfg)


def _detect_reference(
    batch: np.ndarray, matrix: StainMatrix, mpp: float, m: Marker, cfg: CellConfig
) -> list[Cells]:
    from hsafast.stain.deconvolution import concentrations

    h_idx, d_idx = matrix.index("hematoxylin"), matrix.index("dab")
    fn = nuclear_cells if m.compartment == "nuclear" else membranous_cells
    out = []
    for tile in batch:
        conc = concentrations(tile, matrix)
        out.append(fn(conc[..., h_idx], conc[..., d_idx], mpp, m.dab_thresholds, cfg))
    return out


def _detect_native(
    batch: np.ndarray, matrix: StainMatrix, mpp: float, m: Marker, cfg: CellConfig
) -> list[Cells]:
    from hsafast._native import core
    from hsafast.stain.deconvolution import od_lut

    s = _scales(cfg.nucleus_radius_um / mpp)
    counts, xy, dab, grade, area, width, fill, tumour = core.cells_detect(
        batch,
        od_lut(),
        matrix.stains_from_rgb.astype(np.float32),
        matrix.index("hematoxylin"),
        matrix.index("dab"),
        m.compartment == "membranous",
        detect_sigma=s.detect_sigma,
        shape_sigma=s.shape_sigma,
        peak_window=s.peak_window,
        background_diameter=s.background_diameter,
        mean_radius=s.mean_radius,
        radius=s.radius,
        reach=s.reach,
        min_od=cfg.min_nuclear_od,
        min_contrast=cfg.min_contrast,
        mask_min=_MASK_MIN_OD,
        thresholds=m.dab_thresholds,
        mpp=mpp,
        min_area_um2=cfg.tumour_min_area_um2,
        min_width_um=cfg.tumour_min_width_um,
        min_fill=cfg.tumour_min_fill,
        min_neighbours=cfg.tumour_min_neighbours,
        neighbour_px=cfg.tumour_neighbour_um / mpp,
        min_group_share=cfg.tumour_min_group_share,
        group_px=cfg.tumour_group_um / mpp,
        ring_px=cfg.ring_um / mpp,
        ring_coverage=cfg.ring_coverage,
        simd=cfg.simd,
    )
    cuts = np.cumsum(counts)[:-1]
    parts = [np.split(a, cuts) for a in (xy, dab, grade, area, width, tumour, fill)]
    return [Cells(*fields) for fields in zip(*parts, strict=True)]
