"""``score``: a model bundle's predictions per H&E slide, heatmaps, and the cohort table.

Per slide (or FeatureFile) ``ID.json`` (the SlideResult) and, per marker, the heatmaps
``ID.<marker>.geojson`` (QuPath tiles), ``ID.<marker>.attention.png`` and, for patch-mode
bundles, ``ID.<marker>.positivity.png``; after the run ``results.parquet`` and
``results.csv`` (one row per slide and marker, failed slides included). Each worker opens
the bundle once (``setup``) on the engine and device the driver chose.

The JSON holds what the slide and the model determine, so every executor and every rerun
writes the same bytes; the per-stage timings of a slide go to the journal instead
(``facts.timings``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hsafast.cohort.ids import sanitize_id
from hsafast.cohort.items import FEATURE_SUFFIXES, SLIDE_SUFFIXES, WorkItem, slide_items
from hsafast.cohort.pixels import PixelSize, open_item_slide
from hsafast.cohort.task import ItemContext, Task
from hsafast.errors import HsafastError, InvalidParameterError

if TYPE_CHECKING:
    from hsafast.cohort.runner import Failure
    from hsafast.scoring import Scorer, ScoringOptions, SlideResult
    from hsafast.slides import Slide
    from hsafast.tissue import TissueConfig

log = logging.getLogger("hsafast.scoring")

#: Longest side of the thumbnail under the PNG heatmaps (pixels).
THUMBNAIL_SIZE = 1024


@dataclass
class ScoreTask(Task):
    """Scores each item with a bundle; build it with :meth:`for_scorer`."""

    name: ClassVar[str] = "score"

    bundle: str | None = None
    """The bundle folder that workers open (None: only the driver's own scorer can run)."""
    engine: str = "auto"
    """The engine the driver's scorer resolved (torch, onnxruntime, tensorrt)."""
    device: str = "cpu"
    """The device the driver's scorer resolved."""
    options: ScoringOptions | None = None
    tissue: TissueConfig | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)
    encoder_weights: str | None = None
    heatmaps: bool = True
    """Also write the GeoJSON and PNG heatmaps of every marker."""
    pixel: PixelSize = field(default_factory=PixelSize)
    model: dict[str, Any] = field(default_factory=dict)
    """What identifies the model's outputs: weights hash (bundle and encoder), markers and
    classes, tile geometry (filled by ``for_scorer``)."""
    engine_description: str = ""
    """The engine as the results name it (``Engine.describe()``)."""
    positivity: tuple[str, ...] = ()
    """Markers whose model predicts per-tile positivity (patch mode)."""
    _scorer: Scorer | None = field(default=None, repr=False, compare=False)

    @classmethod
    def for_scorer(
        cls, scorer: Scorer, *, heatmaps: bool = True, pixel: PixelSize | None = None
    ) -> ScoreTask:
        """A task that scores as ``scorer`` does; the inline executor uses ``scorer`` itself,
        other workers open the same bundle on the same engine and device."""
        recipe = scorer.recipe
        model = scorer.model
        return cls(
            bundle=recipe["bundle"],
            engine=scorer.engine.name,
            device=scorer.device,
            options=scorer.options,
            tissue=scorer.tissue,
            engine_options=dict(recipe["engine_options"]),
            encoder_weights=recipe["encoder_weights"],
            heatmaps=heatmaps,
            pixel=pixel or PixelSize(scorer.options.slide_mpp),
            model=model_identity(scorer),
            engine_description=scorer.engine.describe(),
            positivity=tuple(k for k, m in model.markers.items() if m.positivity is not None),
            _scorer=scorer,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scorer"] = None  # each worker opens its own in setup
        return state

    def params(self) -> Mapping[str, Any]:
        options = self.options
        return {
            "model": self.model,
            "engine": self.engine_description,
            "min_tissue": None if options is None else options.min_tissue,
            "pool_engine": None if options is None else options.pool_engine,
            "tissue": self.tissue,
            "heatmaps": self.heatmaps,
            **self.pixel.params(),
        }

    def fallbacks(self) -> Mapping[str, Any]:
        return self.pixel.fallbacks()

    def outputs(self, item: WorkItem) -> Mapping[str, str]:
        names = {"result": f"{item.id}.json"}
        if self.heatmaps:
            for marker in self.model.get("markers", {}):
                stem = f"{item.id}.{sanitize_id(marker)}"
                names[f"{marker}.geojson"] = f"{stem}.geojson"
                names[f"{marker}.attention"] = f"{stem}.attention.png"
                if marker in self.positivity:
                    names[f"{marker}.positivity"] = f"{stem}.positivity.png"
        return names

    def setup(self) -> None:
        if self._scorer is not None:
            return
        from hsafast.scoring import Scorer

        if self.bundle is None:
            raise InvalidParameterError(
                "the scorer's bundle has no folder; save it (ModelBundle.save) to score on "
                "other workers"
            )
        scorer = Scorer(
            self.bundle,
            self.engine,
            self.device,
            options=self.options,
            tissue=self.tissue,
            engine_options=self.engine_options,
            encoder_weights=self.encoder_weights,
        )
        if model_identity(scorer) != self.model:
            raise InvalidParameterError(
                "the bundle changed since the run started (its weights or markers differ)",
                self.bundle,
            )
        if scorer.engine.describe() != self.engine_description:
            raise InvalidParameterError(
                f"this worker runs {scorer.engine.describe()!r}, not "
                f"{self.engine_description!r} as where the run started"
            )
        self._scorer = scorer

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        scorer = self._scorer
        assert scorer is not None, "setup() opens the scorer"
        thumbnail: Any = None
        size0: tuple[int, int] | None = None
        if item.path.suffix.lower() in FEATURE_SUFFIXES:
            result = scorer.score(item.path, slide_id=item.id)
        else:
            with open_item_slide(item.path, self.pixel, ctx) as slide:
                result = scorer.score(slide, slide_id=item.id)
                if self.heatmaps and result.n_tiles:
                    thumbnail, size0 = _thumbnail(slide)
        timings, result.timings = result.timings, {}
        result.save(ctx.path("result"))
        if self.heatmaps:
            _write_heatmaps(result, ctx, thumbnail, size0)
        ctx.record(
            status=result.status,
            tiles=result.n_tiles,
            predicted={k: m.predicted for k, m in result.markers.items()},
            timings=timings,
        )

    def finish(self, out_dir: Path, done: list[WorkItem], failed: list[Failure]) -> None:
        """``results.parquet`` and ``results.csv`` over the run's slides, by item ID."""
        from hsafast.scoring.results import SlideResult, failure_row, write_cohort_table

        rows: list[tuple[str, list[dict[str, Any]]]] = []
        for item in done:
            rows.append((item.id, SlideResult.load(out_dir / f"{item.id}.json").rows()))
        for f in failed:
            rows.append((f.item, [failure_row(f.item, f.path, f.reason)]))
        write_cohort_table([row for _, group in sorted(rows) for row in group], out_dir)


def model_identity(scorer: Scorer) -> dict[str, Any]:
    """What makes a model's outputs what they are (for the run's fingerprint)."""
    model = scorer.model
    return {
        "hash": model.model_hash,
        "encoder": model.encoder.name,
        "encoder_hash": model.encoder.weights_hash,
        "target_mpp": model.target_mpp,
        "tile_size": model.tile_size,
        "max_tiles": model.max_tiles,
        "markers": {
            name: {
                "classes": list(m.classes),
                "positive_class": m.positive_class,
                "aggregator": m.aggregator,
            }
            for name, m in model.markers.items()
        },
    }


def score_items(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], recursive: bool = False
) -> list[WorkItem]:
    """H&E slides and FeatureFiles to score: files, folders and manifests (H&E column)."""
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    return slide_items(
        inputs, recursive=recursive, stains=("he",), suffixes=SLIDE_SUFFIXES | FEATURE_SUFFIXES
    )


def _thumbnail(slide: Slide) -> tuple[Any, tuple[int, int] | None]:
    try:
        image, _ = slide.thumbnail(THUMBNAIL_SIZE)
        return image, slide.dimensions
    except HsafastError as exc:
        log.warning("no thumbnail under the heatmaps of %s: %s", slide.path, exc.reason)
        return None, None


def _write_heatmaps(
    result: SlideResult, ctx: ItemContext, thumbnail: Any, size0: tuple[int, int] | None
) -> None:
    """Each marker's GeoJSON and PNGs (none for a slide without tiles)."""
    from hsafast._fileio import atomic_write_png
    from hsafast.heatmaps import heatmap_image, write_geojson

    if not result.n_tiles:
        return
    for marker, m in result.markers.items():
        write_geojson(result, marker, ctx.path(f"{marker}.geojson"))
        values = ["attention"] + (["positivity"] if m.positivity is not None else [])
        for value in values:
            image = heatmap_image(result, marker, value, thumbnail, size0)
            atomic_write_png(ctx.path(f"{marker}.{value}"), image)
