"""What ``quantify`` measures on an IHC slide: its settings and its per-tile results.

:class:`QuantifyConfig` holds the thresholds that judge tiles and images (the
marker's own DAB grades live in :class:`~hsafast.stain.markers.Marker`);
:class:`StainStats` holds one row per tile and, optionally, every cell found, and
keeps the whole marker it was measured for, so that a user-defined marker is read
by its own rules without being passed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hsafast.errors import InvalidParameterError
from hsafast.stain.compartments import CellConfig
from hsafast.stain.deconvolution import STAT_NAMES
from hsafast.stain.markers import Marker, get_marker
from hsafast.stain.vectors import StainMatrix

#: Tile flag bits.
BLANK = 1
SATURATED = 2
NO_CELLS = 4
EOSIN = 8
FLAG_NAMES = {BLANK: "blank", SATURATED: "saturated", NO_CELLS: "no cells", EOSIN: "eosin colours"}
#: Flags that exclude a tile from the slide's scores.
EXCLUDED = BLANK | SATURATED | EOSIN


@dataclass(frozen=True)
class QuantifyConfig:
    """How tiles and images are judged (thresholds other than the marker's DAB grades)."""

    min_tissue: float = 0.05
    """Tiles with a smaller tissue share are blank (flagged, excluded)."""
    max_saturated: float = 0.25
    """Tiles with a larger share of saturated tissue pixels are excluded: their OD is clipped."""
    hematoxylin: float = 0.15
    """Hematoxylin OD above which a pixel counts as hematoxylin area."""
    tissue_od: float = 0.15
    """Summed RGB OD above which a pixel is tissue (mean intensity below ~227)."""
    saturation: int = 2
    """A channel value at or below this is saturated."""
    no_dab_fraction: float = 0.001
    """Below this DAB 1+ share of the tissue the slide has no DAB signal and no label: a
    negative stain cannot be told from a failed one or an unstained section. Simulated
    hematoxylin-only tiles read 0 with their own stain vectors; tiles whose nuclei are 1 %
    stained read 0.0060 (median; 0.0005 at least), so a slide needs about 0.15 % stained
    nuclei to pass (``python -m bench calibrate stain``)."""
    max_eosin_pixels: float = 0.05
    """Share of a tile's tissue pixels with eosin's colour above which the tile is not
    hematoxylin-DAB (an H&E tile) and is excluded. Simulated hematoxylin-DAB tiles (stain
    hues drawn wider than real slides show) reach 0.046 (99 % below 0.011); simulated H&E
    tiles read 0.56 (median), pale ones less (1 % below 0.001); real IHC tiles read 0, real
    H&E 0.05-1 (``python -m bench calibrate stain``)."""
    max_eosin_share: float = 0.05
    """A larger share of the tissue in eosin-coloured tiles is a mixed-stain image and has
    no label: excluding those tiles could move the score by up to that share."""
    smallest_nucleus_um: float = 6.0
    """Diameter (um) of the smallest nuclei cell scores must resolve: lymphocytes, whose
    nucleus is about the size of a red cell (7 um), less where the section cuts it off-centre."""
    min_nucleus_px: float = 5.0
    """Pixels across that ``smallest_nucleus_um`` must span for cell-level scoring (so the
    pixel size must be <= 1.2 um/px). On simulated tiles the positive share stays within
    0.03 of the truth (median) down to 4.5 px across and drifts by 0.11-0.12 at 3.5-3.7 px
    (``python -m bench calibrate stain``)."""
    max_dab_holes: float = 0.2
    """Nuclear markers: unstained nuclei inside a DAB ring per stained nucleus above which
    the DAB is not nuclear (cytoplasmic or membranous staining) and the slide has no label.
    Simulated nuclear staining (5-95 % of nuclei stained, touching or apart) reaches 0.078
    per tile; 0.2 is about twice that. Simulated cytoplasmic and membranous staining reads
    1.7 (median) but down to 0.01 on single tiles with few stained cells (1 % below 0.05);
    the slide pools its checked tiles (``python -m bench calibrate stain``)."""
    pattern_tiles: int = 24
    """Tiles (spread over the slide) on which the nuclear pattern is checked (about 15 ms
    each; a few thousand nuclei)."""
    min_pattern_nuclei: int = 20
    """Fewer stained nuclei and holes together on the checked tiles leave the pattern
    unjudged."""
    stain_sample_tiles: int = 32
    """Tiles (spread over the grid) whose pixels estimate the slide's own stain vectors
    when ``quantify`` runs with ``matrix="auto"``."""
    keep_cells: bool = True
    """Keep every cell's position and grade (for overlays and patch targets)."""
    cells: CellConfig = field(default_factory=CellConfig)
    """Nucleus detection and the tumour-like rule."""
    batch_size: int = 32
    """Tiles read and measured together."""
    workers: int | None = None
    """Tile-reading threads (default: all cores)."""

    def __post_init__(self) -> None:
        for name in (
            "min_tissue",
            "max_saturated",
            "no_dab_fraction",
            "max_eosin_pixels",
            "max_eosin_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidParameterError(f"{name} must lie in [0, 1], got {value}")
        for name in (
            "hematoxylin",
            "tissue_od",
            "smallest_nucleus_um",
            "min_nucleus_px",
            "max_dab_holes",
        ):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidParameterError(f"{name} must be positive, got {value}")
        for name in ("batch_size", "pattern_tiles", "stain_sample_tiles"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise InvalidParameterError(f"{name} must be a positive integer")
        if not (isinstance(self.min_pattern_nuclei, int) and self.min_pattern_nuclei >= 0):
            raise InvalidParameterError("min_pattern_nuclei must be a non-negative integer")
        if not 0 <= self.saturation < 255:
            raise InvalidParameterError(f"saturation must lie in [0, 255), got {self.saturation}")
        if self.workers is not None and self.workers < 1:
            raise InvalidParameterError(f"workers must be at least 1, got {self.workers}")

    @property
    def max_cell_mpp(self) -> float:
        """The coarsest pixel size (um/px) at which cells are scored."""
        return self.smallest_nucleus_um / self.min_nucleus_px


@dataclass(frozen=True)
class CellTable:
    """Every cell found on a slide (one row per cell), for overlays and patch targets."""

    tile: np.ndarray
    """int32 index of the cell's tile."""
    xy: np.ndarray
    """K x 2 float64 level-0 nucleus centres."""
    grade: np.ndarray
    """int8 DAB grade 0-3."""
    scored: np.ndarray
    """bool: counted by the marker's score (tumour-like)."""

    def __len__(self) -> int:
        return int(self.tile.shape[0])

    @staticmethod
    def empty() -> CellTable:
        return CellTable(
            np.zeros(0, np.int32), np.zeros((0, 2)), np.zeros(0, np.int8), np.zeros(0, bool)
        )


@dataclass
class StainStats:
    """Per-tile statistics of one IHC slide for one marker."""

    marker: Marker
    """The marker measured (a built-in name is accepted and looked up)."""
    coords: np.ndarray
    """N x 2 int64 level-0 top-left corners."""
    level: int
    size: int
    """Tile side in pixels as measured (after any resizing to the grid's target)."""
    mpp: float | None
    """Pixel size of the tiles as measured."""
    pixels: np.ndarray
    """N x 9 pixel statistics (columns :data:`STAT_NAMES`)."""
    cells: np.ndarray
    """N x 4 int64: scored (tumour-like) cells, and those of grade >= 1, 2, 3 (zeros for
    cytoplasmic markers); see :class:`~hsafast.stain.compartments.CellConfig`."""
    flags: np.ndarray
    """N uint8 bit flags (BLANK, SATURATED, NO_CELLS, EOSIN)."""
    slide_path: str | None = None
    others: np.ndarray | None = None
    """N x 2 int64: cells not scored (stromal, immune), and those of grade >= 1."""
    pattern: np.ndarray | None = None
    """N x 3 int64 nuclear-pattern evidence of the checked tiles (zeros elsewhere):
    nuclei found on hematoxylin, those that are unstained holes in a DAB ring, and the
    stained nuclei of the nuclear reading."""
    cell_table: CellTable | None = None
    """Every cell, when ``QuantifyConfig.keep_cells``."""
    patch_size_level0: int | None = None
    """Level-0 pixels covered by one tile side."""
    matrix: StainMatrix | None = None
    """The stain vectors the tiles were deconvolved with."""
    eosin: np.ndarray | None = None
    """N float64: share of each tile's tissue pixels with eosin's colour."""

    def __post_init__(self) -> None:
        if not isinstance(self.marker, Marker):
            self.marker = get_marker(self.marker)
        n = len(self.coords)
        if self.others is None:
            self.others = np.zeros((n, 2), np.int64)
        if self.pattern is None:
            self.pattern = np.zeros((n, 3), np.int64)
        if self.eosin is None:
            self.eosin = np.zeros(n)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def included(self) -> np.ndarray:
        """Tiles that enter the slide's scores."""
        return (self.flags & EXCLUDED) == 0

    def _col(self, name: str) -> np.ndarray:
        return self.pixels[:, STAT_NAMES.index(name)]

    @property
    def tissue_fraction(self) -> np.ndarray:
        return self._col("tissue") / float(self.size * self.size)

    def dab_fraction(self, grade: int = 1) -> np.ndarray:
        """Share of tissue pixels at DAB grade >= ``grade`` (0 where no tissue)."""
        return ratio(self._col(f"dab_{grade}"), self._col("tissue"))

    @property
    def dab_mean(self) -> np.ndarray:
        """Mean zero-clamped DAB OD over tissue pixels."""
        return ratio(self._col("dab_sum"), self._col("tissue"))

    @property
    def residual_mean(self) -> np.ndarray:
        """Mean OD of the third stain (eosin for the default matrix) over tissue pixels."""
        return ratio(self._col("residual_sum"), self._col("tissue"))

    @property
    def hematoxylin_fraction(self) -> np.ndarray:
        return ratio(self._col("hema"), self._col("tissue"))

    def positive_cell_fraction(self, grade: int = 1) -> np.ndarray:
        return ratio(self.cells[:, grade].astype(np.float64), self.cells[:, 0])

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
        return {
            "x": self.coords[:, 0],
            "y": self.coords[:, 1],
            "tissue_fraction": self.tissue_fraction,
            "dab_1_fraction": self.dab_fraction(1),
            "dab_2_fraction": self.dab_fraction(2),
            "dab_3_fraction": self.dab_fraction(3),
            "dab_mean": self.dab_mean,
            "hematoxylin_fraction": self.hematoxylin_fraction,
            "saturated_fraction": ratio(self._col("saturated"), self._col("tissue")),
            "residual_mean": self.residual_mean,
            "eosin_pixels": self.eosin if self.eosin is not None else np.zeros(len(self)),
            "cells": self.cells[:, 0],
            "cells_1": self.cells[:, 1],
            "cells_2": self.cells[:, 2],
            "cells_3": self.cells[:, 3],
            "positive_cell_fraction": self.positive_cell_fraction(1),
            "flags": self.flags,
        }


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (never NaN)."""
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(den), where=den > 0)
