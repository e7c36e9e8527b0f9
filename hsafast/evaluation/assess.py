"""``evaluate``: metrics with bootstrap intervals for one model's predictions.

    ev = hsafast.evaluate("RUN_DIR/predictions/slide.csv")          # labels in the CSV
    ev = hsafast.evaluate(predictions, "manifest.csv")              # labels by case ID
    print(ev.metrics["weighted_f1"])                                # 0.812 (0.741-0.874)

Point estimates come from scikit-learn on all cases; intervals from 1000
percentile-bootstrap resamples of patients (``resample="patients"``, hsafast's
default) or of cases (``resample="cases"``, the HistoStainAlign paper's
protocol on pooled fold predictions).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hsafast.errors import EvaluationError, InvalidParameterError
from hsafast.evaluation.bootstrap import Interval, bootstrap, cluster_index, percentile_interval
from hsafast.evaluation.metrics import (
    METRIC_LABELS,
    METRICS,
    confusion_matrix,
    point_metrics,
    weighted_metrics,
)
from hsafast.evaluation.predictions import (
    Predictions,
    as_predictions,
    attach_labels,
    from_slide_results,
    is_slide_results,
    read_labels,
)

__all__ = ["Evaluation", "EvaluationConfig", "evaluate", "positive_index"]

#: Class names read as the positive ("expressing") class of a binary task, in order of preference.
POSITIVE_NAMES = ("intermediate/high", "high", "positive", "overexpression", "1", "true", "yes")


@dataclass(frozen=True)
class EvaluationConfig:
    """How metrics and their intervals are computed."""

    n_resamples: int = 1000
    """Bootstrap resamples (count). 1000, as the HistoStainAlign paper; more
    only narrows the Monte Carlo error of the interval's ends."""

    confidence: float = 0.95
    """Coverage of the percentile interval (0-1)."""

    seed: int = 0
    """Seed of the resampling: the same seed gives the same intervals."""

    resample: Literal["patients", "cases"] = "patients"
    """Unit of resampling. "patients" keeps a patient's slides together (hsafast's
    default, right whenever patients have several slides); "cases" resamples
    slides independently, as the paper's protocol."""

    on_mismatch: Literal["error", "note"] = "error"
    """Cases predicted but unlabelled, or labelled but never predicted: "error"
    raises naming them; "note" leaves them out and lists them in ``notes``."""

    positive_class: str | None = None
    """The positive class of a binary task (sensitivity); None picks the first of
    ``POSITIVE_NAMES`` present, else the second class."""

    def __post_init__(self) -> None:
        def bad(name: str, reason: str) -> InvalidParameterError:
            return InvalidParameterError(f"EvaluationConfig.{name}: {reason}")

        if not (isinstance(self.n_resamples, int) and self.n_resamples >= 1):
            raise bad("n_resamples", f"must be a positive integer, got {self.n_resamples!r}")
        if not (0.0 < self.confidence < 1.0):
            raise bad("confidence", f"must be in (0, 1), got {self.confidence!r}")
        if not isinstance(self.seed, int):
            raise bad("seed", f"must be an integer, got {self.seed!r}")
        if self.resample not in ("patients", "cases"):
            raise bad("resample", f"must be 'patients' or 'cases', got {self.resample!r}")
        if self.on_mismatch not in ("error", "note"):
            raise bad("on_mismatch", f"must be 'error' or 'note', got {self.on_mismatch!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvaluationConfig:
        """Build from a mapping (``hsafast._config``: unknown keys and wrong types are a
        ConfigError naming the key)."""
        from hsafast._config import config_from_mapping

        return config_from_mapping(cls, values, section="EvaluationConfig")


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one task, with intervals, per-fold values and notes."""

    classes: tuple[str, ...]
    positive_class: str | None
    metrics: dict[str, Interval]
    confusion: np.ndarray
    per_fold: dict[int, dict[str, float]]
    class_counts: dict[str, int]
    n_cases: int
    n_patients: int
    config: EvaluationConfig
    predictions: Predictions
    notes: tuple[str, ...] = field(default=())

    def rows(self) -> list[tuple[str, Interval]]:
        """(metric label, interval) in table order; metrics undefined here are left out."""
        return [
            (METRIC_LABELS[name], self.metrics[name])
            for name in METRICS
            if not math.isnan(self.metrics[name].estimate)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-case data)."""

        def interval(i: Interval) -> dict[str, Any]:
            return {
                "estimate": _json_float(i.estimate),
                "low": _json_float(i.low),
                "high": _json_float(i.high),
                "valid_resamples": i.valid,
            }

        return {
            "classes": list(self.classes),
            "positive_class": self.positive_class,
            "n_cases": self.n_cases,
            "n_patients": self.n_patients,
            "class_counts": self.class_counts,
            "resample": self.config.resample,
            "n_resamples": self.config.n_resamples,
            "confidence": self.config.confidence,
            "seed": self.config.seed,
            "metrics": {name: interval(i) for name, i in self.metrics.items()},
            "confusion": self.confusion.tolist(),
            "per_fold": {
                str(f): {k: _json_float(v) for k, v in m.items()} for f, m in self.per_fold.items()
            },
            "notes": list(self.notes),
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def positive_index(classes: tuple[str, ...], positive_class: str | None) -> int | None:
    """Index of the positive class of a binary task (None for more than two classes)."""
    if positive_class is not None:
        if positive_class not in classes:
            raise InvalidParameterError(
                f"positive_class {positive_class!r} is not among the classes {list(classes)}"
            )
        return classes.index(positive_class) if len(classes) == 2 else None
    if len(classes) != 2:
        return None
    for name in POSITIVE_NAMES:
        for i, c in enumerate(classes):
            if c.lower() == name:
                return i
    return 1


def evaluate(
    results: Any,
    labels: Mapping[str, str | None] | str | os.PathLike[str] | None = None,
    *,
    patients: Mapping[str, str] | None = None,
    marker: str | None = None,
    config: EvaluationConfig | None = None,
) -> Evaluation:
    """Weighted F1, macro F1, balanced accuracy, AUC (+ sensitivity and
    specificity for two classes) with bootstrap intervals, and the confusion matrix.

    ``results``: :class:`Predictions`, a predictions CSV of a run directory,
    ``{case_id: {class: probability}}``, or the scorer's ``SlideResult`` list.
    ``labels``: ``{case_id: label}``, a manifest or labels CSV, or None to use the
    labels inside ``results``. ``patients``: ``{case_id: patient_id}`` where
    ``results`` lacks them. ``marker``: which marker of multi-marker scorer results
    (a manifest names each case's own).
    """
    config = config or EvaluationConfig()
    notes: list[str] = []
    unscored: set[str] = set()
    if is_slide_results(results):
        predictions, failed = _from_scorer(results, labels, marker)
        if failed:
            message = f"{len(failed)} slide(s) were not scored: " + ", ".join(
                f"{case} ({reason})" for case, reason in failed[:8]
            )
            if config.on_mismatch == "error":
                raise EvaluationError(message)
            notes.append(message + "; they are not evaluated")
            unscored = {case for case, _ in failed}
    else:
        predictions = as_predictions(results)
    if isinstance(labels, str | os.PathLike):
        labels, csv_patients = read_labels(labels)
        patients = {**csv_patients, **(patients or {})}
    if labels is not None and unscored:  # already noted above
        labels = {c: v for c, v in labels.items() if c not in unscored}
    labelled, more = attach_labels(
        predictions, labels, patients=patients, on_mismatch=config.on_mismatch
    )
    return _evaluate_labelled(labelled, config, notes + more)


def _from_scorer(
    results: Any, labels: Any, marker: str | None
) -> tuple[Predictions, list[tuple[str, str]]]:
    """The scorer's results, with slide IDs and markers taken from a manifest if given."""
    from hsafast._fileio import safe_id
    from hsafast.cohort import case_item_id
    from hsafast.manifest import is_manifest, read_manifest

    aliases: dict[str, str] = {}
    markers: str | dict[str, str] | None = marker
    if isinstance(labels, str | os.PathLike) and is_manifest(Path(labels)):
        cases = read_manifest(labels).cases
        # a manifest run names each H&E slide <case_id>.HE; older results, the file stem
        aliases = {safe_id(c.he_path.stem): c.case_id for c in cases}
        aliases.update({case_item_id(c.case_id, "HE"): c.case_id for c in cases})
        if marker is None:
            markers = {c.case_id: c.marker for c in cases}
    return from_slide_results(results, marker=markers, aliases=aliases)


def _evaluate_labelled(
    predictions: Predictions, config: EvaluationConfig, notes: list[str]
) -> Evaluation:
    classes = predictions.classes
    positive = positive_index(classes, config.positive_class)
    y_true, y_pred = predictions.indices()
    proba = predictions.probabilities
    estimates = point_metrics(y_true, y_pred, proba, positive)

    groups = predictions.patient_ids if config.resample == "patients" else predictions.case_ids
    clusters = cluster_index(groups)
    n_patients = len(set(predictions.patient_ids))
    if config.resample == "patients" and n_patients == len(predictions):
        notes.append(
            "every case is its own patient here: resampling patients equals resampling cases"
        )
    samples = bootstrap(
        lambda w: weighted_metrics(w, y_true, y_pred, proba, positive),
        clusters,
        config.n_resamples,
        config.seed,
    )
    metrics = {
        name: percentile_interval(estimates[name], samples[name], config.confidence)
        for name in METRICS
    }
    for name, interval in metrics.items():
        if not math.isnan(interval.estimate) and interval.valid < 0.9 * interval.resamples:
            notes.append(
                f"{METRIC_LABELS[name]} was undefined on {interval.resamples - interval.valid} of "
                f"{interval.resamples} resamples (a resample without one of the classes); "
                "its interval uses the others and is less reliable"
            )
    counts = Counter(predictions.labels)
    present = [c for c in classes if counts[c]]
    if len(present) < 2:
        notes.append(f"only class {present} occurs among the labels: AUC is undefined")
    per_fold, fold_notes = _per_fold(predictions, y_true, y_pred, positive)
    return Evaluation(
        classes=classes,
        positive_class=None if positive is None else classes[positive],
        metrics=metrics,
        confusion=confusion_matrix(y_true, y_pred, len(classes)),
        per_fold=per_fold,
        class_counts={c: counts[c] for c in classes},
        n_cases=len(predictions),
        n_patients=n_patients,
        config=config,
        predictions=predictions,
        notes=tuple(notes + fold_notes),
    )


def _per_fold(
    predictions: Predictions, y_true: np.ndarray, y_pred: np.ndarray, positive: int | None
) -> tuple[dict[int, dict[str, float]], list[str]]:
    per_fold: dict[int, dict[str, float]] = {}
    notes: list[str] = []
    for fold in sorted(set(predictions.folds.tolist()) - {-1}):
        rows = predictions.folds == fold
        per_fold[fold] = point_metrics(
            y_true[rows], y_pred[rows], predictions.probabilities[rows], positive
        )
        held = sorted({predictions.classes[i] for i in y_true[rows]})
        if len(held) < 2:
            notes.append(
                f"fold {fold} holds only class {held[0]!r} ({int(rows.sum())} cases): its AUC "
                "is undefined and its F1 describes one class"
            )
    if (predictions.folds == -1).any() and per_fold:
        notes.append(f"{int((predictions.folds == -1).sum())} case(s) have no fold")
    return per_fold, notes
