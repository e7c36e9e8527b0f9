"""Per-tile stain statistics of an IHC slide (``quantify``).

Tiles come from :func:`hsafast.read_tiles` (threaded reading, batches in grid
order); every tile goes through the fused pixel-statistics kernel and, for nuclear
and membranous markers, through the batched cell detector
(:func:`~hsafast.stain.compartments.detect_cells`). Blank, saturated and
eosin-coloured tiles are flagged and excluded. For nuclear markers a few tiles
spread over the slide are also checked for a nuclear DAB pattern
(:mod:`hsafast.stain.pattern`). The slide label is :func:`slide_label`'s job.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from hsafast.errors import InvalidParameterError, MissingPixelSizeError, StainError
from hsafast.slides import Slide, open_slide
from hsafast.stain.compartments import detect_cells
from hsafast.stain.deconvolution import STAT_NAMES, PixelThresholds, eosin_share, pixel_stats
from hsafast.stain.labels import SlideLabel, slide_label
from hsafast.stain.markers import Marker, get_marker
from hsafast.stain.pattern import dab_holes
from hsafast.stain.stats import (
    BLANK,
    EOSIN,
    FLAG_NAMES,
    NO_CELLS,
    SATURATED,
    CellTable,
    QuantifyConfig,
    StainStats,
)
from hsafast.stain.vectors import StainMatrix, estimate_hdab
from hsafast.tiling import TileGrid

__all__ = [
    "BLANK",
    "EOSIN",
    "FLAG_NAMES",
    "NO_CELLS",
    "SATURATED",
    "QuantifyConfig",
    "SlideLabel",
    "StainStats",
    "quantify",
    "slide_label",
]


def quantify(
    ihc_slide: Slide | str | os.PathLike[str],
    grid_or_coords: TileGrid | np.ndarray,
    marker: Marker | str,
    *,
    level: int = 0,
    size: int = 256,
    matrix: StainMatrix | Literal["auto"] = "auto",
    config: QuantifyConfig | None = None,
) -> StainStats:
    """Stain statistics of every tile of an IHC slide for ``marker``.

    With a TileGrid, tiles are read as the grid says (at ``grid.level``, resized to
    ``grid.size`` when the level does not match the target pixel size); with raw
    level-0 coordinates, ``level`` and ``size`` say what to read. ``matrix="auto"``
    estimates the slide's own hematoxylin and DAB vectors from a sample of its tiles
    (:func:`~hsafast.stain.vectors.estimate_hdab`); a StainMatrix is used as given.
    Cell-level markers need a pixel size of at most ``config.max_cell_mpp``
    (1.2 um/px by default): a coarser one raises ``StainError``.
    """
    cfg = config or QuantifyConfig()
    m = get_marker(marker)
    if isinstance(matrix, StainMatrix):
        _ = matrix.stains_from_rgb  # StainError on a singular matrix, before any reading
    elif matrix != "auto":
        raise InvalidParameterError(f"matrix must be a StainMatrix or 'auto', got {matrix!r}")
    slide = ihc_slide if isinstance(ihc_slide, Slide) else open_slide(ihc_slide)
    try:
        if isinstance(grid_or_coords, TileGrid):
            grid = grid_or_coords
        else:
            grid = _coords_grid(slide, grid_or_coords, level, size)
        cells = m.compartment != "cytoplasmic"
        mpp = _tile_mpp(slide, grid, required=cells)
        if cells and mpp is not None and mpp > cfg.max_cell_mpp:
            raise StainError(
                f"{mpp:.3g} um/px is too coarse to score cells for {m.name}: a "
                f"{cfg.smallest_nucleus_um:g} um nucleus spans "
                f"{cfg.smallest_nucleus_um / mpp:.1f} px, at least {cfg.min_nucleus_px:g} px "
                f"are needed (tiles of {cfg.max_cell_mpp:.2g} um/px or finer)",
                slide.path,
            )
        if not isinstance(matrix, StainMatrix):
            matrix = _slide_matrix(slide, grid, cfg)
        return _measure(slide, grid, mpp, m, matrix, cfg)
    finally:
        if slide is not ihc_slide:
            slide.close()


def _coords_grid(slide: Slide, coords: np.ndarray, level: int, size: int) -> TileGrid:
    """A TileGrid reading ``size``-pixel tiles of ``level`` at level-0 ``coords``."""
    pts = np.ascontiguousarray(np.asarray(coords, dtype=np.int64).reshape(-1, 2))
    if not (isinstance(size, int | np.integer) and size > 0):
        raise InvalidParameterError(f"tile size must be a positive integer, got {size}", slide.path)
    if not 0 <= level < slide.level_count:
        raise InvalidParameterError(
            f"level {level} does not exist (the slide has {slide.level_count})", slide.path
        )
    try:
        target = slide.level_mpp(level)
    except MissingPixelSizeError:
        target = math.nan
    return TileGrid(
        slide_path=Path(slide.path),
        coords=pts,
        tissue_fraction=np.ones(len(pts), np.float32),
        level=int(level),
        read_size=int(size),
        size=int(size),
        patch_size_level0=max(1, round(int(size) * slide.level_downsamples[level])),
        target_mpp=target,
    )


def _slide_matrix(slide: Slide, grid: TileGrid, cfg: QuantifyConfig) -> StainMatrix:
    """The slide's own stain vectors, from tiles spread evenly over the grid."""
    from hsafast.reading import read_tiles

    n = len(grid)
    if n == 0:
        return estimate_hdab(np.zeros((0, 3), np.uint8))
    pick = np.unique(np.linspace(0, n - 1, min(n, cfg.stain_sample_tiles)).round().astype(int))
    sample = replace(
        grid, coords=grid.coords[pick], tissue_fraction=np.asarray(grid.tissue_fraction)[pick]
    )
    tiles = [b.tiles for b in read_tiles(slide, sample, batch_size=len(pick), workers=cfg.workers)]
    return estimate_hdab(np.concatenate(tiles))


def _tile_mpp(slide: Slide, grid: TileGrid, required: bool) -> float | None:
    """Pixel size of the tiles as measured (after resizing to ``grid.size``)."""
    try:
        return slide.level_mpp(grid.level) * grid.read_size / grid.size
    except MissingPixelSizeError:
        if required:
            raise
        return None


def _measure(
    slide: Slide,
    grid: TileGrid,
    mpp: float | None,
    m: Marker,
    matrix: StainMatrix,
    cfg: QuantifyConfig,
) -> StainStats:
    from hsafast.reading import read_tiles

    thr = PixelThresholds(m.dab_thresholds, cfg.hematoxylin, cfg.tissue_od, cfg.saturation)
    n = len(grid)
    pixels = np.zeros((n, len(STAT_NAMES)))
    cells = np.zeros((n, 4), dtype=np.int64)
    others = np.zeros((n, 2), dtype=np.int64)
    pattern = np.zeros((n, 3), dtype=np.int64)
    flags = np.zeros(n, dtype=np.uint8)
    eosin = np.zeros(n)
    table = _TableBuilder(grid) if cfg.keep_cells else None
    area = float(grid.size * grid.size)
    scored_on_cells = m.compartment != "cytoplasmic" and mpp is not None
    # the nuclear pattern is checked on one tile per ``stride`` batches, spread over the slide
    stride = max(1, math.ceil(math.ceil(n / cfg.batch_size) / cfg.pattern_tiles))
    for b, batch in enumerate(
        read_tiles(slide, grid, batch_size=cfg.batch_size, workers=cfg.workers)
    ):
        start = batch.start
        px = pixel_stats(batch.tiles, matrix, thr)
        pixels[start : start + len(batch)] = px
        tissue = px[:, 0]
        f = np.where(tissue < cfg.min_tissue * area, BLANK, 0)
        f |= np.where(px[:, 5] > cfg.max_saturated * np.maximum(tissue, 1), SATURATED, 0)
        pink = eosin_share(batch.tiles, cfg.tissue_od)
        eosin[start : start + len(batch)] = pink
        f |= np.where((f == 0) & (pink > cfg.max_eosin_pixels), EOSIN, 0)
        flags[start : start + len(batch)] = f
        todo = np.flatnonzero(f == 0)
        if not scored_on_cells or len(todo) == 0:
            continue
        assert mpp is not None
        found = detect_cells(batch.tiles[todo], matrix, mpp, m, cfg.cells)
        for i, c in zip(todo, found, strict=True):
            j = start + int(i)
            s = c.scored
            g, go = c.grade[s], c.grade[~s]
            cells[j] = [len(g), *(int((g >= k).sum()) for k in (1, 2, 3))]
            others[j] = [len(go), int((go >= 1).sum())]
            if len(g) == 0:
                flags[j] |= NO_CELLS
            if table is not None:
                table.add(j, c.xy, c.grade, s)
        if m.compartment == "nuclear" and b % stride == 0:
            # the batch's tile with the most DAB, whether or not its nuclei read stained
            k = int(np.argmax(px[todo, 1]))
            if px[todo[k], 1] > 0:
                nuclei, holes = dab_holes(
                    batch.tiles[todo[k]], matrix, mpp, m, cfg.cells, stained=found[k]
                )
                stained = int((found[k].grade >= 1).sum())
                pattern[start + int(todo[k])] = [nuclei, holes, stained]
    return StainStats(
        m,
        np.asarray(grid.coords, dtype=np.int64),
        grid.level,
        grid.size,
        mpp,
        pixels,
        cells,
        flags,
        str(slide.path),
        others=others,
        pattern=pattern,
        cell_table=table.build() if table is not None else None,
        patch_size_level0=grid.patch_size_level0,
        matrix=matrix,
        eosin=eosin,
    )


class _TableBuilder:
    """Collects every tile's cells in level-0 coordinates."""

    def __init__(self, grid: TileGrid) -> None:
        self.coords = np.asarray(grid.coords, dtype=np.float64)
        self.scale = grid.patch_size_level0 / grid.size  # level-0 pixels per tile pixel
        self.parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, tile: int, xy: np.ndarray, grade: np.ndarray, scored: np.ndarray) -> None:
        if len(xy):
            self.parts.append((tile, xy, grade, scored))

    def build(self) -> CellTable:
        if not self.parts:
            return CellTable.empty()
        tiles = np.concatenate([np.full(len(p[1]), p[0], np.int32) for p in self.parts])
        xy = np.concatenate([p[1] for p in self.parts]).astype(np.float64)
        # tile pixel centres (integers) -> level-0 pixel centres (integers)
        xy = self.coords[tiles] + (xy + 0.5) * self.scale - 0.5
        grade = np.concatenate([p[2] for p in self.parts]).astype(np.int8)
        scored = np.concatenate([p[3] for p in self.parts]).astype(bool)
        return CellTable(tiles, xy, grade, scored)
