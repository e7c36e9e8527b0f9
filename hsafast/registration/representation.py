"""Stain-agnostic images of a section, so that H&E and IHC can be compared.

H&E and IHC differ in colour but not in where tissue is: total optical density
(OD summed over RGB) is high wherever there is tissue, whatever dye stained it.
From it we derive three images, each for one stage:

* ``od`` (blurred in the coarse search): where the tissue is, for the rotation
  and flip search;
* ``edges``: gradient magnitude of the lightly blurred OD, i.e. tissue borders
  and air spaces, for the affine refinement (it ignores how strongly a stain
  colours a region, which differs between H&E and IHC);
* ``structure``: OD binarised at a quantile of the tissue's OD (dense tissue
  versus lumen), for the non-rigid stage, whose optical flow needs equal brightness on both
  sides.

The tissue mask is the one detector's (``hsafast.tissue``) on the working image, so
the tile grid and the registration's quality checks agree about what tissue is.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hsafast.errors import NoTissueError
from hsafast.slides.base import Slide
from hsafast.tissue import TissueConfig, detect_tissue_image

#: Total OD (natural log, summed over RGB) above which a pixel counts toward the
#: tissue's OD quantiles in ``structure_image``.
MIN_TISSUE_OD = 0.15


@dataclass(frozen=True)
class Section:
    """One slide at the working resolution, with its stain-agnostic images."""

    rgb: np.ndarray  #: (H, W, 3) uint8 working image
    od: np.ndarray  #: (H, W) float32 total optical density, background near 0
    tissue: np.ndarray  #: (H, W) bool tissue mask
    scale: tuple[float, float]  #: level-0 pixels per working pixel along x and y
    mpp: float  #: working pixel size, micrometres

    @property
    def shape(self) -> tuple[int, int]:
        return self.od.shape[0], self.od.shape[1]

    @property
    def tissue_fraction(self) -> float:
        return float(self.tissue.mean())

    def to_level0(self) -> np.ndarray:
        """3x3 matrix from working pixel indices to level-0 pixel indices."""
        return scale_matrix(*self.scale)


def scale_matrix(sx: float, sy: float) -> np.ndarray:
    """Pixel-index map of a resize by (sx, sy): pixel centres stay pixel centres."""
    return np.array([[sx, 0.0, (sx - 1.0) / 2.0], [0.0, sy, (sy - 1.0) / 2.0], [0.0, 0.0, 1.0]])


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Total optical density, with the glass level (a low percentile) subtracted."""
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0).sum(axis=2)
    background = min(float(np.percentile(od, 1)), 0.3)
    return np.maximum(od - background, 0.0).astype(np.float32)


def tissue_mask(
    rgb: np.ndarray, mpp: float | None = None, config: TissueConfig | None = None
) -> np.ndarray:
    """The shared detector's tissue mask of a working image (bool), all False when it
    finds no tissue (the registration's input check then refuses the pair).

    ``mpp`` is the image's pixel size (None: pixel units, see ``detect_tissue_image``).
    """
    try:
        return detect_tissue_image(rgb, mpp, config).mask
    except NoTissueError:
        return np.zeros(rgb.shape[:2], dtype=bool)


def edge_image(od: np.ndarray, sigma: float) -> np.ndarray:
    """Gradient magnitude of the OD blurred by ``sigma`` pixels."""
    smooth = cv2.GaussianBlur(od, (0, 0), sigma) if sigma > 0 else od
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
    return np.sqrt(gx * gx + gy * gy)


def structure_image(od: np.ndarray, quantile: float = 0.3) -> np.ndarray:
    """Dense tissue (1) versus lumen, pale tissue and glass (0).

    The threshold is a quantile of the OD over tissue pixels, so the same share
    of each section's tissue ends up on each side whatever the stain's strength:
    a fixed or Otsu threshold would split DAB from counterstain on an IHC and
    tissue from glass on an H&E, and the two images would not match.
    """
    tissue = od[od > MIN_TISSUE_OD]
    if tissue.size == 0:
        return np.zeros(od.shape, np.float32)
    threshold = float(np.quantile(tissue, quantile))
    return (od > threshold).astype(np.float32)


def section_from_rgb(
    rgb: np.ndarray,
    scale: tuple[float, float],
    mpp: float,
    tissue: TissueConfig | None = None,
) -> Section:
    """A working image with its stain-agnostic images; ``tissue`` configures the
    detector (default: ``TissueConfig()``)."""
    return Section(
        rgb=rgb, od=optical_density(rgb), tissue=tissue_mask(rgb, mpp, tissue), scale=scale, mpp=mpp
    )


def load_section(slide: Slide, work_mpp: float, tissue: TissueConfig | None = None) -> Section:
    """Read ``slide`` at ``work_mpp`` micrometres per pixel (from its best pyramid level)."""
    level = slide.best_level_for_downsample(work_mpp / slide.mpp)
    image = slide.read_level(level)
    factor = slide.level_mpp(level) / work_mpp
    if factor < 0.999:
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    w0, h0 = slide.dimensions
    scale = (w0 / image.shape[1], h0 / image.shape[0])
    return section_from_rgb(image, scale, work_mpp, tissue)
