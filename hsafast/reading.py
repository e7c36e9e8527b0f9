"""Reading the tiles of a TileGrid in batches, from parallel readers, in grid order.

``read_tiles`` cuts the grid into batches; a pool of ``workers`` threads reads one
batch each (``Slide.read_regions``: the tifffile backend decodes JPEG tiles with
libjpeg-turbo without the GIL) and at most ``workers + prefetch`` batches are in
flight, so memory stays bounded however large the slide. Batches come out in
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
from hsafast.slides.base import shrink
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
    ``workers`` reader threads (default: all cores) each decode whole batches;
    ``prefetch`` extra batches are read ahead. Stopping early (``break``) cancels
    the rest cleanly; a reading error is raised as a SlideError naming the file.
    ``scaled_decode=False`` forces full decoding and area resizing even where DCT
    scaling is available.
    """
    if batch_size < 1:
        raise InvalidParameterError(f"batch_size must be at least 1, got {batch_size}")
    if prefetch < 0:
        raise InvalidParameterError(f"prefetch must be non-negative, got {prefetch}")
    n_workers = max(1, int(workers)) if workers is not None else (os.cpu_count() or 1)
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
    starts = range(0, len(coords), batch_size)
    bar = _ProgressBar(slide.path, len(coords)) if progress else None

    def job(start: int) -> TileBatch:
        chunk = coords[start : start + batch_size]
        if plan.reduce > 1:
            tiles = slide.read_regions(
                chunk, grid.level, (grid.size, grid.size), workers=1, reduce=plan.reduce
            )
        else:
            tiles = slide.read_regions(
                chunk, grid.level, (plan.read_size, plan.read_size), workers=1
            )
            if plan.resize:
                tiles = np.stack([shrink(t, (grid.size, grid.size)) for t in tiles])
        return TileBatch(tiles=tiles, coords=chunk, start=start)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hsafast-read")
    pending: deque[Future[TileBatch]] = deque()
    it = iter(starts)
    try:
        for start in it:
            pending.append(pool.submit(job, start))
            if len(pending) >= workers + prefetch:
                break
        while pending:
            batch = _result(pending.popleft(), slide.path)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(job, nxt))
            if bar is not None:
                bar.advance(len(batch))
            yield batch
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def _result(fut: Future[TileBatch], path: Path) -> TileBatch:
    try:
        return fut.result()
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
