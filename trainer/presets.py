"""Ready-made configurations: the embedded demo's, sized for 2 CPU cores."""

from __future__ import annotations

import os
from typing import Any

from .config import TrainConfig, config_from_mapping

__all__ = ["demo_config"]


def demo_config(
    manifest: str | os.PathLike[str], out: str | os.PathLike[str], **changes: Any
) -> TrainConfig:
    """The demo's run: every mode, 2 folds, the small CNN, sized for a few minutes of a
    2-core CPU on about 24 simulated Ki-67 cases of 3072 x 3072 px (0.5 um/px).

    Measured on such a cohort (bench/results/train.md): patch mode's validation loss is
    lowest after 4-5 epochs of a 10-epoch schedule and rises after, so 8 epochs with the
    checkpoint chosen by validation loss; 2 folds cost half the tile training of 3 (each
    fold trains on its own share of the cases) for the same held-out predictions per case.

    ``changes`` replace top-level keys or whole sections (``{"patch": {...}}``).
    """
    mapping: dict[str, Any] = {
        "manifest": str(manifest),
        "out": str(out),
        "folds": 2,
        "encoder": {"name": "hsafast-cnn-s"},
        "patch": {
            "optim": {"epochs": 8, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 1},
            "slide_optim": {"epochs": 30, "batch_size": 8, "lr": 1e-3},
        },
        "slide": {"optim": {"epochs": 30, "batch_size": 8, "lr": 5e-4}},
    }
    mapping.update(changes)
    return config_from_mapping(TrainConfig, mapping)
