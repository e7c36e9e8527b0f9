"""``tissue``: a mask PNG, a QuPath GeoJSON outline and an overlay per slide."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hsafast.cohort.items import WorkItem
from hsafast.cohort.pixels import PixelSize, open_item_slide
from hsafast.cohort.task import ItemContext, Task
from hsafast.tissue import TissueConfig


@dataclass
class TissueTask(Task):
    """Per slide: ``ID.mask.png`` (255 on tissue), ``ID.geojson`` (level-0 polygons,
    QuPath annotations classified "Tissue") and ``ID.overlay.png``."""

    name: ClassVar[str] = "tissue"

    config: TissueConfig = field(default_factory=TissueConfig)
    pixel: PixelSize = field(default_factory=PixelSize)

    def params(self) -> Mapping[str, Any]:
        return {"tissue": self.config, **self.pixel.params()}

    def fallbacks(self) -> Mapping[str, Any]:
        return self.pixel.fallbacks()

    def outputs(self, item: WorkItem) -> Mapping[str, str]:
        return {
            "mask": f"{item.id}.mask.png",
            "geojson": f"{item.id}.geojson",
            "overlay": f"{item.id}.overlay.png",
        }

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        from hsafast.tissue import detect_tissue

        with open_item_slide(item.path, self.pixel, ctx) as slide:
            mask = detect_tissue(slide, self.config)
        mask.to_png(ctx.path("mask"))
        mask.save_geojson(ctx.path("geojson"))
        mask.save_overlay(ctx.path("overlay"))
        ctx.record(tissue_mm2=round(mask.area_mm2(), 4), threshold=mask.threshold)
