"""Evaluation speed: ``python -m bench evaluate [--quick]``.

1. Bootstrap intervals of weighted F1, macro F1, balanced accuracy and AUC
   (1000 resamples). Peer: a loop of scikit-learn calls over the resampled
   cases, as the HistoStainAlign authors' script does. hsafast: every resample
   as one row of a case-weight matrix. Both get the very same resamples (drawn
   once by patient), so their distributions must agree to rounding; the
   largest difference is reported. The input does not favour hsafast: random
   scores, two classes, ties.
2. The linear probe's search for C (11 values, 5 inner folds): scikit-learn's
   GridSearchCV over LogisticRegression against hsafast's ``fit_probe``
   (LogisticRegressionCV's warm-started path, BLAS limited to one thread);
   both must choose the same C.

Timings are medians of repeats (3 for the scikit-learn loop). The bootstrap
runs with the BLAS as configured, its 1-thread figure beside; the probe's
speed-up compares both on one BLAS thread (hsafast's setting for the probe),
with the peer's default-thread time beside.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from bench._common import Table, median_seconds


def _task(n_cases: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_cases), rng.integers(1, 4, n_cases))[:n_cases]
    y = (rng.random(n_cases) < 0.4).astype(np.int64)
    score = np.clip(0.5 + 0.25 * (2 * y - 1) + 0.3 * rng.normal(size=n_cases), 0, 1)
    score = np.round(score, 2)
    proba = np.stack([1 - score, score], axis=1)
    return y, (score > 0.5).astype(np.int64), proba, patients


def _sklearn_loop(weights: np.ndarray, y, pred, proba) -> np.ndarray:
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    out = np.empty((len(weights), 4))
    for b, w in enumerate(weights):
        rows = np.repeat(np.arange(len(y)), w.astype(np.int64))
        yt, yp = y[rows], pred[rows]
        out[b] = (
            f1_score(yt, yp, average="weighted", zero_division=0),
            f1_score(yt, yp, average="macro", zero_division=0),
            balanced_accuracy_score(yt, yp),
            roc_auc_score(yt, proba[rows, 1]),
        )
    return out


def _hsafast(weights: np.ndarray, y, pred, proba) -> np.ndarray:
    from hsafast.evaluation.metrics import weighted_metrics

    m = weighted_metrics(weights, y, pred, proba, positive=1)
    return np.stack([m["weighted_f1"], m["macro_f1"], m["balanced_accuracy"], m["auc"]], axis=1)


def bootstrap_row(table: Table, n: int, resamples: int, repeats: int) -> None:
    from functools import partial

    from threadpoolctl import threadpool_limits

    from hsafast.evaluation.bootstrap import cluster_index, resample_weights

    y, pred, proba, patients = _task(n)
    weights = resample_weights(
        cluster_index(patients.astype(str)), resamples, np.random.default_rng(1)
    )
    peer = partial(_sklearn_loop, weights, y, pred, proba)
    ours = partial(_hsafast, weights, y, pred, proba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        worst = float(np.nanmax(np.abs(peer() - ours())))
        t_sk = median_seconds(peer, 3, 0)
    t_hs = median_seconds(ours, repeats, 1)
    with threadpool_limits(1):
        t_hs1 = median_seconds(ours, repeats, 1)
    table.add(
        f"bootstrap, {n} cases x {resamples}",
        f"{t_sk:.2f} s",
        f"{t_hs * 1e3:.1f} ms",
        f"{t_hs1 * 1e3:.1f} ms",
        f"{t_sk / t_hs:.0f}x",
        f"max |diff| {worst:.1e}",
    )


def probe_rows(table: Table, n_cases: int, dim: int, repeats: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from hsafast.evaluation.probe import ProbeConfig, fit_probe

    rng = np.random.default_rng(2)
    y = rng.random(n_cases) < 0.4
    x = rng.normal(size=(n_cases, dim)) + 0.6 * y[:, None] * rng.normal(size=dim)
    labels = np.where(y, "high", "low")
    classes = ("low", "high")
    config = ProbeConfig(group_by_patient=False)

    def grid() -> float:
        scaled = StandardScaler().fit_transform(x)
        search = GridSearchCV(
            LogisticRegression(class_weight="balanced", max_iter=10_000),
            {"C": config.c_values()},
            scoring="average_precision",
            cv=StratifiedKFold(5),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            search.fit(scaled, y.astype(int))
        return float(search.best_params_["C"])

    def ours() -> float:
        return fit_probe(x, labels, x[:2], classes, config=config).c

    same = grid() == ours()
    t_grid = median_seconds(grid, repeats, 0)
    t_ours = median_seconds(ours, repeats, 0)
    with threadpool_limits(1):
        t_grid1 = median_seconds(grid, repeats, 0)
    # equal footing: both on one BLAS thread; the peer's default threads beside
    table.add(
        f"probe C search, {n_cases} x {dim}",
        f"{t_grid1:.2f} s (BLAS default threads {t_grid:.2f} s)",
        f"{t_ours:.2f} s",
        f"{t_ours:.2f} s",
        f"{t_grid1 / t_ours:.1f}x",
        "same C" if same else "C differs",
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench evaluate")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 5
    table = Table(
        "evaluate",
        ["task", "scikit-learn", "hsafast", "hsafast 1 thread", "speed-up", "check"],
    )
    for n in [200] if args.quick else [200, 2000]:
        bootstrap_row(table, n, 1000, repeats)
    probe_rows(table, 80, 64 if args.quick else 768, repeats)
    table.notes["resamples"] = "the same patient resamples for both; ties in the scores"
    table.print()
    print(f"wrote {table.save(['scikit-learn', 'scipy'])}")
    return 0
