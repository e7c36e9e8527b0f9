"""Colour deconvolution and fused per-tile pixel statistics (native, with NumPy references).

Optical density (OD) conventions, selected by ``scale``:

* ``"log10"`` (default): ``OD = -log10(max(I / 255, 1e-6))``, the usual
  Beer-Lambert absorbance (ImageJ's colour deconvolution and QuPath use it), in
  which the DAB thresholds of this package are expressed.
* ``"skimage"``: ``log(max(I / 255, 1e-6)) / log(1e-6)``, exactly what
  scikit-image's ``separate_stains`` / ``rgb2hed`` compute. It equals the log10
  OD divided by 6 (``log(1e-6) = -6 log(10)``), clamp included.

Concentrations are ``od_row @ stains_from_rgb``, clamped at zero as
scikit-image does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from hsafast.errors import InvalidParameterError
from hsafast.stain.vectors import HED, StainMatrix

Scale = Literal["log10", "skimage"]

#: Columns of :func:`pixel_stats` (counts, except the two sums).
STAT_NAMES = (
    "tissue",
    "dab_1",
    "dab_2",
    "dab_3",
    "hema",
    "saturated",
    "dab_sum",
    "hema_sum",
    "residual_sum",
)


def od_lut(scale: Scale = "log10") -> np.ndarray:
    """Optical density of each 8-bit intensity (256 float32, read-only)."""
    return _od_lut(scale)


@lru_cache(maxsize=4)
def _od_lut(scale: str) -> np.ndarray:
    v = np.maximum(np.arange(256, dtype=np.float64) / 255.0, 1e-6)
    if scale == "log10":
        lut = -np.log10(v)
    elif scale == "skimage":
        lut = np.log(v) / np.log(1e-6)
    else:
        raise InvalidParameterError(f"unknown OD scale {scale!r} (log10 or skimage)")
    out = lut.astype(np.float32)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class PixelThresholds:
    """Pixel-level thresholds, in log10 optical density."""

    dab: tuple[float, float, float] = (0.2, 0.4, 0.6)
    """DAB concentration above which a pixel is 1+, 2+ and 3+."""
    hematoxylin: float = 0.15
    """Hematoxylin concentration above which a pixel counts as hematoxylin area."""
    tissue_od: float = 0.15
    """Summed RGB OD above which a pixel is tissue (0.15 ~ mean intensity below 227)."""
    saturation: int = 2
    """A channel value at or below this is saturated (the OD is clipped)."""

    def __post_init__(self) -> None:
        d = tuple(float(x) for x in self.dab)
        if len(d) != 3 or not (0 < d[0] <= d[1] <= d[2]) or not np.all(np.isfinite(d)):
            raise InvalidParameterError(f"DAB thresholds must be 0 < 1+ <= 2+ <= 3+, got {d}")
        object.__setattr__(self, "dab", d)
        if not (np.isfinite(self.hematoxylin) and np.isfinite(self.tissue_od)):
            raise InvalidParameterError("hematoxylin and tissue thresholds must be finite")
        if not 0 <= self.saturation < 255:
            raise InvalidParameterError(f"saturation level must be 0-254, got {self.saturation}")


def _rgb(tiles: np.ndarray) -> np.ndarray:
    a = np.asarray(tiles)
    if a.dtype != np.uint8:
        raise InvalidParameterError(f"stain kernels take uint8 RGB, got {a.dtype}")
    if a.ndim < 2 or a.shape[-1] != 3:
        raise InvalidParameterError(f"the last axis must be RGB (3), got shape {a.shape}")
    return np.ascontiguousarray(a)


def concentrations(
    rgb: np.ndarray,
    matrix: StainMatrix = HED,
    *,
    scale: Scale = "log10",
    clamp: bool = True,
) -> np.ndarray:
    """Stain concentrations (..., 3 float32, in ``matrix.names`` order) of uint8 RGB pixels."""
    from hsafast._native import core

    inv = matrix.stains_from_rgb.astype(np.float32)
    return core.stain_concentrations(_rgb(rgb), od_lut(scale), inv, clamp)


def concentrations_reference(
    rgb: np.ndarray,
    matrix: StainMatrix = HED,
    *,
    scale: Scale = "log10",
    clamp: bool = True,
) -> np.ndarray:
    """NumPy float64 version of :func:`concentrations`."""
    v = np.maximum(_rgb(rgb).astype(np.float64) / 255.0, 1e-6)
    od = -np.log10(v) if scale == "log10" else np.log(v) / np.log(1e-6)
    c = od @ matrix.stains_from_rgb
    return np.maximum(c, 0) if clamp else c


def pixel_stats(
    tiles: np.ndarray,
    matrix: StainMatrix = HED,
    thresholds: PixelThresholds | None = None,
) -> np.ndarray:
    """Per-tile pixel statistics (N x 9 float64, columns :data:`STAT_NAMES`), one pass.

    ``tiles`` is (N, H, W, 3) or (H, W, 3) uint8. Counts are over tissue pixels;
    the DAB and hematoxylin sums are of zero-clamped concentrations over tissue
    pixels; the residual (third stain) sum is not clamped. Near zero on H-DAB
    slides, the residual is clearly positive on H&E, where eosin lands there.
    """
    from hsafast._native import core

    t = thresholds or PixelThresholds()
    a = _rgb(tiles)
    if a.ndim not in (3, 4):
        raise InvalidParameterError(f"tiles must be (N, H, W, 3) or (H, W, 3), got {a.shape}")
    inv = matrix.stains_from_rgb.astype(np.float32)
    return core.stain_tile_stats(
        a,
        od_lut(),
        inv,
        matrix.index("dab"),
        matrix.index("hematoxylin"),
        t.dab,
        t.hematoxylin,
        t.tissue_od,
        t.saturation,
    )


def pixel_stats_reference(
    tiles: np.ndarray,
    matrix: StainMatrix = HED,
    thresholds: PixelThresholds | None = None,
) -> np.ndarray:
    """NumPy version of :func:`pixel_stats`, with the kernel's float32 arithmetic."""
    t = thresholds or PixelThresholds()
    a = _rgb(tiles)
    a = a[None] if a.ndim == 3 else a
    lut = od_lut()
    inv = matrix.stains_from_rgb.astype(np.float32)
    d, h = matrix.index("dab"), matrix.index("hematoxylin")
    r = 3 - d - h
    od = lut[a]  # N,H,W,3 float32
    dab = (od[..., 0] * inv[0, d] + od[..., 1] * inv[1, d]) + od[..., 2] * inv[2, d]
    hema = (od[..., 0] * inv[0, h] + od[..., 1] * inv[1, h]) + od[..., 2] * inv[2, h]
    resid = (od[..., 0] * inv[0, r] + od[..., 1] * inv[1, r]) + od[..., 2] * inv[2, r]
    odsum = (od[..., 0] + od[..., 1]) + od[..., 2]
    tissue = odsum > np.float32(t.tissue_od)
    sat = (a <= t.saturation).any(axis=-1)
    out = np.zeros((a.shape[0], len(STAT_NAMES)))
    axes = (1, 2)
    out[:, 0] = tissue.sum(axes)
    for k in range(3):
        out[:, 1 + k] = (tissue & (dab > np.float32(t.dab[k]))).sum(axes)
    out[:, 4] = (tissue & (hema > np.float32(t.hematoxylin))).sum(axes)
    out[:, 5] = (tissue & sat).sum(axes)
    out[:, 6] = np.where(tissue, np.maximum(dab, 0), 0).sum(axes, dtype=np.float64)
    out[:, 7] = np.where(tissue, np.maximum(hema, 0), 0).sum(axes, dtype=np.float64)
    out[:, 8] = np.where(tissue, resid, 0).sum(axes, dtype=np.float64)
    return out


def eosin_share(tiles: np.ndarray, tissue_od: float = 0.15, step: int = 4) -> np.ndarray:
    """Per tile, the share of tissue pixels with eosin's colour (an H&E tile reads 0.2-1,
    hematoxylin-DAB none); every ``step``-th pixel of each row and column is looked at.

    The colour test (:func:`~hsafast.stain.vectors.eosin_coloured`) uses no stain matrix,
    so a slide's own hematoxylin and DAB, whatever their hue, never read as eosin; pixels
    too faint for a reliable hue (summed OD under ``HUE_MIN_OD``) never count as eosin.
    """
    from hsafast.stain.vectors import HUE_MIN_OD, eosin_coloured

    a = _rgb(tiles)
    if a.ndim == 3:
        a = a[None]
    lut = od_lut()
    sample = a[:, ::step, ::step]
    red, green, blue = (lut[sample[..., c]] for c in range(3))  # one gather per channel
    total = red + green + blue
    tissue = total > tissue_od
    pink = (total > HUE_MIN_OD) & eosin_coloured(red, green, blue)
    n = tissue.sum(axis=(1, 2))
    return np.divide(pink.sum(axis=(1, 2)), n, out=np.zeros(len(a)), where=n > 0)
