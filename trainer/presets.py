"""Ready-made configurations: the embedded demo's, sized for 2 CPU cores."""

from __future__ import annotations

import os
from typing import Any

from .config import TrainConfig, config_from_mapping

__all__ = ["demo_config"]


def demo_config(
    manifest: str | os.PathLike[str], out: str | os.PathLike[str], **changes: Any
) -> TrainConfig:
    """The demo's run: every mode, 3 folds, the small CNN, epochs cut to fit a few minutes
    of a 2-core CPU for a few dozen small simulated cases (docs/training.md, "Measure").

    ``changes`` replace top-level keys or whole sections (``{"patch": {...}}``).
    """
    mapping: dict[str, Any] = {
        "manifest": str(manifest),
        "out": str(out),
        "folds": 3,
        "encoder": {"name": "hsafast-cnn-s"},
        "patch": {
            "optim": {"epochs": 6, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 1},
            "slide_optim": {"epochs": 30, "batch_size": 8, "lr": 1e-3},
        },
        "slide": {"optim": {"epochs": 30, "batch_size": 8, "lr": 5e-4}},
    }
    mapping.update(changes)
    return config_from_mapping(TrainConfig, mapping)
