"""``quantify``: per-tile DAB statistics and the slide label of IHC slides."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hsafast.cohort.items import WorkItem
from hsafast.cohort.pixels import PixelSize, open_item_slide
from hsafast.cohort.task import ItemContext, Task
from hsafast.errors import InvalidParameterError

if TYPE_CHECKING:
    from hsafast.stain.markers import Marker
    from hsafast.tiling import TileGrid

#: Per-tile table formats.
FORMATS = ("csv", "h5")


@dataclass
class QuantifyTask(Task):
    """Per IHC slide: ``ID.stain.csv`` (or ``.stain.h5``), one row per tissue tile (level-0
    ``x, y`` beside its statistics), and ``ID.label.json`` with the slide label."""

    name: ClassVar[str] = "quantify"

    marker: str | None = None
    """Marker for every slide; None takes each manifest case's own marker."""
    markers: Mapping[str, Marker] = field(default_factory=dict)
    """User-defined markers (``load_markers``) besides the built-in ones."""
    target_mpp: float = 0.5
    """Tile pixel size (um/px)."""
    tile_size: int = 256
    """Tile side in pixels at ``target_mpp``."""
    format: str = "csv"
    """Per-tile table: ``csv`` or ``h5``."""
    overlay: bool = False
    """Also write ``ID.overlay.png``: positive and negative nuclei drawn on the IHC, to check
    a reading by eye."""
    pixel: PixelSize = field(default_factory=PixelSize)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidParameterError(f"QuantifyTask: format must be one of {FORMATS}")
        if not self.target_mpp > 0:
            raise InvalidParameterError(
                f"QuantifyTask: target_mpp must be positive, got {self.target_mpp}"
            )
        if self.tile_size <= 0:
            raise InvalidParameterError(
                f"QuantifyTask: tile_size must be positive, got {self.tile_size}"
            )
        if self.marker is not None:
            self.marker_for(None)  # an unknown marker fails here, before any slide

    def marker_for(self, item: WorkItem | None) -> Marker:
        from hsafast.stain.markers import get_marker

        name = self.marker or (item.meta.get("marker") if item is not None else None)
        if not name:
            where = item.path if item is not None else None
            raise InvalidParameterError(
                "no marker: give marker=..., or a manifest with a marker column", where
            )
        return get_marker(name, self.markers)

    def check(self, items: Sequence[WorkItem]) -> None:
        for item in items:
            self.marker_for(item)

    def params(self) -> Mapping[str, Any]:
        return {
            "marker": self.marker,
            "markers": dict(self.markers),
            "target_mpp": self.target_mpp,
            "tile_size": self.tile_size,
            "format": self.format,
            "overlay": self.overlay,
            **self.pixel.params(),
        }

    def fallbacks(self) -> Mapping[str, Any]:
        return self.pixel.fallbacks()

    def outputs(self, item: WorkItem) -> Mapping[str, str]:
        names = {"table": f"{item.id}.stain.{self.format}", "label": f"{item.id}.label.json"}
        if self.overlay:
            names["overlay"] = f"{item.id}.overlay.png"
        return names

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        from hsafast._fileio import atomic_write_text
        from hsafast.stain.quantification import quantify, slide_label
        from hsafast.tiling import tissue_grid

        marker = self.marker_for(item)
        with open_item_slide(item.path, self.pixel, ctx) as slide:
            grid = tissue_grid(slide, mpp=self.target_mpp, size=self.tile_size)
            stats = quantify(slide, grid, marker)
            if self.overlay:
                from hsafast.stain.overlay import save_stain_overlay

                save_stain_overlay(slide, stats, ctx.path("overlay"))
        label = slide_label(stats, marker)
        _write_table(ctx.path("table"), stats, marker, self.format, str(item.path))
        payload = {"slide": str(item.path), "tile_grid": _grid_info(grid), **label.to_dict()}
        atomic_write_text(ctx.path("label"), json.dumps(payload, indent=2) + "\n")
        ctx.record(marker=marker.name, tiles=len(grid), label=label.label, reason=label.reason)


def _write_table(path: Any, stats: Any, marker: Marker, fmt: str, slide: str) -> None:
    from hsafast._fileio import atomic_path

    cols = stats.columns()
    with atomic_path(path) as tmp:
        if fmt == "csv":
            with tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(list(cols))
                w.writerows(zip(*(_fmt(v) for v in cols.values()), strict=True))
        else:
            import h5py

            with h5py.File(tmp, "w") as h5:
                h5["coords"] = stats.coords
                for name, values in cols.items():
                    if name not in ("x", "y"):
                        h5[name] = values
                h5.attrs.update(marker=marker.name, level=stats.level, size=stats.size, slide=slide)


def _fmt(values: np.ndarray) -> list[str]:
    if np.issubdtype(values.dtype, np.integer):
        return [str(int(v)) for v in values]
    return [f"{float(v):.6g}" for v in values]


def _grid_info(grid: TileGrid) -> dict[str, object]:
    return {
        "tiles": len(grid),
        "level": grid.level,
        "read_size": grid.read_size,
        "size": grid.size,
        "target_mpp": grid.target_mpp,
    }
