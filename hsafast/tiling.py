"""Tile grids: which tiles of a slide to read, at which level, for a target pixel size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Tiles of one slide at a target resolution.

    ``coords`` are level-0 top-left corners (N x 2 int64, x then y), as TRIDENT and
    CLAM write them. Each tile covers ``patch_size_level0`` level-0 pixels; it is
    read as ``read_size`` pixels from ``level`` and resized to ``size`` pixels when
    the two differ (no level matches the target pixel size exactly).
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

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def scale(self) -> float:
        """Output pixels per read pixel (1.0 when the level matches the target)."""
        return self.size / self.read_size
