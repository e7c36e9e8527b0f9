"""Stain quantification of IHC slides: H-DAB deconvolution, cells, markers, slide labels."""

from __future__ import annotations

from hsafast.stain.compartments import CellConfig, Cells, membranous_cells, nuclear_cells
from hsafast.stain.deconvolution import (
    STAT_NAMES,
    PixelThresholds,
    concentrations,
    concentrations_reference,
    od_lut,
    pixel_stats,
    pixel_stats_reference,
)
from hsafast.stain.markers import BUILTIN, Marker, get_marker, load_markers
from hsafast.stain.quantification import (
    QuantifyConfig,
    SlideLabel,
    StainStats,
    quantify,
    slide_label,
)
from hsafast.stain.vectors import HED, StainMatrix, estimate_macenko

__all__ = [
    "BUILTIN",
    "HED",
    "STAT_NAMES",
    "CellConfig",
    "Cells",
    "Marker",
    "PixelThresholds",
    "QuantifyConfig",
    "SlideLabel",
    "StainMatrix",
    "StainStats",
    "concentrations",
    "concentrations_reference",
    "estimate_macenko",
    "get_marker",
    "load_markers",
    "membranous_cells",
    "nuclear_cells",
    "od_lut",
    "pixel_stats",
    "pixel_stats_reference",
    "quantify",
    "slide_label",
]
