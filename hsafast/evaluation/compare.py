"""Paired comparison of two models on the same cases.

Three tests, named by where they come from:

- **paper** (HistoStainAlign's protocol): for each true class separately
  (positives, then negatives), a one-sided Wilcoxon signed-rank test that the
  new model gives the true class a higher probability than the baseline does,
  over the pooled held-out cases.
- **hsafast, folds**: a two-sided Wilcoxon signed-rank test of the per-fold
  metric differences. With k folds the smallest p it can reach is 2 / 2^k
  (0.0625 for 5 folds): it can only ever confirm large, consistent gains.
- **hsafast, bootstrap**: the percentile interval of the metric difference over
  paired resamples of patients (both models scored on the same resample).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from hsafast.errors import EvaluationError
from hsafast.evaluation.assess import Evaluation
from hsafast.evaluation.bootstrap import Interval, bootstrap, cluster_index, percentile_interval
from hsafast.evaluation.metrics import METRIC_LABELS, weighted_metrics
from hsafast.evaluation.predictions import Predictions

__all__ = ["Comparison", "TrueClassTest", "compare_models"]


@dataclass(frozen=True)
class TrueClassTest:
    """The paper's test for one true class: does the new model give it more probability?"""

    true_class: str
    n: int
    median_new: float
    median_baseline: float
    statistic: float
    p_value: float


@dataclass(frozen=True)
class Comparison:
    """``model`` against ``baseline`` on the same cases."""

    model: str
    baseline: str
    metric: str
    difference: Interval
    p_bootstrap: float
    fold_pairs: dict[int, tuple[float, float]]
    fold_p_value: float
    true_class_tests: tuple[TrueClassTest, ...]
    notes: tuple[str, ...] = ()

    @property
    def fold_min_p(self) -> float:
        """The smallest two-sided p the fold test can reach with this many folds."""
        return min(1.0, 2.0 / 2 ** len(self.fold_pairs)) if self.fold_pairs else math.nan


def compare_models(
    new: Evaluation,
    baseline: Evaluation,
    *,
    metric: str = "weighted_f1",
    names: tuple[str, str] = ("model", "baseline"),
) -> Comparison:
    """Compare two evaluations of the same cases (same IDs, labels and classes).

    The paired bootstrap uses the resampling unit, count and seed of ``new``'s
    config. ``p_bootstrap`` is the share of resamples in which the new model
    is not better: a one-sided bootstrap p-value.
    """
    if metric not in METRIC_LABELS:
        raise EvaluationError(f"unknown metric {metric!r}; one of {sorted(METRIC_LABELS)}")
    a, b = _aligned(new, baseline)
    config = new.config
    classes = a.classes
    y_true, y_new = a.indices()
    _, y_base = b.indices()
    pos = None if new.positive_class is None else classes.index(new.positive_class)
    groups = a.patient_ids if config.resample == "patients" else a.case_ids

    def difference(weights: np.ndarray) -> dict[str, np.ndarray]:
        m_new = weighted_metrics(weights, y_true, y_new, a.probabilities, pos)[metric]
        m_base = weighted_metrics(weights, y_true, y_base, b.probabilities, pos)[metric]
        return {"diff": m_new - m_base}

    diffs = bootstrap(difference, cluster_index(groups), config.n_resamples, config.seed)["diff"]
    estimate = new.metrics[metric].estimate - baseline.metrics[metric].estimate
    finite = diffs[np.isfinite(diffs)]
    p_boot = float((finite <= 0).mean()) if len(finite) else math.nan

    notes: list[str] = []
    folds = sorted(set(new.per_fold) & set(baseline.per_fold))
    pairs = {f: (new.per_fold[f][metric], baseline.per_fold[f][metric]) for f in folds}
    fold_p = _fold_wilcoxon(pairs, notes)
    return Comparison(
        model=names[0],
        baseline=names[1],
        metric=metric,
        difference=percentile_interval(estimate, diffs, config.confidence),
        p_bootstrap=p_boot,
        fold_pairs=pairs,
        fold_p_value=fold_p,
        true_class_tests=_true_class_tests(a, b, y_true, notes),
        notes=tuple(notes),
    )


def _aligned(new: Evaluation, baseline: Evaluation) -> tuple[Predictions, Predictions]:
    a, b = new.predictions, baseline.predictions
    if a.classes != b.classes:
        raise EvaluationError(f"the models' classes differ: {a.classes} vs {b.classes}")
    if set(a.case_ids) != set(b.case_ids):
        only_a = sorted(set(a.case_ids) - set(b.case_ids))
        only_b = sorted(set(b.case_ids) - set(a.case_ids))
        raise EvaluationError(
            f"a paired comparison needs the same cases: only in the model {only_a[:5]}, "
            f"only in the baseline {only_b[:5]}"
        )
    where = {c: i for i, c in enumerate(b.case_ids)}
    b = b.subset([where[c] for c in a.case_ids])
    if a.labels != b.labels:
        differ = [c for c, x, y in zip(a.case_ids, a.labels, b.labels, strict=True) if x != y]
        raise EvaluationError(f"the models were scored against different labels: {differ[:5]}")
    return a, b


def _fold_wilcoxon(pairs: dict[int, tuple[float, float]], notes: list[str]) -> float:
    from scipy.stats import wilcoxon

    diffs = np.array([x - y for x, y in pairs.values()])
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) < 2 or not diffs.any():
        notes.append(
            "the fold test needs two or more folds with a non-zero difference; it is not reported"
        )
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(diffs, alternative="two-sided").pvalue)


def _true_class_tests(
    a: Predictions, b: Predictions, y_true: np.ndarray, notes: list[str]
) -> tuple[TrueClassTest, ...]:
    from scipy.stats import wilcoxon

    tests = []
    rows = np.arange(len(y_true))
    p_new = a.probabilities[rows, y_true]
    p_base = b.probabilities[rows, y_true]
    for c, name in reversed(list(enumerate(a.classes))):  # positives first, as the paper
        mask = y_true == c
        n = int(mask.sum())
        stat = p = math.nan
        if n and np.any(p_new[mask] != p_base[mask]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = wilcoxon(p_base[mask], p_new[mask], alternative="less")
            stat, p = float(result.statistic), float(result.pvalue)
        else:
            notes.append(f"class {name!r}: no case with differing probabilities; no test")
        tests.append(
            TrueClassTest(
                true_class=name,
                n=n,
                median_new=float(np.median(p_new[mask])) if n else math.nan,
                median_baseline=float(np.median(p_base[mask])) if n else math.nan,
                statistic=stat,
                p_value=p,
            )
        )
    return tuple(tests)
