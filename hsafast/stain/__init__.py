"""Stain quantification of IHC slides: H-DAB deconvolution, cells, markers, slide labels."""

from __future__ import annotations

from hsafast.stain.compartments import (
    CellConfig,
    Cells,
    detect_cells,
    membranous_cells,
    nuclear_cells,
)
from hsafast.stain.deconvolution import (
    STAT_NAMES,
    PixelThresholds,
    concentrations,
    concentrations_reference,
    od_lut,
    pixel_stats,
    pixel_stats_reference,
)
from hsafast.stain.labels import SlideLabel, slide_label
from hsafast.stain.markers import (
    BUILTIN,
    CellCounts,
    Marker,
    MarkerReading,
    get_marker,
    load_markers,
)
from hsafast.stain.overlay import save_stain_overlay, stain_overlay
from hsafast.stain.quantification import quantify
from hsafast.stain.stats import CellTable, QuantifyConfig, StainStats
from hsafast.stain.vectors import HED, StainMatrix, estimate_macenko

__all__ = [
    "BUILTIN",
    "HED",
    "STAT_NAMES",
    "CellConfig",
    "CellCounts",
    "CellTable",
    "Cells",
    "Marker",
    "MarkerReading",
    "PixelThresholds",
    "QuantifyConfig",
    "SlideLabel",
    "StainMatrix",
    "StainStats",
    "concentrations",
    "concentrations_reference",
    "detect_cells",
    "estimate_macenko",
    "get_marker",
    "load_markers",
    "membranous_cells",
    "nuclear_cells",
    "od_lut",
    "pixel_stats",
    "pixel_stats_reference",
    "quantify",
    "save_stain_overlay",
    "slide_label",
    "stain_overlay",
]
