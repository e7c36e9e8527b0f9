"""The run directory's tables: held-out predictions, slide embeddings, patch-mode tile maps.

```
predictions/<mode>.csv        case_id, patient_id, marker, fold, label, p_<class>..., predicted
embeddings/<mode>.npz         case_id, patient_id, marker, label, fold, split, he (N x E),
                              ihc (N x E): every case by every fold's model
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
    """Outputs of one mode, gathered over folds: held-out predictions, and the slide
    embeddings of every case by every fold's model (``split`` "test" where the fold held the
    case out, "train" where it trained on it: what the paper's linear probe fits on)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    embedded: list[dict[str, Any]] = field(default_factory=list)
    he: list[np.ndarray] = field(default_factory=list)
    ihc: list[np.ndarray] = field(default_factory=list)
    tiles: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        case: tuple[str, str, str, str],
        fold: int,
        split: str,
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
        self.embedded.append({**row, "split": split})
        self.he.append(np.asarray(he, np.float32))
        self.ihc.append(np.asarray(ihc, np.float32))
        if split != "test":
            return
        for c, p in zip(CLASSES, probabilities, strict=True):
            row[f"p_{c}"] = float(p)
        row["predicted"] = CLASSES[int(np.argmax(probabilities))]
        self.rows.append(row)


def write_predictions(path: Path, held: HeldOut) -> None:
    columns = ["case_id", "patient_id", "marker", "fold", "label"]
    columns += [f"p_{c}" for c in CLASSES] + ["predicted"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in sorted(held.rows, key=lambda r: r["case_id"]):
            row = dict(row)
            for c in CLASSES:
                row[f"p_{c}"] = f"{float(row[f'p_{c}']):.6f}"
            writer.writerow(row)


def write_embeddings(path: Path, held: HeldOut) -> None:
    rows = held.embedded
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["fold"], rows[i]["case_id"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        k: np.array([str(rows[i][k]) for i in order])
        for k in ("case_id", "patient_id", "marker", "label", "split")
    }
    arrays["fold"] = np.array([int(rows[i]["fold"]) for i in order], np.int64)
    arrays["he"] = np.stack([held.he[i] for i in order])
    arrays["ihc"] = np.stack([held.ihc[i] for i in order])
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
