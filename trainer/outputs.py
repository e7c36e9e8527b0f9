"""The run directory's tables: held-out predictions, slide embeddings, patch-mode tile maps.

```
predictions/<mode>.csv        case_id, patient_id, marker, fold, label, p_<class>..., predicted
embeddings/<mode>.npz         case_id, patient_id, marker, label, fold, he (N x E), ihc (N x E)
predictions/patch-tiles.csv   case_id, marker, fold, x, y, size_level0, positivity,
                              stain_target, target_weight   (held-out tiles, patch mode)
```
Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsafast._fileio import atomic_path

from .data import CLASSES

__all__ = ["HeldOut", "write_embeddings", "write_predictions", "write_tile_predictions"]


@dataclass
class HeldOut:
    """Held-out outputs of one mode, gathered over folds."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    he: list[np.ndarray] = field(default_factory=list)
    ihc: list[np.ndarray] = field(default_factory=list)
    tiles: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        case: tuple[str, str, str, str],
        fold: int,
        probabilities: np.ndarray,
        he: np.ndarray,
        ihc: np.ndarray,
    ) -> None:
        case_id, patient_id, marker, label = case
        row: dict[str, Any] = {
            "case_id": case_id,
            "patient_id": patient_id,
            "marker": marker,
            "fold": fold,
            "label": label,
        }
        for c, p in zip(CLASSES, probabilities, strict=True):
            row[f"p_{c}"] = float(p)
        row["predicted"] = CLASSES[int(np.argmax(probabilities))]
        self.rows.append(row)
        self.he.append(np.asarray(he, np.float32))
        self.ihc.append(np.asarray(ihc, np.float32))

    def sorted_index(self) -> list[int]:
        return sorted(range(len(self.rows)), key=lambda i: str(self.rows[i]["case_id"]))


def write_predictions(path: Path, held: HeldOut) -> None:
    columns = ["case_id", "patient_id", "marker", "fold", "label"]
    columns += [f"p_{c}" for c in CLASSES] + ["predicted"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for i in held.sorted_index():
            row = dict(held.rows[i])
            for c in CLASSES:
                row[f"p_{c}"] = f"{float(row[f'p_{c}']):.6f}"
            writer.writerow(row)


def write_embeddings(path: Path, held: HeldOut) -> None:
    order = held.sorted_index()
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {
        k: np.array([str(held.rows[i][k]) for i in order])
        for k in ("case_id", "patient_id", "marker", "label")
    }
    arrays: dict[str, Any] = {
        **columns,
        "fold": np.array([int(held.rows[i]["fold"]) for i in order], np.int64),
        "he": np.stack([held.he[i] for i in order]),
        "ihc": np.stack([held.ihc[i] for i in order]),
    }
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)


def write_tile_predictions(path: Path, held: HeldOut) -> None:
    if not held.tiles:
        return
    columns = list(held.tiles[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in sorted(held.tiles, key=lambda r: (r["case_id"], r["y"], r["x"])):
            writer.writerow(row)
