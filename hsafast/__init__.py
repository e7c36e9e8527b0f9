"""hsafast: predict IHC biomarker status from H&E whole-slide images.

Importing the package is cheap and has no side effects: the public names below
are resolved on first use, and GPU or optional packages are probed only then.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("hsafast")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

# public name -> module that defines it
_EXPORTS = {
    "HsafastError": "hsafast.errors",
    "SlideError": "hsafast.errors",
    "MissingPixelSizeError": "hsafast.errors",
    "NoTissueError": "hsafast.errors",
    "InvalidParameterError": "hsafast.errors",
    "Slide": "hsafast.slides",
    "open_slide": "hsafast.slides",
    "installation_info": "hsafast.info",
    "build_info": "hsafast.info",
    "TissueConfig": "hsafast.tissue",
    "TissueMask": "hsafast.tissue",
    "detect_tissue": "hsafast.tissue",
    "TileGrid": "hsafast.tiling",
    "tile_grid": "hsafast.tiling",
    "tissue_grid": "hsafast.tiling",
    "TileBatch": "hsafast.reading",
    "read_tiles": "hsafast.reading",
    "FeatureFile": "hsafast.features",
    "read_feature_file": "hsafast.features",
    "write_feature_file": "hsafast.features",
    "Manifest": "hsafast.manifest",
    "read_manifest": "hsafast.manifest",
    "quantify": "hsafast.stain",
    "slide_label": "hsafast.stain",
    "StainStats": "hsafast.stain",
    "SlideLabel": "hsafast.stain",
    "Marker": "hsafast.stain",
    "get_marker": "hsafast.stain",
    "load_markers": "hsafast.stain",
    "StainMatrix": "hsafast.stain",
    "save_stain_overlay": "hsafast.stain",
    "gated_attention_pool": "hsafast.pooling",
    "PoolState": "hsafast.pooling",
    "GatedAttentionParams": "hsafast.pooling",
    "register": "hsafast.registration",
    "Registration": "hsafast.registration",
    "RegistrationConfig": "hsafast.registration",
    "paired_tiles": "hsafast.registration",
    "load_registration": "hsafast.registration",
    "Scorer": "hsafast.scoring",
    "ScoringOptions": "hsafast.scoring",
    "SlideResult": "hsafast.scoring",
    "SlideInfo": "hsafast.scoring",
    "make_cohort": "hsafast.synth",
    "load_truth": "hsafast.synth",
    "evaluate": "hsafast.evaluation",
    "EvaluationError": "hsafast.errors",
    "EvaluationConfig": "hsafast.evaluation",
    "patient_folds": "hsafast.evaluation",
    "write_report": "hsafast.evaluation",
    "EncoderError": "hsafast.errors",
    "BundleError": "hsafast.errors",
    "list_encoders": "hsafast.encoders",
    "create_encoder": "hsafast.encoders",
    "ModelBundle": "hsafast.bundle",
    "embed_slide": "hsafast.embedding",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hsafast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from hsafast.bundle import ModelBundle
    from hsafast.embedding import embed_slide
    from hsafast.encoders import create_encoder, list_encoders
    from hsafast.errors import (
        BundleError,
        EncoderError,
        EvaluationError,
        HsafastError,
        InvalidParameterError,
        MissingPixelSizeError,
        NoTissueError,
        SlideError,
    )
    from hsafast.evaluation import EvaluationConfig, evaluate, patient_folds, write_report
    from hsafast.features import FeatureFile, read_feature_file, write_feature_file
    from hsafast.info import build_info, installation_info
    from hsafast.manifest import Manifest, read_manifest
    from hsafast.pooling import GatedAttentionParams, PoolState, gated_attention_pool
    from hsafast.reading import TileBatch, read_tiles
    from hsafast.registration import (
        Registration,
        RegistrationConfig,
        load_registration,
        paired_tiles,
        register,
    )
    from hsafast.scoring import Scorer, ScoringOptions, SlideInfo, SlideResult
    from hsafast.slides import Slide, open_slide
    from hsafast.stain import (
        Marker,
        SlideLabel,
        StainMatrix,
        StainStats,
        get_marker,
        load_markers,
        quantify,
        save_stain_overlay,
        slide_label,
    )
    from hsafast.synth import load_truth, make_cohort
    from hsafast.tiling import TileGrid, tile_grid, tissue_grid
    from hsafast.tissue import TissueConfig, TissueMask, detect_tissue
