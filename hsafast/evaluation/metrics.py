"""Classification metrics: scikit-learn's for point estimates, and the same
metrics vectorised over case weights for the bootstrap.

A bootstrap resample is a vector of case weights (how often each case was
drawn), so one resample's metric equals scikit-learn's metric with
``sample_weight`` set to those weights. Evaluating a thousand resamples as one
weight matrix takes milliseconds where a loop of scikit-learn calls takes
seconds; the tests check both agree on random inputs.

Conventions, as scikit-learn's defaults: macro F1 averages the classes present
among the true or predicted labels; balanced accuracy averages the recall of
the classes present among the true labels; F1 of a class is
2 TP / (2 TP + FP + FN), 0 when that is 0/0; AUC is one-vs-rest, macro-averaged
over classes for more than two classes, and undefined (NaN) when a class has no
positive or no negative case.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "confusion_matrix",
    "point_metrics",
    "weighted_metrics",
]

#: Metrics reported for every evaluation, in table order.
METRICS = ("weighted_f1", "macro_f1", "balanced_accuracy", "auc", "sensitivity", "specificity")

#: How each metric is named in tables.
METRIC_LABELS = {
    "weighted_f1": "Weighted F1",
    "macro_f1": "Macro F1",
    "balanced_accuracy": "Balanced accuracy",
    "auc": "AUC (one-vs-rest)",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class (int64, C x C)."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    return np.asarray(sk_confusion(y_true, y_pred, labels=np.arange(n_classes)), dtype=np.int64)


def point_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray, positive: int | None
) -> dict[str, float]:
    """Every metric of :data:`METRICS` on one set of predictions, by scikit-learn.

    ``y_true`` and ``y_pred`` are class indices, ``proba`` is N x C.
    ``positive`` is the index of the positive class for a binary task
    (sensitivity and specificity are NaN otherwise).
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    n_classes = proba.shape[1]
    out = {
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred, balanced_accuracy_score),
        "auc": math.nan,
        "sensitivity": math.nan,
        "specificity": math.nan,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AUC of a single class: NaN below, said in the notes
        try:
            if n_classes == 2:
                out["auc"] = float(roc_auc_score(y_true == 1, proba[:, 1]))
            else:
                out["auc"] = float(
                    roc_auc_score(y_true, proba, multi_class="ovr", labels=np.arange(n_classes))
                )
        except ValueError:  # a class without positive or negative cases
            pass
    if n_classes == 2 and positive is not None:
        is_pos, said_pos = y_true == positive, y_pred == positive
        if is_pos.any():
            out["sensitivity"] = float((said_pos & is_pos).sum() / is_pos.sum())
        if (~is_pos).any():
            out["specificity"] = float((~said_pos & ~is_pos).sum() / (~is_pos).sum())
    return out


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, score) -> float:
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true": those classes count as scikit-learn says
        warnings.simplefilter("ignore", UserWarning)
        return float(score(y_true, y_pred))


def weighted_metrics(
    weights: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray,
    positive: int | None,
) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` for each row of case weights (B x N -> B).

    Row ``b`` equals scikit-learn's metric with ``sample_weight=weights[b]``;
    NaN where the metric is undefined for that row.
    """
    n_classes = proba.shape[1]
    cells = y_true * n_classes + y_pred
    onehot = np.zeros((len(cells), n_classes * n_classes))
    onehot[np.arange(len(cells)), cells] = 1.0
    cm = (weights @ onehot).reshape(-1, n_classes, n_classes)
    diag = np.diagonal(cm, axis1=1, axis2=2)
    true_total = cm.sum(axis=2)  # per class support
    pred_total = cm.sum(axis=1)
    total = true_total.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = true_total + pred_total
        f1 = np.where(denom > 0, 2.0 * diag / np.where(denom > 0, denom, 1.0), 0.0)
        weighted_f1 = (f1 * true_total).sum(axis=1) / total
        present = denom > 0
        macro_f1 = (f1 * present).sum(axis=1) / present.sum(axis=1)
        in_true = true_total > 0
        recall = np.where(in_true, diag / np.where(in_true, true_total, 1.0), 0.0)
        balanced = recall.sum(axis=1) / in_true.sum(axis=1)
    out = {
        "weighted_f1": weighted_f1,
        "macro_f1": macro_f1,
        "balanced_accuracy": balanced,
        "auc": _weighted_auc(weights, y_true, proba),
        "sensitivity": np.full(len(weights), np.nan),
        "specificity": np.full(len(weights), np.nan),
    }
    if n_classes == 2 and positive is not None:
        negative = 1 - positive
        with np.errstate(invalid="ignore", divide="ignore"):
            out["sensitivity"] = cm[:, positive, positive] / true_total[:, positive]
            out["specificity"] = cm[:, negative, negative] / true_total[:, negative]
    return out


def _weighted_auc(weights: np.ndarray, y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    n_classes = proba.shape[1]
    if n_classes == 2:
        return _binary_auc(weights, y_true == 1, proba[:, 1])
    per_class = np.stack(
        [_binary_auc(weights, y_true == c, proba[:, c]) for c in range(n_classes)], axis=1
    )
    return per_class.mean(axis=1)  # NaN if any class is undefined, as scikit-learn raises


def _binary_auc(weights: np.ndarray, is_pos: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC per row of weights; ties count one half."""
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * is_pos[order], starts, axis=1)  # B x tie groups
    neg = np.add.reduceat(w * ~is_pos[order], starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / pairs
    return np.where(pairs > 0, auc, np.nan)
