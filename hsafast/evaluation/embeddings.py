"""Slide embeddings of a run: ``RUN_DIR/embeddings/<mode>.npz``.

Arrays, one row per (fold, case): ``case_id``, ``patient_id``, ``marker``,
``label`` (strings), ``fold`` (int), ``he`` and ``ihc`` (N x E float). Each row
was embedded by the model of its fold. An optional ``split`` array ("test" or
"train") says whether the fold's model held the case out; without it every row
is a held-out ("test") row. Training rows are what the linear probe fits on.

Embeddings of different folds (and markers) come from different models and
live in different spaces: every analysis compares rows of one fold and marker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsafast.errors import EvaluationError

__all__ = ["SlideEmbeddings", "read_embeddings"]

STRING_KEYS = ("case_id", "patient_id", "marker", "label")


@dataclass(frozen=True)
class SlideEmbeddings:
    case_ids: np.ndarray
    patient_ids: np.ndarray
    markers: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    split: np.ndarray
    he: np.ndarray
    ihc: np.ndarray
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.case_ids)

    def rows(self, marker: str, fold: int, split: str) -> np.ndarray:
        """Indices of one marker's rows embedded by fold ``fold``'s model, of one split."""
        return np.flatnonzero(
            (self.markers == marker) & (self.folds == fold) & (self.split == split)
        )

    def subset(self, mask: np.ndarray) -> SlideEmbeddings:
        return SlideEmbeddings(
            case_ids=self.case_ids[mask],
            patient_ids=self.patient_ids[mask],
            markers=self.markers[mask],
            labels=self.labels[mask],
            folds=self.folds[mask],
            split=self.split[mask],
            he=self.he[mask],
            ihc=self.ihc[mask],
            source=self.source,
        )

    @property
    def has_training_rows(self) -> bool:
        return bool((self.split == "train").any())

    def groups(self) -> list[tuple[str, int]]:
        """(marker, fold) pairs present among the held-out rows, sorted."""
        test = self.split == "test"
        return sorted(
            {(str(m), int(f)) for m, f in zip(self.markers[test], self.folds[test], strict=True)}
        )


def read_embeddings(path: str | os.PathLike[str]) -> SlideEmbeddings:
    """Load and check an embeddings file (no pickled objects are read)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read embeddings: {exc}", path) from exc
    missing = [k for k in (*STRING_KEYS, "fold", "he", "ihc") if k not in arrays]
    if missing:
        raise EvaluationError(f"embeddings lack arrays {missing}", path)
    he = np.asarray(arrays["he"], dtype=np.float64)
    ihc = np.asarray(arrays["ihc"], dtype=np.float64)
    n = len(arrays["case_id"])
    if he.ndim != 2 or he.shape != ihc.shape or he.shape[0] != n:
        raise EvaluationError(
            f"he {he.shape} and ihc {ihc.shape} must both be {n} x E (one row per case)", path
        )
    split = arrays.get("split", np.full(n, "test"))
    for key in (*STRING_KEYS, "fold"):
        if arrays[key].shape != (n,):
            raise EvaluationError(f"{key} has shape {arrays[key].shape}, not ({n},)", path)
    if split.shape != (n,) or not set(split.astype(str).tolist()) <= {"train", "test"}:
        raise EvaluationError("split must hold 'train' or 'test' per row", path)
    bad = ~(np.isfinite(he).all(axis=1) & np.isfinite(ihc).all(axis=1))
    if bad.any():
        raise EvaluationError(
            f"embeddings of cases {arrays['case_id'][bad][:5].tolist()} are not finite", path
        )
    return SlideEmbeddings(
        case_ids=arrays["case_id"].astype(str),
        patient_ids=arrays["patient_id"].astype(str),
        markers=np.char.lower(arrays["marker"].astype(str)),
        labels=arrays["label"].astype(str),
        folds=arrays["fold"].astype(np.int64),
        split=split.astype(str),
        he=he,
        ihc=ihc,
        source=path,
    )
