"""Scorer: H&E slides in, per-marker predictions out, on the fastest engine available.

    scorer = hsafast.Scorer("bundle/")                  # engine="auto", device="auto"
    result = scorer.score("slide.svs")                   # SlideResult
    for item, result in scorer.score_iter(paths): ...   # pipelined, next slide prefetched
    stream = scorer.stream(SlideInfo("scan-17"))          # scanner-side: push tiles as they come

Every path shares one `SlideAccumulator` per slide, so a streamed slide gives the same result
as the same tiles scored at once. Slides are cut as the bundle says (target pixel size and
tile size), after tissue detection; FeatureFiles (.h5) skip the encoder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsafast.cohort.items import FEATURE_SUFFIXES
from hsafast.errors import HsafastError, InvalidParameterError
from hsafast.scoring.accumulate import SlideAccumulator, SlideInfo
from hsafast.scoring.model import ScoringModel, load_model
from hsafast.scoring.pipeline import Batch, SlideJob, StageStats, run_pipeline
from hsafast.scoring.preprocess import preprocess_cpu
from hsafast.scoring.results import SlideResult

if TYPE_CHECKING:
    from hsafast.cohort import Executor, PixelSize, Progress, RunReport
    from hsafast.engines import Engine
    from hsafast.scoring.stream import SlideStream
    from hsafast.slides import Slide
    from hsafast.tissue import TissueConfig

log = logging.getLogger("hsafast.scoring")

__all__ = ["Scorer", "ScoringOptions"]


@dataclass(frozen=True)
class ScoringOptions:
    """How slides are cut and fed to the engine."""

    batch_size: int | None = None
    """Tiles per engine call; None: 64 on the CPU (the small encoders' throughput is flat
    from 32 up), 256 on a GPU (enough to fill an H200 with ViT-S)."""
    min_tissue: float = 0.25
    """Least tissue fraction of a kept tile, as in tiling (`hsafast tile`)."""
    workers: int | None = None
    """Tile-decoding threads (default: all cores)."""
    prefetch: int = 2
    """Batches queued between stages (bounds memory; 2 keeps every stage busy)."""
    slide_mpp: float | None = None
    """Level-0 pixel size for slides that record none (um/px)."""
    pool_engine: str = "auto"
    """Pooling backend (hsafast.pooling engines: auto, cpu, cuda, torch)."""

    def __post_init__(self) -> None:
        if self.batch_size is not None and not (
            isinstance(self.batch_size, int) and self.batch_size >= 1
        ):
            raise InvalidParameterError(
                f"ScoringOptions.batch_size must be a positive integer, got {self.batch_size}"
            )
        if not 0.0 <= self.min_tissue <= 1.0:
            raise InvalidParameterError(
                f"ScoringOptions.min_tissue must be in [0, 1], got {self.min_tissue}"
            )
        if self.workers is not None and self.workers < 1:
            raise InvalidParameterError(f"ScoringOptions.workers must be >= 1, got {self.workers}")
        if self.prefetch < 1:
            raise InvalidParameterError(
                f"ScoringOptions.prefetch must be >= 1, got {self.prefetch}"
            )
        if self.slide_mpp is not None and not self.slide_mpp > 0:
            raise InvalidParameterError(
                f"ScoringOptions.slide_mpp must be positive, got {self.slide_mpp}"
            )


class Scorer:
    """Scores slides with one bundle on one engine; see the module docstring.

    `bundle` is a ModelBundle, a bundle directory or a ScoringModel. `engine` is "auto",
    "torch", "onnxruntime" or "tensorrt"; `device` "auto", "cpu" or "cuda[:N]".
    `engine_options` go to the engine (hsafast.engines.create_engine). `tissue` configures
    tissue detection.
    """

    def __init__(
        self,
        bundle: Any,
        engine: str = "auto",
        device: str = "auto",
        *,
        options: ScoringOptions | None = None,
        tissue: TissueConfig | None = None,
        engine_options: dict[str, Any] | None = None,
        encoder_weights: str | os.PathLike[str] | None = None,
    ) -> None:
        from hsafast.engines import create_engine

        self.model: ScoringModel = load_model(bundle, encoder_weights)
        self.recipe: dict[str, Any] = {
            "bundle": _bundle_folder(bundle, self.model),
            "engine_options": dict(engine_options or {}),
            "encoder_weights": None if encoder_weights is None else os.fspath(encoder_weights),
        }
        """How to open this scorer again elsewhere (a cohort run's other workers)."""
        self.options = options or ScoringOptions()
        self.tissue = tissue
        self.engine: Engine = create_engine(
            self.model.spec(), engine, device, **(engine_options or {})
        )
        self.device = self.engine.device
        self._gpu = self.device.startswith("cuda")
        self.batch_size = self.options.batch_size or (256 if self._gpu else 64)
        self._feature_net: Any = None
        self._gpu_reader: Any = None
        self.stats: dict[str, StageStats] = {}
        """Per-stage totals of the last score_iter run."""
        log.info("scoring with %s", self.engine.describe())

    # ---- whole slides --------------------------------------------------------------------
    def score(self, slide: Any, slide_id: str | None = None) -> SlideResult:
        """Scores one slide (path, open Slide, FeatureFile or .h5 path); raises on failure."""
        [(_, result)] = list(self.score_iter([(slide_id, slide)] if slide_id else [slide]))
        if isinstance(result, BaseException):
            raise result
        return result

    def score_iter(self, slides: Iterable[Any]) -> Iterator[tuple[Any, SlideResult | HsafastError]]:
        """Scores slides in a pipeline; yields (input, SlideResult or its error) in order.

        Each input is a slide path, an open Slide, a FeatureFile, a .h5 path or a pair
        (slide_id, any of those). One slide's failure is yielded as its error and the rest go on.
        """
        self.stats = {}
        jobs = (self._job(i, item) for i, item in enumerate(slides))
        t0 = time.perf_counter()
        for job, result in run_pipeline(
            jobs,
            encode=self._encode,
            accumulate=self._accumulator,
            finish=self._finish,
            no_tissue=self._no_tissue,
            prefetch=self.options.prefetch,
            stats=self.stats,
        ):
            yield job.source, result
        self.stats["total"] = StageStats(
            "total", time.perf_counter() - t0, self.stats.get("pool", StageStats("pool")).tiles
        )
        log.info("stages: %s", self.stage_summary())

    def stage_summary(self) -> str:
        """One line of tiles/s per stage of the last run."""
        return ", ".join(
            f"{s.name} {s.tiles_per_s:,.0f} tiles/s ({s.busy_s:.2f} s)" for s in self.stats.values()
        )

    def stream(self, info: SlideInfo | str) -> SlideStream:
        """A scanner-side stream for one slide: push tiles in any order, then result()."""
        from hsafast.scoring.stream import SlideStream

        return SlideStream(self, info if isinstance(info, SlideInfo) else SlideInfo(info))

    def score_many(
        self,
        inputs: Any,
        out_dir: str | os.PathLike[str],
        *,
        executor: Executor | None = None,
        heatmaps: bool = True,
        overwrite: bool = False,
        recursive: bool = False,
        pixel: PixelSize | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        """Scores slides, folders, manifests (their H&E slides) or FeatureFiles into out_dir
        on the cohort runner: ``ID.json`` and heatmaps per slide, ``results.parquet`` and
        ``results.csv``, a journal and ``failures.csv``; a rerun skips what is done.

        ``executor`` (default: this scorer, in this thread) may run slides on threads,
        processes or Ray, each worker with its own scorer of the same bundle, engine and
        device. ``pixel`` defaults to ``options.slide_mpp`` for files that record none.
        See hsafast.cohort.tasks.ScoreTask and docs/cohort.md.
        """
        from hsafast.cohort import run_cohort
        from hsafast.cohort.tasks.score import ScoreTask, score_items

        task = ScoreTask.for_scorer(self, heatmaps=heatmaps, pixel=pixel)
        items = score_items(inputs, recursive=recursive)
        return run_cohort(
            task, items, out_dir, executor=executor, overwrite=overwrite, progress=progress
        )

    # ---- pipeline callbacks ---------------------------------------------------------------
    def _job(self, index: int, item: Any) -> SlideJob:
        slide_id, source = item if isinstance(item, tuple) else (None, item)
        from hsafast.features import FeatureFile

        if isinstance(source, FeatureFile) or (
            isinstance(source, str | os.PathLike)
            and Path(source).suffix.lower() in FEATURE_SUFFIXES
        ):
            return self._feature_job(index, slide_id, source)
        return self._slide_job(index, slide_id, source)

    def _slide_job(self, index: int, slide_id: str | None, source: Any) -> SlideJob:
        from hsafast._fileio import safe_id
        from hsafast.slides import Slide

        path = source.path if isinstance(source, Slide) else Path(source)
        info = SlideInfo(slide_id or safe_id(Path(path).stem), path=str(path))
        job = SlideJob(index, info, lambda stats: iter(()), item_source(slide_id, source))

        def batches(stats: dict[str, StageStats]) -> Iterator[Batch]:
            return self._slide_batches(job, source, stats)

        job.batches = batches
        return job

    def _slide_batches(
        self, job: SlideJob, source: Any, stats: dict[str, StageStats]
    ) -> Iterator[Batch]:
        from hsafast.errors import NoTissueError
        from hsafast.slides import Slide
        from hsafast.tiling import tissue_grid

        t0 = time.perf_counter()
        owned = not isinstance(source, Slide)
        slide = self._open(source) if owned else source
        try:
            grid = tissue_grid(
                slide,
                mpp=self.model.target_mpp,
                size=self.model.tile_size,
                min_tissue=self.options.min_tissue,
                tissue=self.tissue,
            )
        except BaseException:
            if owned:
                slide.close()
            raise
        _add(stats, "tissue", time.perf_counter() - t0, len(grid))
        if len(grid) == 0:
            if owned:
                slide.close()
            raise NoTissueError(
                f"tissue was found but no {self.model.tile_size}-px tile at "
                f"{self.model.target_mpp:g} um/px holds {self.options.min_tissue:.0%} of it",
                slide.path,
            )
        job.info = SlideInfo(
            job.info.slide_id, grid.patch_size_level0, grid.target_mpp, job.info.path
        )
        return self._read(slide, grid, owned, stats)

    def _open(self, path: Any) -> Slide:
        """Opens a slide; `slide_mpp` applies only to files that record no pixel size."""
        from hsafast.cohort.pixels import PixelSize, open_item_slide

        return open_item_slide(path, PixelSize(self.options.slide_mpp))

    def _read(
        self, slide: Slide, grid: Any, owned: bool, stats: dict[str, StageStats]
    ) -> Iterator[Batch]:
        from hsafast.reading import read_tiles

        try:
            if self._gpu:
                from hsafast.scoring.gpu_decode import gpu_level

                level, why = gpu_level(slide, grid)
                if level is not None:
                    yield from self._read_gpu(slide, grid, level, stats)
                    return
                log.debug("%s: tiles decoded on the CPU: %s", slide.path, why)
            reader = read_tiles(
                slide,
                grid,
                batch_size=self.batch_size,
                workers=self.options.workers,
                prefetch=self.options.prefetch,
            )
            while True:
                t0 = time.perf_counter()
                tile_batch = next(reader, None)
                if tile_batch is None:
                    break
                _add(stats, "read", time.perf_counter() - t0, len(tile_batch))
                yield self._prepare(tile_batch.tiles, tile_batch.coords, stats)
        finally:
            if owned:
                slide.close()

    def _read_gpu(
        self, slide: Slide, grid: Any, level: Any, stats: dict[str, StageStats]
    ) -> Iterator[Batch]:
        """Batches decoded by nvImageCodec on the copy stream (see gpu_decode)."""
        import torch

        from hsafast.scoring.gpu import copy_stream
        from hsafast.scoring.gpu_decode import GpuTileReader

        if self._gpu_reader is None:
            self._gpu_reader = GpuTileReader(self.device)
        stream = copy_stream(self.device)
        coords = np.ascontiguousarray(grid.coords, dtype=np.int64)
        ds = slide.level_downsamples[grid.level]
        for start in range(0, len(coords), self.batch_size):
            t0 = time.perf_counter()
            part = coords[start : start + self.batch_size]
            xy = part if ds == 1.0 else np.rint(part / ds).astype(np.int64)
            x = self._gpu_reader.read(level, xy, grid.size, stream)
            ready = torch.cuda.Event()
            ready.record(stream)
            _add(stats, "decode (GPU)", time.perf_counter() - t0, len(part))
            yield Batch(x, part, ready)

    def _prepare(
        self, tiles: np.ndarray, coords: np.ndarray, stats: dict[str, StageStats]
    ) -> Batch:
        """CPU: preprocess here (overlaps the engine). GPU: upload uint8 on the copy stream."""
        t0 = time.perf_counter()
        if not self._gpu:
            batch = Batch(preprocess_cpu(self.model.encoder, tiles), coords)
            _add(stats, "preprocess", time.perf_counter() - t0, len(coords))
            return batch
        from hsafast.scoring.gpu import upload

        x, ready = upload(tiles, self.device)
        _add(stats, "upload", time.perf_counter() - t0, len(coords))
        return Batch(x, coords, ready)

    def _feature_job(self, index: int, slide_id: str | None, source: Any) -> SlideJob:
        from hsafast.features import FeatureFile, read_feature_file

        path = None if isinstance(source, FeatureFile) else str(source)
        name = (
            slide_id
            or (source.slide_id if isinstance(source, FeatureFile) else "")
            or (Path(path).stem if path else "slide")
        )
        from hsafast._fileio import safe_id

        job = SlideJob(
            index,
            SlideInfo(safe_id(name), path=path),
            lambda stats: iter(()),
            item_source(slide_id, source),
        )

        def batches(stats: dict[str, StageStats]) -> Iterator[Batch]:
            t0 = time.perf_counter()
            ff = source if isinstance(source, FeatureFile) else read_feature_file(source)
            self._check_features(ff, path)
            _add(stats, "read", time.perf_counter() - t0, len(ff))
            job.info = SlideInfo(
                job.info.slide_id,
                ff.patch_size_level0 or self.model.tile_size,
                ff.target_mpp or self.model.target_mpp,
                path,
            )
            return self._feature_batches(ff)

        job.batches = batches
        return job

    def _check_features(self, ff: Any, path: str | None) -> None:
        from hsafast.errors import FeatureFileError

        enc = self.model.encoder
        if ff.features is None:
            raise FeatureFileError("holds coordinates only, no features", path)
        if ff.features.shape[1] != enc.dim:
            raise FeatureFileError(
                f"features are {ff.features.shape[1]}-d but the bundle's encoder {enc.name!r} "
                f"gives {enc.dim}-d",
                path,
            )
        if ff.encoder and ff.encoder != enc.name:
            raise FeatureFileError(
                f"features come from encoder {ff.encoder!r} but the bundle was trained on "
                f"{enc.name!r}",
                path,
            )
        if ff.encoder_hash and ff.encoder_hash != enc.weights_hash:
            raise FeatureFileError(
                f"features come from {enc.name!r} weights {ff.encoder_hash[:12]} but the bundle "
                f"was trained on weights {enc.weights_hash[:12]}",
                path,
            )

    def _feature_batches(self, ff: Any) -> Iterator[Batch]:
        import torch

        feats = np.asarray(ff.features, dtype=np.float32)
        step = max(self.batch_size, 1024)
        for start in range(0, len(ff), step):
            x = torch.from_numpy(feats[start : start + step])
            yield Batch(x, np.asarray(ff.coords[start : start + step]), features=True)

    def encode_tiles(self, tiles: np.ndarray, coords: np.ndarray) -> dict[str, Any]:
        """The tile network's outputs for uint8 tiles (in this thread, no pipeline)."""
        if self._gpu:
            from hsafast.scoring.gpu import upload

            x, ready = upload(tiles, self.device)
            return self._encode(Batch(x, coords, ready))
        return self._encode(Batch(preprocess_cpu(self.model.encoder, tiles), coords))

    def _encode(self, batch: Batch) -> dict[str, Any]:
        if batch.features:  # precomputed features: the marker network in torch
            return self._encode_features(batch.x)
        x = batch.x
        if self._gpu:
            from hsafast.scoring.gpu import wait

            wait(batch.ready, x)
            x = self.model.encoder.preprocess(x)
        return self.engine.run(x)

    def _encode_features(self, feats: Any) -> dict[str, Any]:
        import copy

        import torch

        if self._feature_net is None:
            self._feature_net = copy.deepcopy(self.model.marker_network).to(self.device).float()
        with torch.inference_mode():
            outs = self._feature_net(feats.to(self.device))
        return dict(zip(self.model.marker_network.output_names(), outs, strict=True))

    def _accumulator(self, job: SlideJob) -> SlideAccumulator:
        return SlideAccumulator(
            self.model, job.info, self.engine.describe(), self.options.pool_engine
        )

    def _finish(
        self, job: SlideJob, acc: SlideAccumulator, stats: dict[str, StageStats]
    ) -> SlideResult:
        return acc.result(timings={k: v.to_dict() for k, v in stats.items()})

    def _no_tissue(self, job: SlideJob, reason: str) -> SlideResult:
        return SlideResult(
            slide_id=job.info.slide_id,
            markers={},
            coords=np.zeros((0, 2), np.int64),
            patch_size_level0=int(job.info.patch_size_level0 or self.model.tile_size),
            target_mpp=float(job.info.target_mpp or self.model.target_mpp),
            status="no_tissue",
            message=reason,
            path=job.info.path,
            engine=self.engine.describe(),
            model=dict(self.model.info),
        )

    def close(self) -> None:
        self.engine.close()


def _bundle_folder(bundle: Any, model: ScoringModel) -> str | None:
    """The folder a bundle was read from, where it has one."""
    if isinstance(bundle, str | os.PathLike):
        return os.fspath(Path(bundle).resolve())
    folder = getattr(bundle, "path", None) or model.info.get("bundle")
    return None if folder is None else os.fspath(Path(folder).resolve())


def item_source(slide_id: str | None, source: Any) -> Any:
    """What score_iter yields back for an input: the input as it was given."""
    return (slide_id, source) if slide_id is not None else source


def _add(stats: dict[str, StageStats], name: str, seconds: float, tiles: int) -> None:
    s = stats.setdefault(name, StageStats(name))
    s.busy_s += seconds
    s.tiles += tiles
