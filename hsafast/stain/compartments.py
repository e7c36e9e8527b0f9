"""Cells from concentration maps: nuclear and membranous DAB positivity.

Both compartments start from nucleus-sized blobs, found the way a pathologist's
eye does at 20x: smooth the nuclear stain at the scale of a nucleus and take
local maxima at least one nucleus radius apart (a difference-of-Gaussians-free
LoG approximation that costs two separable filters and one maximum filter).

* Nuclear markers (Ki-67, P53): nuclei are blobs of hematoxylin + DAB (a
  DAB-positive nucleus carries little hematoxylin); a nucleus is graded by the
  mean DAB within 0.7 radius of its centre against the 1+/2+/3+ thresholds.
* Membranous markers (PD-L1): nuclei are blobs of hematoxylin alone; a cell is
  positive when DAB-positive pixels cover at least ``ring_coverage`` of a ring
  just outside the nucleus (partial or complete membrane staining, as the
  tumour proportion score counts it); its grade is the ring's upper-quartile DAB.

There is no tumour/stroma classifier: every detected cell counts (so a TPS here
is over all cells), which is documented in docs/stain.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsafast.errors import InvalidParameterError


@dataclass(frozen=True)
class CellConfig:
    """Cell detection parameters, in micrometres and log10 OD."""

    nucleus_radius_um: float = 3.5
    """Typical nucleus radius (7 um diameter at 20x-40x)."""
    min_nuclear_od: float = 0.15
    """Smoothed nuclear stain (OD) a blob centre must exceed."""
    ring_um: float = 2.5
    """Width of the membrane ring outside the nucleus."""
    ring_coverage: float = 0.15
    """Share of the ring that must be DAB 1+ for a membrane-positive cell."""

    def __post_init__(self) -> None:
        for name in ("nucleus_radius_um", "min_nuclear_od", "ring_um"):
            if not getattr(self, name) > 0:
                raise InvalidParameterError(f"{name} must be positive")
        if not 0 < self.ring_coverage <= 1:
            raise InvalidParameterError("ring_coverage must be in (0, 1]")


@dataclass(frozen=True)
class Cells:
    """Cells of one tile: centres (x, y in tile pixels), DAB measure and grade 0-3."""

    xy: np.ndarray
    dab: np.ndarray
    grade: np.ndarray

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def positive(self, level: int = 1) -> np.ndarray:
        return self.grade >= level


def _grade(values: np.ndarray, thresholds: tuple[float, float, float]) -> np.ndarray:
    return np.searchsorted(np.asarray(thresholds), values, side="left").astype(np.int8)


def find_nuclei(nuclear: np.ndarray, radius_px: float, min_od: float) -> np.ndarray:
    """Centres (K x 2, x then y) of nucleus-sized blobs of a nuclear-stain map."""
    import cv2
    from scipy import ndimage

    sigma = max(radius_px / 2.0, 0.8)
    smooth = cv2.GaussianBlur(nuclear.astype(np.float32), (0, 0), sigma)
    size = max(3, round(radius_px * 1.5) | 1)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=size)) & (smooth > min_od)
    ys, xs = np.nonzero(peaks)
    if len(xs) > 1:  # flat-topped blobs give several equal maxima: keep one per blob
        lab, n = ndimage.label(peaks, structure=np.ones((3, 3)))
        idx = np.arange(1, n + 1)
        cy = ndimage.mean(ys, lab[ys, xs], idx) if n else np.empty(0)
        cx = ndimage.mean(xs, lab[ys, xs], idx) if n else np.empty(0)
        return np.stack([cx, cy], axis=1)
    return np.stack([xs, ys], axis=1).astype(np.float64)


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
    xy = find_nuclei(hema + dab, r, cfg.min_nuclear_od)
    k = _disk(max(0.7 * r, 1.0))
    mean_dab = cv2.filter2D(dab.astype(np.float32), -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)
    values = _sample(mean_dab, xy)
    return Cells(xy, values, _grade(values, thresholds))


def membranous_cells(
    hema: np.ndarray,
    dab: np.ndarray,
    mpp: float,
    thresholds: tuple[float, float, float],
    config: CellConfig | None = None,
) -> Cells:
    """Cells graded by DAB in a ring around their nucleus (membranous markers)."""
    import cv2

    cfg = config or CellConfig()
    r = cfg.nucleus_radius_um / mpp
    xy = find_nuclei(hema, r, cfg.min_nuclear_od)
    outer = r * 1.15 + cfg.ring_um / mpp
    ring = _disk(outer)
    inner = _disk(r * 1.15)
    pad = (ring.shape[0] - inner.shape[0]) // 2
    ring[pad : pad + inner.shape[0], pad : pad + inner.shape[1]] -= inner
    ring /= ring.sum()
    d = dab.astype(np.float32)
    coverage = cv2.filter2D(
        (d > thresholds[0]).astype(np.float32), -1, ring, borderType=cv2.BORDER_REFLECT
    )
    # Intensity of the stained part of the ring: mean DAB over the ring's positive pixels.
    stained = cv2.filter2D(
        np.where(d > thresholds[0], d, 0).astype(np.float32),
        -1,
        ring,
        borderType=cv2.BORDER_REFLECT,
    )
    cov = _sample(coverage, xy)
    intensity = _sample(stained, xy) / np.maximum(cov, 1e-6)
    grade = np.where(cov >= cfg.ring_coverage, np.maximum(_grade(intensity, thresholds), 1), 0)
    return Cells(xy, intensity * (cov >= cfg.ring_coverage), grade.astype(np.int8))
