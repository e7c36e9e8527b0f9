"""Reading the tiles of a TileGrid in batches, from parallel readers, in grid order.

``read_tiles`` cuts the grid into batches and each batch into one chunk per
worker; a pool of ``workers`` threads reads the chunks straight into the batch
(``Slide.read_regions``: the tifffile backend decodes JPEG tiles with
libjpeg-turbo without the GIL). At most ``prefetch + 1`` batches are in flight,
so memory stays bounded however large the slide. Batches come out in
grid order. When the grid reads a finer level than its target (``read_size`` >
``size``), tiles are decoded at reduced scale in the DCT domain where the
backend can (2x, 4x, 8x), else read in full and resized with area averaging.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsafast.errors import HsafastError, InvalidParameterError, SlideError
from hsafast.slides import Slide, open_slide
from hsafast.slides.base import default_workers, shrink
from hsafast.tiling import TileGrid

__all__ = ["TileBatch", "read_plan", "read_tiles"]


@dataclass(frozen=True)
class TileBatch:
    """Consecutive tiles of a grid.

    ``tiles`` is (N, size, size, 3) uint8 RGB; ``coords`` (N x 2 int64) are their
    level-0 top-left corners; ``start`` is the index of the first tile in the grid.
    """

    tiles: np.ndarray
    coords: np.ndarray
    start: int

    def __len__(self) -> int:
        return int(self.coords.shape[0])


@dataclass(frozen=True)
class ReadPlan:
    """How a grid's tiles are read: pixels per tile at ``grid.level`` and the shrink."""

    read_size: int  # level pixels read per tile edge
    reduce: int  # DCT-domain reduction (1: none)
    resize: bool  # resize the decoded tile to grid.size afterwards


def read_plan(slide: Slide, grid: TileGrid, scaled_decode: bool = True) -> ReadPlan:
    """Choose between reading at ``grid.read_size`` and decoding at reduced scale."""
    if grid.read_size == grid.size:
        return ReadPlan(grid.read_size, 1, False)
    ratio, rest = divmod(grid.read_size, grid.size)
    if scaled_decode and rest == 0 and slide.decodes_reduced(grid.level, ratio):
        return ReadPlan(grid.read_size, ratio, False)
    return ReadPlan(grid.read_size, 1, True)


def read_tiles(
    slide: Slide | str | os.PathLike[str],
    grid: TileGrid,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
    *,
    prefetch: int = 2,
    scaled_decode: bool = True,
) -> Iterator[TileBatch]:
    """Yield the grid's tiles as batches of ``batch_size`` (the last may be shorter).

    ``slide`` is an open Slide or a path (opened here and closed at the end).
    ``workers`` reader threads (default: all cores) share each batch;
    ``prefetch`` batches are read ahead of the one being consumed. Stopping early
    (``break``) cancels the rest cleanly; a reading error is raised as a SlideError
    naming the file.
    ``scaled_decode=False`` forces full decoding and area resizing even where DCT
    scaling is available.
    """
    if batch_size < 1:
        raise InvalidParameterError(f"batch_size must be at least 1, got {batch_size}")
    if prefetch < 0:
        raise InvalidParameterError(f"prefetch must be non-negative, got {prefetch}")
    n_workers = max(1, int(workers)) if workers is not None else default_workers()
    owned = not isinstance(slide, Slide)
    opened = open_slide(slide) if not isinstance(slide, Slide) else slide
    try:
        _check_grid(opened, grid)
        yield from _batches(opened, grid, batch_size, n_workers, prefetch, progress, scaled_decode)
    finally:
        if owned:
            opened.close()


def _check_grid(slide: Slide, grid: TileGrid) -> None:
    coords = np.asarray(grid.coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InvalidParameterError(f"grid coords must be N x 2, got {coords.shape}", slide.path)
    if not 0 <= grid.level < slide.level_count:
        raise InvalidParameterError(
            f"grid level {grid.level} does not exist (the slide has {slide.level_count})",
            slide.path,
        )
    if grid.read_size <= 0 or grid.size <= 0:
        raise InvalidParameterError(
            f"grid sizes must be positive (read_size={grid.read_size}, size={grid.size})",
            slide.path,
        )


def _batches(
    slide: Slide,
    grid: TileGrid,
    batch_size: int,
    workers: int,
    prefetch: int,
    progress: bool,
    scaled_decode: bool,
) -> Iterator[TileBatch]:
    coords = np.ascontiguousarray(grid.coords, dtype=np.int64)
    plan = read_plan(slide, grid, scaled_decode)
    size = grid.size
    bar = _ProgressBar(slide.path, len(coords)) if progress else None

    def job(sub: np.ndarray, out: np.ndarray) -> None:
        if plan.reduce > 1:
            slide.read_regions(
                sub, grid.level, (size, size), workers=1, reduce=plan.reduce, out=out
            )
        elif not plan.resize:
            slide.read_regions(sub, grid.level, (size, size), workers=1, out=out)
        else:
            full = slide.read_regions(sub, grid.level, (plan.read_size, plan.read_size), workers=1)
            for i, tile in enumerate(full):
                out[i] = shrink(tile, (size, size))

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hsafast-read")
    pending: deque[tuple[int, np.ndarray, list[Future[None]]]] = deque()

    def submit(start: int) -> None:
        sub = coords[start : start + batch_size]
        out = np.empty((len(sub), size, size, 3), dtype=np.uint8)
        # one chunk per worker, sized by this batch, so that small grids and the
        # last, shorter batch keep every worker busy; chunks write into the batch
        chunk = max(1, -(-len(sub) // workers))
        futures = [
            pool.submit(job, sub[a : a + chunk], out[a : a + chunk])
            for a in range(0, len(sub), chunk)
        ]
        pending.append((start, out, futures))

    starts = iter(range(0, len(coords), batch_size))
    try:
        for start in starts:
            submit(start)
            if len(pending) > prefetch:
                break
        while pending:
            start, out, futures = pending.popleft()
            for fut in futures:
                _result(fut, slide.path)
            nxt = next(starts, None)
            if nxt is not None:
                submit(nxt)
            if bar is not None:
                bar.advance(len(out))
            yield TileBatch(tiles=out, coords=coords[start : start + len(out)], start=start)
    finally:
        for _, _, futures in pending:
            for fut in futures:
                fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def _result(fut: Future[None], path: Path) -> None:
    try:
        fut.result()
    except HsafastError:
        raise
    except Exception as exc:
        raise SlideError(f"reading tiles failed: {type(exc).__name__}: {exc}", path) from exc


class _ProgressBar:
    """A rich progress bar over tiles; created only when asked for."""

    def __init__(self, path: Path, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tiles"),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task(f"reading {path.name}", total=total)
        self._progress.start()

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def close(self) -> None:
        self._progress.stop()
