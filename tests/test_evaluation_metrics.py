"""Metrics against scikit-learn, bootstrap intervals and their coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from evaluation_data import sim_cohort, sim_predictions
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from hsafast.evaluation.assess import EvaluationConfig, evaluate
from hsafast.evaluation.bootstrap import (
    bootstrap,
    cluster_index,
    percentile_interval,
    resample_weights,
)
from hsafast.evaluation.metrics import METRICS, point_metrics, weighted_metrics


def _random_task(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, calls and probabilities that carry some signal, with tied scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    proba = np.round(proba, 2)  # ties, as from a coarse model
    proba /= proba.sum(axis=1, keepdims=True)
    return y, proba.argmax(axis=1), proba


def _sklearn(y: np.ndarray, pred: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The metrics straight from scikit-learn, written out independently of hsafast."""
    out = {
        "weighted_f1": f1_score(y, pred, average="weighted", zero_division=0),
        "macro_f1": f1_score(y, pred, average="macro", zero_division=0),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
    }
    try:
        if proba.shape[1] == 2:
            out["auc"] = roc_auc_score(y, proba[:, 1])
        else:
            out["auc"] = roc_auc_score(
                y, proba, multi_class="ovr", labels=np.arange(proba.shape[1])
            )
    except ValueError:
        out["auc"] = math.nan
    return out


def _assert_metrics_close(got: dict, want: dict, where: str) -> None:
    worst = max(
        want,
        key=lambda k: 0.0 if math.isnan(want[k]) and math.isnan(got[k]) else abs(got[k] - want[k]),
    )
    for name, value in want.items():
        assert math.isclose(got[name], value, abs_tol=1e-12) or (
            math.isnan(value) and math.isnan(got[name])
        ), f"{where}: {name} = {got[name]} vs scikit-learn {value} (worst metric: {worst})"


@pytest.mark.parametrize("classes", [2, 3])
def test_point_metrics_are_scikit_learns(classes: int) -> None:
    y, pred, proba = _random_task(120, classes, seed=classes)
    _assert_metrics_close(point_metrics(y, pred, proba, positive=1), _sklearn(y, pred, proba), "")


@pytest.mark.parametrize("classes", [2, 3])
def test_every_bootstrap_resample_equals_scikit_learn_on_the_resampled_cases(classes: int) -> None:
    y, pred, proba = _random_task(90, classes, seed=10 + classes)
    patients = cluster_index([f"P{i // 3}" for i in range(len(y))])  # three cases per patient
    weights = resample_weights(patients, 40, np.random.default_rng(0))
    fast = weighted_metrics(weights, y, pred, proba, positive=1)
    for b, w in enumerate(weights):
        rows = np.repeat(np.arange(len(y)), w.astype(int))
        got = {name: float(fast[name][b]) for name in ("weighted_f1", "macro_f1", "auc")}
        got["balanced_accuracy"] = float(fast["balanced_accuracy"][b])
        _assert_metrics_close(got, _sklearn(y[rows], pred[rows], proba[rows]), f"resample {b}")


def test_unit_weights_reproduce_the_point_estimates_including_sensitivity() -> None:
    y, pred, proba = _random_task(75, 2, seed=3)
    fast = weighted_metrics(np.ones((1, len(y))), y, pred, proba, positive=1)
    point = point_metrics(y, pred, proba, positive=1)
    for name in METRICS:
        assert math.isclose(fast[name][0], point[name], abs_tol=1e-12), name
    tp = int(((pred == 1) & (y == 1)).sum())
    assert math.isclose(point["sensitivity"], tp / (y == 1).sum())


def test_auc_is_undefined_with_one_class() -> None:
    y, pred, proba = _random_task(30, 2, seed=4)
    one = np.zeros_like(y)
    assert math.isnan(point_metrics(one, pred, proba, positive=1)["auc"])
    assert math.isnan(weighted_metrics(np.ones((1, 30)), one, pred, proba, positive=1)["auc"][0])


def test_evaluate_is_seeded_and_its_estimates_are_scikit_learns() -> None:
    cohort = sim_cohort(50, seed=1)
    predictions = sim_predictions(cohort, seed=2)
    a = evaluate(predictions, config=EvaluationConfig(seed=5))
    b = evaluate(predictions, config=EvaluationConfig(seed=5))
    c = evaluate(predictions, config=EvaluationConfig(seed=6))
    assert a.metrics == b.metrics
    assert a.metrics["weighted_f1"].low != c.metrics["weighted_f1"].low
    y, pred = predictions.indices()
    _assert_metrics_close(
        {k: a.metrics[k].estimate for k in ("weighted_f1", "macro_f1", "balanced_accuracy", "auc")},
        _sklearn(y, pred, predictions.probabilities),
        "evaluate",
    )
    for name, interval in a.metrics.items():
        assert interval.low <= interval.estimate <= interval.high, name
        assert interval.valid == 1000
    assert a.confusion.sum() == len(cohort.case_ids)
    assert a.n_patients == 50 and sorted(a.per_fold) == [0, 1, 2, 3, 4]


def _intervals(predictions, unit: str, seed: int) -> dict[str, tuple[float, float]]:
    """The intervals ``evaluate`` reports, without its scikit-learn point estimates
    (equal to these unit-weight estimates, as tested above): 300 draws stay fast."""
    y, pred = predictions.indices()
    proba = predictions.probabilities
    groups = predictions.patient_ids if unit == "patients" else predictions.case_ids
    samples = bootstrap(
        lambda w: weighted_metrics(w, y, pred, proba, positive=1), cluster_index(groups), 1000, seed
    )
    point = weighted_metrics(np.ones((1, len(y))), y, pred, proba, positive=1)
    out = {}
    for name in ("weighted_f1", "auc"):
        interval = percentile_interval(float(point[name][0]), samples[name], 0.95)
        out[name] = (interval.low, interval.high)
    return out


def test_patient_bootstrap_covers_the_truth_about_95_percent_and_case_bootstrap_does_not() -> None:
    """Repeated draws from one simulated population whose true metrics are known.

    Patients hold 1-6 correlated cases (shared label and model-error effects).
    300 draws of 60 patients: the Monte Carlo SD of a 95% coverage is 1.3 points,
    so [0.92, 0.98] allows about 2.3 SD of chance plus the percentile bootstrap's
    small-sample bias. Resampling cases ignores the clustering; its coverage of
    weighted F1 falls to 0.89 here, so it must stay below 0.91 (3 SD under 0.95).
    """
    population = sim_cohort(200_000, seed=12345, k=None, max_cases=6)
    pop = sim_predictions(population, seed=999, patient_noise=1.5)
    y, pred = pop.indices()
    truth = point_metrics(y, pred, pop.probabilities, positive=1)
    draws = 300
    hits = {("patients", "weighted_f1"): 0, ("patients", "auc"): 0, ("cases", "weighted_f1"): 0}
    for r in range(draws):
        sample = sim_predictions(
            sim_cohort(60, seed=1000 + r, k=None, max_cases=6), seed=5000 + r, patient_noise=1.5
        )
        for unit in ("patients", "cases"):
            intervals = _intervals(sample, unit, seed=r)
            for u, m in hits:
                if u == unit:
                    low, high = intervals[m]
                    hits[(u, m)] += low <= truth[m] <= high
    coverage = {key: n / draws for key, n in hits.items()}
    assert 0.92 <= coverage[("patients", "weighted_f1")] <= 0.98, coverage
    assert 0.92 <= coverage[("patients", "auc")] <= 0.98, coverage
    assert coverage[("cases", "weighted_f1")] < 0.91, coverage
