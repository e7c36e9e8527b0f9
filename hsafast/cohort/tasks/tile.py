"""``tile``: tissue tile coordinates, one HDF5 file per slide (TRIDENT/CLAM layout)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hsafast.cohort.items import WorkItem
from hsafast.cohort.pixels import PixelSize, open_item_slide
from hsafast.cohort.task import ItemContext, Task
from hsafast.errors import InvalidParameterError
from hsafast.tissue import TissueConfig


@dataclass
class TileTask(Task):
    """Per slide ``ID.h5``: ``coords`` (N x 2 int64, level-0 top-left x, y) with
    ``patch_size``, ``patch_size_level0``, ``target_mpp``, ``level`` and ``slide_id``
    (the item ID), plus ``tissue_fraction`` (N); see :mod:`hsafast.features`."""

    name: ClassVar[str] = "tile"

    target_mpp: float | None = None
    """Tile pixel size (um/px); 0.5 (20x) unless ``magnification`` is given."""
    magnification: float | None = None
    """Tile magnification instead of a pixel size (20 = 0.5 um/px)."""
    tile_size: int = 256
    """Tile side in pixels at the target pixel size."""
    overlap: int = 0
    """Overlap between neighbouring tiles (pixels at the target pixel size)."""
    min_tissue: float = 0.25
    """Least tissue fraction of a kept tile."""
    tissue: TissueConfig = field(default_factory=TissueConfig)
    pixel: PixelSize = field(default_factory=PixelSize)

    def __post_init__(self) -> None:
        if self.target_mpp is not None and self.magnification is not None:
            raise InvalidParameterError("TileTask: give target_mpp or magnification, not both")
        if self.target_mpp is None and self.magnification is None:
            self.target_mpp = 0.5
        for name in ("target_mpp", "magnification"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidParameterError(f"TileTask: {name} must be positive, got {value}")
        if self.tile_size <= 0:
            raise InvalidParameterError(
                f"TileTask: tile_size must be positive, got {self.tile_size}"
            )
        if not 0 <= self.overlap < self.tile_size:
            raise InvalidParameterError(
                f"TileTask: overlap must be in [0, {self.tile_size}), got {self.overlap}"
            )
        if not 0 <= self.min_tissue <= 1:
            raise InvalidParameterError(
                f"TileTask: min_tissue must be in [0, 1], got {self.min_tissue}"
            )

    def params(self) -> Mapping[str, Any]:
        return {
            "target_mpp": self.target_mpp,
            "magnification": self.magnification,
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "min_tissue": self.min_tissue,
            "tissue": self.tissue,
            **self.pixel.params(),
        }

    def fallbacks(self) -> Mapping[str, Any]:
        return self.pixel.fallbacks()

    def outputs(self, item: WorkItem) -> Mapping[str, str]:
        return {"coords": f"{item.id}.h5"}

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        from hsafast.errors import NoTissueError
        from hsafast.features import FeatureFile
        from hsafast.tiling import tissue_grid

        with open_item_slide(item.path, self.pixel, ctx) as slide:
            grid = tissue_grid(
                slide,
                mpp=self.target_mpp if self.magnification is None else None,
                size=self.tile_size,
                overlap=self.overlap,
                min_tissue=self.min_tissue,
                magnification=self.magnification,
                tissue=self.tissue,
            )
        if len(grid) == 0:
            raise NoTissueError(
                f"no {self.tile_size}-px tile holds at least {self.min_tissue:.0%} tissue",
                item.path,
            )
        stain = item.meta.get("stain", "")
        FeatureFile.from_grid(grid, slide_id=item.id, stain=stain).write(ctx.path("coords"))
        ctx.record(tiles=len(grid), level=grid.level)
