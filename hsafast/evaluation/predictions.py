"""Predictions to evaluate, and matching them with labels.

``Predictions`` holds one row per case: its patient, fold, class probabilities,
the predicted class and (when known) the true label. It reads the run
directory's ``predictions/<mode>.csv`` (``case_id, patient_id, marker, fold,
label, p_<class>..., predicted``) and is built from plain mappings too.

Labels are matched by case ID. A case predicted but never labelled, or labelled
but never predicted, is an error by default; with ``on_mismatch="note"`` it is
left out and named in the notes that the report prints, never dropped silently.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hsafast.errors import EvaluationError

__all__ = ["Predictions", "attach_labels", "read_labels", "read_predictions"]

#: Probability columns in a predictions CSV start with this prefix.
PROB_PREFIX = "p_"

#: Probabilities of a row must sum to 1 within this tolerance (CSV rounding, float32 softmax).
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Predictions:
    """Per-case class probabilities (N x C) with IDs, folds and optional labels.

    ``folds[i]`` is -1 where the fold is unknown; ``labels[i]`` is None where the
    true label is unknown; ``predicted[i]`` is the model's call (the class of
    highest probability unless the producer chose otherwise).
    """

    case_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    classes: tuple[str, ...]
    probabilities: np.ndarray
    predicted: tuple[str, ...]
    folds: np.ndarray
    labels: tuple[str | None, ...]
    markers: tuple[str, ...]
    source: Path | None = None

    def __post_init__(self) -> None:
        n, c = len(self.case_ids), len(self.classes)
        where = self.source
        if n == 0:
            raise EvaluationError("no predictions", where)
        if c < 2 or len(set(self.classes)) != c:
            raise EvaluationError(f"need at least two distinct classes, got {self.classes}", where)
        for name in ("patient_ids", "predicted", "labels", "markers"):
            if len(getattr(self, name)) != n:
                raise EvaluationError(f"{name} has {len(getattr(self, name))} rows, not {n}", where)
        if self.probabilities.shape != (n, c) or self.folds.shape != (n,):
            raise EvaluationError(
                f"probabilities {self.probabilities.shape} / folds {self.folds.shape} do not fit "
                f"{n} cases x {c} classes",
                where,
            )
        duplicated = [k for k, m in Counter(self.case_ids).items() if m > 1]
        if duplicated:
            raise EvaluationError(f"duplicate case IDs {duplicated[:5]}", where)
        bad = ~np.isfinite(self.probabilities).all(axis=1)
        bad |= (self.probabilities < 0).any(axis=1) | (self.probabilities > 1).any(axis=1)
        bad |= np.abs(self.probabilities.sum(axis=1) - 1.0) > SUM_TOLERANCE
        if bad.any():
            cases = [self.case_ids[i] for i in np.flatnonzero(bad)[:5]]
            raise EvaluationError(
                f"probabilities of cases {cases} are not finite, in 0..1 and summing to 1", where
            )
        known = set(self.classes)
        for what, values in (("predicted", self.predicted), ("label", self.labels)):
            strange = sorted({v for v in values if v is not None and v not in known})
            if strange:
                raise EvaluationError(
                    f"{what} values {strange} are not among the classes {list(self.classes)}",
                    where,
                )

    def __len__(self) -> int:
        return len(self.case_ids)

    @classmethod
    def from_probabilities(
        cls,
        probabilities: Mapping[str, Mapping[str, float] | Sequence[float]],
        classes: Sequence[str] | None = None,
        *,
        patients: Mapping[str, str] | None = None,
        folds: Mapping[str, int] | None = None,
        marker: str = "",
    ) -> Predictions:
        """Build from ``{case_id: {class: probability}}`` (or sequences in ``classes`` order).

        The predicted class is the most probable one; without ``patients`` every
        case counts as its own patient.
        """
        ids = list(probabilities)
        if not ids:
            raise EvaluationError("no predictions")
        first = probabilities[ids[0]]
        if classes is None:
            if not isinstance(first, Mapping):
                raise EvaluationError("give classes= when probabilities are sequences")
            classes = list(first)
        classes = tuple(str(c) for c in classes)
        rows = []
        for case in ids:
            value = probabilities[case]
            if isinstance(value, Mapping):
                if set(value) != set(classes):
                    raise EvaluationError(
                        f"case {case!r}: classes {sorted(value)} differ from {list(classes)}"
                    )
                rows.append([float(value[c]) for c in classes])
            else:
                rows.append([float(v) for v in value])
        try:
            proba = np.asarray(rows, dtype=np.float64).reshape(len(ids), len(classes))
        except ValueError:
            raise EvaluationError(f"every case needs {len(classes)} probabilities") from None
        return cls(
            case_ids=tuple(str(c) for c in ids),
            patient_ids=tuple(str((patients or {}).get(c, c)) for c in ids),
            classes=classes,
            probabilities=proba,
            predicted=tuple(classes[i] for i in _argmax(proba)),
            folds=np.array([int((folds or {}).get(c, -1)) for c in ids], dtype=np.int64),
            labels=(None,) * len(ids),
            markers=(marker,) * len(ids),
        )

    def subset(self, rows: np.ndarray | Sequence[int]) -> Predictions:
        idx = np.asarray(rows, dtype=np.int64)
        pick = idx.tolist()
        return replace(
            self,
            case_ids=tuple(self.case_ids[i] for i in pick),
            patient_ids=tuple(self.patient_ids[i] for i in pick),
            probabilities=self.probabilities[idx],
            predicted=tuple(self.predicted[i] for i in pick),
            folds=self.folds[idx],
            labels=tuple(self.labels[i] for i in pick),
            markers=tuple(self.markers[i] for i in pick),
        )

    def by_marker(self) -> dict[str, Predictions]:
        """One ``Predictions`` per marker, markers in sorted order."""
        markers = np.array(self.markers)
        return {m: self.subset(np.flatnonzero(markers == m)) for m in sorted(set(self.markers))}

    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(true, predicted) class indices; every label must be known."""
        if any(label is None for label in self.labels):
            raise EvaluationError("some cases have no label", self.source)
        lookup = {c: i for i, c in enumerate(self.classes)}
        true = np.array([lookup[str(label)] for label in self.labels], dtype=np.int64)
        pred = np.array([lookup[p] for p in self.predicted], dtype=np.int64)
        return true, pred


def _argmax(proba: np.ndarray) -> np.ndarray:
    return np.argmax(proba, axis=1)


def read_predictions(path: str | os.PathLike[str]) -> Predictions:
    """Read a predictions CSV of the run directory (see docs/models.md)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"cannot read predictions: {exc}", path) from exc
    if "case_id" not in header:
        raise EvaluationError("predictions lack a case_id column", path)
    classes = tuple(h[len(PROB_PREFIX) :] for h in header if h.startswith(PROB_PREFIX))
    if len(classes) < 2:
        raise EvaluationError(f"need two or more {PROB_PREFIX}<class> columns", path)
    known = {"case_id", "patient_id", "marker", "fold", "label", "predicted"}
    unknown = [h for h in header if h not in known and not h.startswith(PROB_PREFIX)]
    if unknown:
        raise EvaluationError(f"unknown columns {unknown}", path)
    if not rows:
        raise EvaluationError("no predictions", path)
    proba = np.empty((len(rows), len(classes)))
    folds = np.full(len(rows), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        line = i + 2  # the header is line 1
        if not row.get("case_id"):
            raise EvaluationError(f"line {line}: empty case_id", path)
        try:
            proba[i] = [float(row[PROB_PREFIX + c]) for c in classes]
            if row.get("fold"):
                folds[i] = int(row["fold"])
        except ValueError as exc:
            raise EvaluationError(f"line {line}: {exc}", path) from None
        if not all(math.isfinite(v) for v in proba[i]):
            raise EvaluationError(f"line {line}: probabilities are not finite", path)
    return Predictions(
        case_ids=tuple(r["case_id"] for r in rows),
        patient_ids=tuple(r.get("patient_id") or r["case_id"] for r in rows),
        classes=classes,
        probabilities=proba,
        predicted=tuple(
            r.get("predicted") or classes[j] for r, j in zip(rows, _argmax(proba), strict=True)
        ),
        folds=folds,
        labels=tuple(r.get("label") or None for r in rows),
        markers=tuple(r.get("marker", "").lower() for r in rows),
        source=path,
    )


def read_labels(path: str | os.PathLike[str]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Read ``{case_id: label}`` and ``{case_id: patient_id}`` from a manifest or labels CSV.

    Any CSV with ``case_id`` and ``label`` columns (``patient_id`` optional),
    a cohort manifest included. An empty label reads as None (unlabelled).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = {h.strip() for h in (reader.fieldnames or [])}
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"cannot read labels: {exc}", path) from exc
    if not {"case_id", "label"} <= header:
        raise EvaluationError("a labels CSV needs case_id and label columns", path)
    labels: dict[str, str | None] = {}
    patients: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        case = row["case_id"]
        if not case:
            raise EvaluationError(f"line {line}: empty case_id", path)
        if case in labels:
            raise EvaluationError(f"line {line}: duplicate case_id {case!r}", path)
        labels[case] = row["label"] or None
        if row.get("patient_id"):
            patients[case] = row["patient_id"]
    return labels, patients


def attach_labels(
    predictions: Predictions,
    labels: Mapping[str, str | None] | None,
    *,
    patients: Mapping[str, str] | None = None,
    on_mismatch: Literal["error", "note"] = "error",
) -> tuple[Predictions, list[str]]:
    """Set each case's true label (and patient) from mappings; return notes.

    Labels given here override labels inside the predictions. Cases without a
    label, and labels of cases never predicted, raise an ``EvaluationError``
    naming them, or with ``on_mismatch="note"`` are left out and described in
    the returned notes.
    """
    if on_mismatch not in ("error", "note"):
        raise EvaluationError(f"on_mismatch must be 'error' or 'note', got {on_mismatch!r}")
    notes: list[str] = []
    current = predictions
    if patients:
        current = replace(
            current,
            patient_ids=tuple(
                patients.get(c, p)
                for c, p in zip(current.case_ids, current.patient_ids, strict=True)
            ),
        )
    if labels is not None:
        current = replace(current, labels=tuple(labels.get(c) for c in current.case_ids))
        unpredicted = sorted(set(labels) - set(current.case_ids))
        if unpredicted:
            message = f"{len(unpredicted)} labelled case(s) have no prediction: {_few(unpredicted)}"
            if on_mismatch == "error":
                raise EvaluationError(message, predictions.source)
            notes.append(message + "; they are not evaluated")
    unlabelled = [
        c for c, label in zip(current.case_ids, current.labels, strict=True) if label is None
    ]
    if unlabelled:
        message = f"{len(unlabelled)} predicted case(s) have no label: {_few(unlabelled)}"
        if on_mismatch == "error":
            raise EvaluationError(message, predictions.source)
        notes.append(message + "; they are left out of every metric")
        keep = [i for i, label in enumerate(current.labels) if label is not None]
        if not keep:
            raise EvaluationError("no predicted case has a label", predictions.source)
        current = current.subset(keep)
    Predictions.__post_init__(current)  # labels must be among the classes
    return current, notes


def _few(items: Iterable[str], n: int = 8) -> str:
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def from_slide_results(
    results: Iterable[Any],
    *,
    marker: str | Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> tuple[Predictions, list[tuple[str, str]]]:
    """Predictions from the scorer's ``SlideResult`` objects; also (case, reason) of
    slides without a prediction.

    ``marker``: the marker to evaluate, or ``{case_id: marker}``; needed when a result
    holds several markers. ``aliases`` maps slide IDs to case IDs (a slide scored from a
    folder is named by its file stem, a manifest names it by case).
    """
    aliases = aliases or {}
    rows: list[tuple[str, str, Any]] = []
    unscored: list[tuple[str, str]] = []
    for result in results:
        case = aliases.get(result.slide_id, result.slide_id)
        if result.status != "ok" or not result.markers:
            unscored.append((case, f"{result.status}: {result.message}".rstrip(": ")))
            continue
        wanted = marker.get(case) if isinstance(marker, Mapping) else marker
        if wanted is None:
            if len(result.markers) != 1:
                raise EvaluationError(
                    f"slide {result.slide_id!r} holds markers {sorted(result.markers)}: say which "
                    "to evaluate (marker=, or a manifest naming each case's marker)"
                )
            wanted = next(iter(result.markers))
        if wanted not in result.markers:
            raise EvaluationError(
                f"slide {result.slide_id!r} has no prediction for marker {wanted!r} "
                f"(it has {sorted(result.markers)})"
            )
        rows.append((case, wanted, result.markers[wanted]))
    if not rows:
        raise EvaluationError("no slide result holds a prediction")
    classes = tuple(rows[0][2].classes)
    for case, _, m in rows:
        if tuple(m.classes) != classes:
            raise EvaluationError(f"case {case!r}: classes {m.classes} differ from {classes}")
    proba = np.array([np.asarray(m.probabilities, dtype=np.float64) for _, _, m in rows])
    predictions = Predictions(
        case_ids=tuple(case for case, _, _ in rows),
        patient_ids=tuple(case for case, _, _ in rows),
        classes=classes,
        probabilities=proba,
        predicted=tuple(classes[i] for i in _argmax(proba)),
        folds=np.full(len(rows), -1, dtype=np.int64),
        labels=(None,) * len(rows),
        markers=tuple(name for _, name, _ in rows),
    )
    return predictions, unscored


def is_slide_results(results: Any) -> bool:
    """Whether ``results`` looks like a list of the scorer's ``SlideResult`` objects."""
    if isinstance(results, str | os.PathLike | Mapping | Predictions):
        return False
    first = next(iter(results), None) if isinstance(results, Sequence) else None
    return first is not None and hasattr(first, "slide_id") and hasattr(first, "markers")


def as_predictions(results: Any) -> Predictions:
    """Accept ``Predictions``, a predictions CSV path, or ``{case_id: {class: p}}``."""
    if isinstance(results, Predictions):
        return results
    if isinstance(results, str | os.PathLike):
        return read_predictions(results)
    if isinstance(results, Mapping):
        return Predictions.from_probabilities(results)
    raise EvaluationError(
        f"cannot evaluate {type(results).__name__}: give Predictions, a predictions CSV path, "
        "a mapping {case_id: {class: probability}} or a list of the scorer's SlideResults"
    )
