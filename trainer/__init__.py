"""Training for hsafast, installed as ``hsafast.trainer`` (see docs/training.md).

``train(load_config("run.toml"))`` runs slide mode, patch mode and the baselines with
patient-level cross-validation and writes the run directory; ``hsafast train`` is the
command-line form. Importing this package is cheap: PyTorch loads with the modules that
use it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module under hsafast.trainer that defines it
_EXPORTS = {
    "TrainConfig": "config",
    "DataConfig": "config",
    "EncoderConfig": "config",
    "SlideConfig": "config",
    "PatchConfig": "config",
    "OptimConfig": "config",
    "load_config": "config",
    "config_from_mapping": "config",
    "demo_config": "presets",
    "train": "run",
    "RunSummary": "run",
    "TrainingDataError": "checks",
}

__all__ = [
    "DataConfig",
    "EncoderConfig",
    "OptimConfig",
    "PatchConfig",
    "RunSummary",
    "SlideConfig",
    "TrainConfig",
    "TrainingDataError",
    "config_from_mapping",
    "demo_config",
    "load_config",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hsafast.trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .checks import TrainingDataError
    from .config import (
        DataConfig,
        EncoderConfig,
        OptimConfig,
        PatchConfig,
        SlideConfig,
        TrainConfig,
        config_from_mapping,
        load_config,
    )
    from .presets import demo_config
    from .run import RunSummary, train
