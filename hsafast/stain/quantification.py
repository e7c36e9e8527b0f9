"""Per-tile stain statistics of an IHC slide, and the slide label they imply.

``quantify`` reads tiles in batches, runs the fused pixel-statistics kernel on
every tile and, for nuclear and membranous markers, finds and grades cells on
the concentration maps. ``slide_label`` pools the counts of the included tiles
(not the mean of per-tile ratios, which would over-weight sparse tiles) into the
marker's score and class. Blank and saturated tiles are flagged and excluded;
nothing in a label is ever NaN.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hsafast.errors import InvalidParameterError
from hsafast.slides import Slide, open_slide
from hsafast.stain.compartments import CellConfig, membranous_cells, nuclear_cells
from hsafast.stain.deconvolution import STAT_NAMES, PixelThresholds, concentrations, pixel_stats
from hsafast.stain.markers import Marker, get_marker
from hsafast.stain.vectors import HED, StainMatrix
from hsafast.tiling import TileGrid

#: Tile flag bits.
BLANK = 1
SATURATED = 2
NO_CELLS = 4
FLAG_NAMES = {BLANK: "blank", SATURATED: "saturated", NO_CELLS: "no cells"}


@dataclass(frozen=True)
class QuantifyConfig:
    """How tiles are judged (thresholds other than the marker's DAB grades)."""

    min_tissue: float = 0.05
    """Tiles with a smaller tissue share are blank (flagged, excluded)."""
    max_saturated: float = 0.25
    """Tiles with a larger share of saturated tissue pixels are excluded."""
    hematoxylin: float = 0.15
    tissue_od: float = 0.15
    saturation: int = 2
    no_dab_fraction: float = 0.001
    """Below this DAB 1+ share of tissue the slide is flagged "no DAB signal"."""
    max_residual: float = 0.05
    """Above this mean residual-stain OD the colours are not H-DAB (H&E's eosin
    lands there: 0.12-0.16 on the H&E test images, below 0 on the IHC ones)."""
    cells: CellConfig = field(default_factory=CellConfig)
    batch_size: int = 32


@dataclass
class StainStats:
    """Per-tile statistics of one IHC slide for one marker."""

    marker: str
    coords: np.ndarray
    """N x 2 int64 level-0 top-left corners."""
    level: int
    size: int
    """Tile side in pixels of ``level``."""
    mpp: float | None
    """Pixel size of the tiles as read."""
    pixels: np.ndarray
    """N x 8 pixel statistics (columns :data:`STAT_NAMES`)."""
    cells: np.ndarray
    """N x 4 int64: scored (tumour-like) cells, and those of grade >= 1, 2, 3 (zeros for
    cytoplasmic markers); see :class:`~hsafast.stain.compartments.CellConfig`."""
    flags: np.ndarray
    """N uint8 bit flags (BLANK, SATURATED, NO_CELLS)."""
    slide_path: str | None = None

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def included(self) -> np.ndarray:
        return (self.flags & (BLANK | SATURATED)) == 0

    def _col(self, name: str) -> np.ndarray:
        return self.pixels[:, STAT_NAMES.index(name)]

    @property
    def tissue_fraction(self) -> np.ndarray:
        return self._col("tissue") / float(self.size * self.size)

    def dab_fraction(self, grade: int = 1) -> np.ndarray:
        """Share of tissue pixels at DAB grade >= ``grade`` (0 where no tissue)."""
        return _ratio(self._col(f"dab_{grade}"), self._col("tissue"))

    @property
    def dab_mean(self) -> np.ndarray:
        """Mean zero-clamped DAB OD over tissue pixels."""
        return _ratio(self._col("dab_sum"), self._col("tissue"))

    @property
    def hematoxylin_fraction(self) -> np.ndarray:
        return _ratio(self._col("hema"), self._col("tissue"))

    def positive_cell_fraction(self, grade: int = 1) -> np.ndarray:
        return _ratio(self.cells[:, grade].astype(np.float64), self.cells[:, 0])

    def aggregate(self) -> dict[str, float]:
        """Pooled statistics of the included tiles (shares of their tissue and cells)."""
        inc = self.included
        px = self.pixels[inc].sum(axis=0) if inc.any() else np.zeros(len(STAT_NAMES))
        cells = self.cells[inc].sum(axis=0) if inc.any() else np.zeros(4)
        tissue, n = float(px[0]), float(cells[0])
        out = {"tiles": float(inc.sum()), "tissue_pixels": tissue, "cells": n}
        for i, name in enumerate(STAT_NAMES[1:], start=1):
            out[f"{name}_per_tissue"] = float(px[i]) / tissue if tissue > 0 else 0.0
        for g in (1, 2, 3):
            out[f"cells_{g}_fraction"] = float(cells[g]) / n if n > 0 else 0.0
        return out

    def columns(self) -> dict[str, np.ndarray]:
        """Named per-tile columns (what the CLI writes next to the coordinates)."""
        out: dict[str, np.ndarray] = {
            "x": self.coords[:, 0],
            "y": self.coords[:, 1],
            "tissue_fraction": self.tissue_fraction,
            "dab_1_fraction": self.dab_fraction(1),
            "dab_2_fraction": self.dab_fraction(2),
            "dab_3_fraction": self.dab_fraction(3),
            "dab_mean": self.dab_mean,
            "hematoxylin_fraction": self.hematoxylin_fraction,
            "saturated_fraction": _ratio(self._col("saturated"), self._col("tissue")),
            "residual_mean": _ratio(self._col("residual_sum"), self._col("tissue")),
            "cells": self.cells[:, 0],
            "cells_1": self.cells[:, 1],
            "cells_2": self.cells[:, 2],
            "cells_3": self.cells[:, 3],
            "positive_cell_fraction": self.positive_cell_fraction(1),
            "flags": self.flags,
        }
        return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(den), where=den > 0)


@dataclass(frozen=True)
class SlideLabel:
    """The slide-level reading of a marker."""

    marker: str
    label: str | None
    """Class name; None when the slide holds nothing to score (see ``flags``)."""
    binary: str | None
    """"low" or "intermediate/high"."""
    score: float
    """Positive share (cells, or tissue pixels for cytoplasmic markers), 0-1."""
    groups: dict[str, str]
    flags: tuple[str, ...]
    n_cells: int
    n_tiles: int
    n_excluded: int
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "marker": self.marker,
            "label": self.label,
            "binary": self.binary,
            "score": self.score,
            "groups": self.groups,
            "flags": list(self.flags),
            "n_cells": self.n_cells,
            "n_tiles": self.n_tiles,
            "n_excluded": self.n_excluded,
            "details": self.details,
        }


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def quantify(
    ihc_slide: Slide | str | os.PathLike[str],
    grid_or_coords: TileGrid | np.ndarray,
    marker: Marker | str,
    *,
    level: int = 0,
    size: int = 256,
    matrix: StainMatrix = HED,
    config: QuantifyConfig | None = None,
) -> StainStats:
    """Stain statistics of every tile of an IHC slide for ``marker``.

    With a TileGrid, tiles are read at ``grid.level`` with ``grid.read_size``
    pixels (statistics are computed on the pixels as read); with raw level-0
    coordinates, ``level`` and ``size`` say what to read.
    """
    cfg = config or QuantifyConfig()
    m = get_marker(marker)
    _ = matrix.stains_from_rgb  # StainError on a singular matrix, before any reading
    if isinstance(grid_or_coords, TileGrid):
        coords = np.asarray(grid_or_coords.coords, dtype=np.int64).reshape(-1, 2)
        level, size = grid_or_coords.level, grid_or_coords.read_size
    else:
        coords = np.asarray(grid_or_coords, dtype=np.int64).reshape(-1, 2)
    if size <= 0:
        raise InvalidParameterError(f"tile size must be positive, got {size}")
    slide = ihc_slide if isinstance(ihc_slide, Slide) else open_slide(ihc_slide)
    try:
        mpp = slide.level_mpp(level) if m.compartment != "cytoplasmic" else _maybe_mpp(slide, level)
        return _quantify(slide, coords, level, size, mpp, m, matrix, cfg)
    finally:
        if slide is not ihc_slide:
            slide.close()


def _maybe_mpp(slide: Slide, level: int) -> float | None:
    from hsafast.errors import MissingPixelSizeError

    try:
        return slide.level_mpp(level)
    except MissingPixelSizeError:
        return None


def _quantify(
    slide: Slide,
    coords: np.ndarray,
    level: int,
    size: int,
    mpp: float | None,
    m: Marker,
    matrix: StainMatrix,
    cfg: QuantifyConfig,
) -> StainStats:
    thr = PixelThresholds(m.dab_thresholds, cfg.hematoxylin, cfg.tissue_od, cfg.saturation)
    n = len(coords)
    pixels = np.zeros((n, len(STAT_NAMES)))
    cells = np.zeros((n, 4), dtype=np.int64)
    flags = np.zeros(n, dtype=np.uint8)
    area = float(size * size)
    h_idx, d_idx = matrix.index("hematoxylin"), matrix.index("dab")
    detect = {"nuclear": nuclear_cells, "membranous": membranous_cells}.get(m.compartment)
    for sl in _batches(n, cfg.batch_size):
        tiles = slide.read_regions(coords[sl], level, (size, size))
        px = pixel_stats(tiles, matrix, thr)
        pixels[sl] = px
        tissue = px[:, 0]
        f = np.where(tissue < cfg.min_tissue * area, BLANK, 0)
        f |= np.where(px[:, 5] > cfg.max_saturated * np.maximum(tissue, 1), SATURATED, 0)
        flags[sl] = f
        if detect is None or mpp is None:
            continue
        for i in np.nonzero(f == 0)[0]:
            conc = concentrations(tiles[i], matrix)
            c = detect(conc[..., h_idx], conc[..., d_idx], mpp, m.dab_thresholds, cfg.cells)
            j = sl.start + int(i)
            g = c.grade[c.scored]
            cells[j] = [len(g), *(int((g >= k).sum()) for k in (1, 2, 3))]
            if len(g) == 0:
                flags[j] |= NO_CELLS
    return StainStats(m.name, coords, level, size, mpp, pixels, cells, flags, str(slide.path))


def slide_label(
    stats: StainStats, marker: Marker | str | None = None, config: QuantifyConfig | None = None
) -> SlideLabel:
    """The marker's class, binary label, score and flags for a slide."""
    cfg = config or QuantifyConfig()
    m = get_marker(marker if marker is not None else stats.marker)
    inc = stats.included
    px = stats.pixels[inc]
    counts = stats.cells[inc].sum(axis=0) if inc.any() else np.zeros(4, dtype=np.int64)
    tissue = float(px[:, 0].sum())
    flags: list[str] = []
    n_excluded = int((~inc).sum())
    if n_excluded:
        reasons = [
            f"{int(((stats.flags & bit) > 0).sum())} {name}"
            for bit, name in FLAG_NAMES.items()
            if bit != NO_CELLS and ((stats.flags & bit) > 0).any()
        ]
        flags.append(f"{n_excluded} tiles excluded ({', '.join(reasons)})")
    dab1 = float(px[:, 1].sum()) / tissue if tissue > 0 else 0.0
    details = {
        "tissue_pixels": tissue,
        "dab_1_fraction": dab1,
        "dab_mean": float(px[:, 6].sum()) / tissue if tissue > 0 else 0.0,
        "residual_mean": float(px[:, 8].sum()) / tissue if tissue > 0 else 0.0,
    }
    if tissue <= 0:
        flags.append("no tissue")
        return SlideLabel(
            m.name, None, None, 0.0, {}, tuple(flags), 0, len(stats), n_excluded, details
        )
    if dab1 < cfg.no_dab_fraction:
        flags.append("no DAB signal")
    elif details["residual_mean"] > cfg.max_residual:
        flags.append("no DAB signal (the colours do not fit hematoxylin-DAB; an H&E slide?)")
    n_cells = int(counts[0])
    if m.compartment == "cytoplasmic":
        score = float(px[:, m.positive_grade].sum()) / tissue
    else:
        if n_cells == 0:
            flags.append("no cells")
            return SlideLabel(
                m.name, None, None, 0.0, {}, tuple(flags), 0, len(stats), n_excluded, details
            )
        if n_cells < m.min_cells:
            flags.append(f"few cells ({n_cells})")
        score = float(counts[m.positive_grade]) / n_cells
        details.update({f"cells_{g}_fraction": float(counts[g]) / n_cells for g in (1, 2, 3)})
    if m.rule == "p53":
        strong = float(counts[m.strong_grade]) / n_cells
        stained = float(counts[1]) / n_cells
        if strong >= m.overexpression_fraction:
            label = "overexpression"
        elif stained <= m.null_fraction:
            label = "null"
            if counts[1] == 0:
                flags.append("null without internal control (no stained nuclei at all)")
        else:
            label = "wild-type"
    else:
        label = m.classify(score)
    groups = {name: g[label] for name, g in m.groupings.items()}
    return SlideLabel(
        m.name,
        label,
        m.binary[label],
        score,
        groups,
        tuple(flags),
        n_cells,
        len(stats),
        n_excluded,
        details,
    )
