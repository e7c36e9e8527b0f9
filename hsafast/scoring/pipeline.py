"""The scoring pipeline: reading, encoding and pooling overlap, and the next slide is prefetched.

Three threads joined by bounded queues, so every stage works while the others do and memory
stays bounded (`prefetch` batches between stages):

    source:  per slide: open, tissue, grid, read_tiles (its own decoding threads),
             preprocess (CPU) or pinned upload (GPU)       -> batches
    encode:  the engine runs the tile network               -> tile outputs
    pool:    SlideAccumulator: pooling states, per-tile outputs -> SlideResult

The source goes straight on to the next slide when one is read, so the engine never waits
for a slide to open. Failures are per slide: a slide that cannot be read, or whose engine
output is not finite, comes out as its error and the rest go on. Each stage counts its
busy time (its own work, not waits on queues) and tiles; `StageStats` gives tiles/s.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hsafast.errors import HsafastError, SlideError

log = logging.getLogger("hsafast.scoring")

__all__ = ["Batch", "SlideJob", "StageStats", "run_pipeline"]


@dataclass
class StageStats:
    """Work of one stage over a run: busy seconds and tiles (or slides) processed."""

    name: str
    busy_s: float = 0.0
    tiles: int = 0

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.busy_s if self.busy_s > 0 else float("inf")

    def to_dict(self) -> dict[str, float | None]:
        rate = self.tiles_per_s
        return {
            "busy_s": round(self.busy_s, 4),
            "tiles": self.tiles,
            "tiles_per_s": round(rate, 1) if rate != float("inf") else None,
        }


@dataclass
class Batch:
    """Tiles ready for the engine: preprocessed (CPU) or uploaded uint8 (GPU), with coords."""

    x: Any
    coords: np.ndarray
    ready: Any = None
    """A CUDA event the engine's stream waits for (uploads on the copy stream)."""
    features: bool = False
    """x holds precomputed tile embeddings (N x D), not tiles: the encoder is skipped."""


@dataclass
class SlideJob:
    """One slide to score."""

    index: int
    info: Any  # SlideInfo
    batches: Callable[[dict[str, StageStats]], Iterator[Batch]]
    """Opens the slide at once (may raise; may update `info`) and returns an iterator of its
    batches; both add their time to the stats they are given."""
    source: Any = None
    """The input as the caller gave it (yielded back with the result)."""
    no_tissue: str | None = None
    """Set when it is known before reading that the slide has no tissue (the reason)."""


# ---- messages between stages ----------------------------------------------------------
@dataclass
class _Begin:
    job: SlideJob


@dataclass
class _Tiles:
    index: int
    batch: Batch
    outputs: dict[str, Any] | None = None


@dataclass
class _End:
    index: int


@dataclass
class _Failed:
    index: int
    error: BaseException


@dataclass
class _NoTissue:
    job: SlideJob
    reason: str


@dataclass
class _Crash:
    error: BaseException


_DONE = object()


@dataclass
class _Run:
    stop: threading.Event = field(default_factory=threading.Event)
    stats: dict[str, StageStats] = field(default_factory=dict)

    def stat(self, name: str) -> StageStats:
        if name not in self.stats:
            self.stats[name] = StageStats(name)
        return self.stats[name]

    def put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Puts unless the run was stopped (then False)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE


def run_pipeline(
    jobs: Iterable[SlideJob],
    encode: Callable[[Batch], dict[str, Any]],
    accumulate: Callable[[SlideJob], Any],
    finish: Callable[[SlideJob, Any, dict[str, StageStats]], Any],
    no_tissue: Callable[[SlideJob, str], Any],
    prefetch: int = 2,
    stats: dict[str, StageStats] | None = None,
) -> Iterator[tuple[SlideJob, Any]]:
    """Runs the three stages; yields (job, SlideResult or the HsafastError it failed with).

    `encode(batch)` runs the engine; `accumulate(job)` makes the slide's accumulator (with
    absorb(outputs, coords)); `finish(job, accumulator, slide_stats)` makes its result.
    `stats` (if given) receives the stages' totals. Results come out in job order.
    """
    run = _Run()
    to_encode: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
    to_pool: queue.Queue[Any] = queue.Queue(maxsize=max(1, prefetch))
    results: queue.Queue[Any] = queue.Queue()
    jobs_by_index: dict[int, SlideJob] = {}

    def source() -> None:
        try:
            for job in jobs:
                jobs_by_index[job.index] = job
                if run.stop.is_set():
                    return
                if job.no_tissue is not None:
                    run.put(to_encode, _NoTissue(job, job.no_tissue))
                    continue
                try:
                    batches = job.batches(run.stats)  # opens the slide, finds tissue, tiles
                except Exception as exc:  # recorded per slide; the run goes on
                    run.put(to_encode, _slide_failure(job, exc))
                    continue
                if not run.put(to_encode, _Begin(job)):
                    return
                try:
                    for batch in batches:
                        if not run.put(to_encode, _Tiles(job.index, batch)):
                            return
                except Exception as exc:
                    run.put(to_encode, _slide_failure(job, exc))
                    continue
                run.put(to_encode, _End(job.index))
        except BaseException as exc:  # a bug: stop the run and raise it in the consumer
            run.put(to_encode, _Crash(exc))
        finally:
            run.put(to_encode, _DONE)

    def encoder() -> None:
        failed: set[int] = set()
        stat = run.stat("encode")
        try:
            while (msg := run.get(to_encode)) is not _DONE:
                if isinstance(msg, _Tiles):
                    if msg.index in failed:
                        continue
                    t0 = time.perf_counter()
                    try:
                        msg.outputs = encode(msg.batch)
                    except Exception as exc:  # recorded per slide; the run goes on
                        failed.add(msg.index)
                        msg = _Failed(msg.index, engine_error(exc))
                    else:
                        stat.busy_s += time.perf_counter() - t0
                        stat.tiles += len(msg.batch.coords)
                        msg.batch.x = None  # release the input early
                elif isinstance(msg, _Failed):
                    failed.add(msg.index)
                if not run.put(to_pool, msg):
                    return
        except BaseException as exc:
            run.put(to_pool, _Crash(exc))
        finally:
            run.put(to_pool, _DONE)

    def pooler() -> None:
        stat = run.stat("pool")
        current: dict[int, Any] = {}
        failed: set[int] = set()
        try:
            while (msg := run.get(to_pool)) is not _DONE:
                t0 = time.perf_counter()
                if isinstance(msg, _Begin):
                    current[msg.job.index] = accumulate(msg.job)
                elif isinstance(msg, _Tiles):
                    if msg.index in failed:
                        continue
                    try:
                        current[msg.index].absorb(msg.outputs, msg.batch.coords)
                    except HsafastError as exc:
                        failed.add(msg.index)
                        current.pop(msg.index, None)
                        results.put((jobs_by_index[msg.index], exc))
                        continue
                    stat.tiles += len(msg.batch.coords)
                elif isinstance(msg, _End):
                    if msg.index in failed:
                        continue
                    job = jobs_by_index[msg.index]
                    try:
                        out = finish(job, current.pop(msg.index), run.stats)
                    except HsafastError as exc:
                        out = exc
                    results.put((job, out))
                elif isinstance(msg, _Failed):
                    if msg.index not in failed:
                        failed.add(msg.index)
                        current.pop(msg.index, None)
                        results.put((jobs_by_index[msg.index], msg.error))
                elif isinstance(msg, _NoTissue):
                    results.put((msg.job, no_tissue(msg.job, msg.reason)))
                elif isinstance(msg, _Crash):
                    results.put(msg)
                    return
                stat.busy_s += time.perf_counter() - t0
        except BaseException as exc:
            results.put(_Crash(exc))
        finally:
            results.put(_DONE)

    threads = [
        threading.Thread(target=fn, name=f"hsafast-score-{fn.__name__}", daemon=True)
        for fn in (source, encoder, pooler)
    ]
    for t in threads:
        t.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                break
            if isinstance(item, _Crash):
                raise item.error
            yield item
    finally:
        run.stop.set()
        for t in threads:
            t.join()
        if stats is not None:
            for name, s in run.stats.items():
                total = stats.setdefault(name, StageStats(name))
                total.busy_s += s.busy_s
                total.tiles += s.tiles


def _slide_failure(job: SlideJob, exc: BaseException) -> Any:
    """The message for a slide that could not be read: no tissue, or its error."""
    from hsafast.errors import NoTissueError

    if isinstance(exc, NoTissueError):
        return _NoTissue(job, exc.reason)
    return _Failed(job.index, slide_error(job.info.path, exc))


def slide_error(path: Any, exc: BaseException) -> HsafastError:
    """Any failure while reading a slide, as a SlideError naming the file."""
    if isinstance(exc, HsafastError):
        return exc
    return SlideError(f"{type(exc).__name__}: {exc}", path)


def engine_error(exc: BaseException) -> HsafastError:
    """Any failure of the engine, as an EngineError (HsafastErrors pass through)."""
    from hsafast.errors import EngineError

    if isinstance(exc, HsafastError):
        return exc
    return EngineError(f"the engine failed: {type(exc).__name__}: {exc}")
