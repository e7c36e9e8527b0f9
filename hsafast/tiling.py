"""Tile grids: which tiles of a slide to read, at which level, for a target pixel size.

Magnification is converted with the usual convention mpp = 10 / magnification
(20x == 0.5 um/px, 40x == 0.25 um/px), whatever the scanner's objective says.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hsafast.errors import InvalidParameterError

if TYPE_CHECKING:
    from hsafast.slides import Slide
    from hsafast.tissue import TissueConfig, TissueMask

#: Relative difference under which a level's pixel size counts as the target's
#: (scanners write 0.499 or 0.5040 um/px for "20x").
MPP_TOLERANCE = 0.05


@dataclass(frozen=True)
class TileGrid:
    """Tiles of one slide at a target resolution.

    ``coords`` are level-0 top-left corners (N x 2 int64, x then y), as TRIDENT and
    CLAM write them, in row-major order. Each tile covers ``patch_size_level0``
    level-0 pixels; it is read as ``read_size`` pixels from ``level`` and resized
    to ``size`` pixels when the two differ (no level matches the target pixel
    size exactly). Tiles of the last row and column may reach past the slide's
    edge; readers fill that part with white.
    """

    slide_path: Path
    coords: np.ndarray
    tissue_fraction: np.ndarray
    level: int
    read_size: int
    size: int
    patch_size_level0: int
    target_mpp: float
    overlap: int = 0
    stride_level0: int = 0
    """Level-0 distance between neighbouring tiles."""
    tissue: TissueMask | None = None
    """The tissue mask the tiles were chosen with (None: every tile was kept)."""

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def scale(self) -> float:
        """Output pixels per read pixel (1.0 when the level matches the target)."""
        return self.size / self.read_size


def magnification_to_mpp(magnification: float) -> float:
    """Pixel size for a magnification by the 10 / magnification convention."""
    return 10.0 / magnification


def choose_level(slide: Slide, target_mpp: float, size: int) -> tuple[int, int]:
    """The level to read and the read size for tiles of ``size`` px at ``target_mpp``.

    The coarsest level whose pixel size does not exceed the target (within
    ``MPP_TOLERANCE``); its tiles are ``round(size * target / level_mpp)`` pixels,
    or exactly ``size`` when the level matches the target within tolerance.
    """
    best = 0
    for level in range(slide.level_count):
        if slide.level_mpp(level) <= target_mpp * (1 + MPP_TOLERANCE):
            best = level
    level_mpp = slide.level_mpp(best)
    if abs(level_mpp / target_mpp - 1) <= MPP_TOLERANCE:
        return best, size
    return best, max(1, round(size * target_mpp / level_mpp))


def tile_fractions(mask: TissueMask, coords: np.ndarray, patch_size_level0: int) -> np.ndarray:
    """Fraction of each level-0 tile covered by tissue (native, summed-area table).

    The parts of a tile outside the mask (past the slide's edge) count as glass.
    """
    from hsafast._native import core

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    dx, dy = mask.downsample
    boxes = np.empty((len(coords), 4), dtype=np.float64)
    boxes[:, 0] = coords[:, 0] / dx
    boxes[:, 1] = coords[:, 1] / dy
    boxes[:, 2] = (coords[:, 0] + patch_size_level0) / dx
    boxes[:, 3] = (coords[:, 1] + patch_size_level0) / dy
    return np.asarray(core.box_fractions(np.ascontiguousarray(mask.mask), boxes))


def tile_grid(
    slide: Slide,
    mask: TissueMask | None,
    mpp: float | None = 0.5,
    size: int = 256,
    overlap: int = 0,
    min_tissue: float = 0.25,
    magnification: float | None = None,
) -> TileGrid:
    """Tiles of ``size`` pixels at ``mpp`` um/px (or ``magnification``) that hold tissue.

    Tiles step by ``size - overlap`` output pixels in row-major order from the
    slide's top-left corner; those whose tissue fraction in ``mask`` is at least
    ``min_tissue`` are kept (``mask=None`` keeps every tile, with fraction 1).
    """
    path = slide.path
    target = _target_mpp(path, mpp, magnification)
    if not (isinstance(size, int | np.integer) and size > 0):
        raise InvalidParameterError(f"tile size must be a positive integer, got {size}", path)
    if not (isinstance(overlap, int | np.integer) and 0 <= overlap < size):
        raise InvalidParameterError(
            f"overlap must be an integer in [0, size) = [0, {size}), got {overlap}", path
        )
    if not (isinstance(min_tissue, int | float) and 0.0 <= min_tissue <= 1.0):
        raise InvalidParameterError(f"min_tissue must be in [0, 1], got {min_tissue}", path)
    base_mpp = slide.mpp
    if target < base_mpp * (1 - MPP_TOLERANCE):
        raise InvalidParameterError(
            f"target {target:g} um/px is finer than the scan ({base_mpp:g} um/px at level 0); "
            "tiles would be upsampled",
            path,
        )
    width, height = slide.dimensions
    if mask is not None and tuple(mask.level0_size) != (width, height):
        raise InvalidParameterError(
            f"the tissue mask was made for a {mask.level0_size[0]}x{mask.level0_size[1]} slide, "
            f"this one is {width}x{height}",
            path,
        )
    level, read_size = choose_level(slide, target, int(size))
    patch0 = max(1, round(read_size * slide.level_downsamples[level]))
    stride0 = max(1, round((size - overlap) * patch0 / size))
    ys, xs = np.meshgrid(
        np.arange(0, height, stride0, dtype=np.int64),
        np.arange(0, width, stride0, dtype=np.int64),
        indexing="ij",
    )
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    if mask is None:
        fractions = np.ones(len(coords), dtype=np.float64)
    else:
        fractions = tile_fractions(mask, coords, patch0)
        keep = fractions >= min_tissue
        coords, fractions = coords[keep], fractions[keep]
    return TileGrid(
        slide_path=Path(path),
        coords=np.ascontiguousarray(coords, dtype=np.int64),
        tissue_fraction=fractions.astype(np.float32),
        level=level,
        read_size=int(read_size),
        size=int(size),
        patch_size_level0=int(patch0),
        target_mpp=float(target),
        overlap=int(overlap),
        stride_level0=int(stride0),
        tissue=mask,
    )


def tissue_grid(
    slide: Slide,
    mpp: float | None = 0.5,
    size: int = 256,
    *,
    overlap: int = 0,
    min_tissue: float = 0.25,
    magnification: float | None = None,
    tissue: TissueConfig | TissueMask | None = None,
) -> TileGrid:
    """Tissue, then grid: the tiles of ``slide`` that hold tissue, in one call.

    ``tissue`` is how tissue is found: a ``TissueConfig`` (None: the defaults) to
    detect it here, or a ``TissueMask`` already detected on this slide. The mask
    is kept on the grid (``TileGrid.tissue``). Every command and stage that tiles
    tissue goes through here, so they all agree on what tissue is. Raises
    ``NoTissueError`` naming the slide when there is none.
    """
    from hsafast.tissue import TissueMask, detect_tissue

    mask = tissue if isinstance(tissue, TissueMask) else detect_tissue(slide, tissue)
    return tile_grid(
        slide,
        mask,
        mpp=mpp,
        size=size,
        overlap=overlap,
        min_tissue=min_tissue,
        magnification=magnification,
    )


def _target_mpp(
    path: str | os.PathLike[str], mpp: float | None, magnification: float | None
) -> float:
    if magnification is not None:
        if not (
            isinstance(magnification, int | float)
            and math.isfinite(magnification)
            and magnification > 0
        ):
            raise InvalidParameterError(
                f"magnification must be positive, got {magnification}", path
            )
        return magnification_to_mpp(float(magnification))
    if mpp is None:
        raise InvalidParameterError("give a target mpp or a magnification", path)
    if not (isinstance(mpp, int | float) and math.isfinite(mpp) and mpp > 0):
        raise InvalidParameterError(f"target mpp must be positive, got {mpp}", path)
    return float(mpp)
