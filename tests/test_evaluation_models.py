"""Paired comparisons, the linear probe and the alignment analysis on simulated runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from evaluation_data import BINARY, sim_cohort, sim_embeddings, sim_predictions
from scipy.stats import wilcoxon
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from hsafast.errors import EvaluationError
from hsafast.evaluation import (
    ProbeConfig,
    alignment_analysis,
    compare_alignment,
    compare_models,
    evaluate,
    fit_probe,
    probe_predictions,
    read_embeddings,
)


@pytest.fixture(scope="module")
def cohort():
    return sim_cohort(60, seed=11)


def test_a_better_model_wins_every_test(cohort) -> None:
    strong = evaluate(sim_predictions(cohort, seed=1, skill=3.0, noise=0.5))
    weak = evaluate(sim_predictions(cohort, seed=2, skill=0.7, noise=1.5))
    c = compare_models(strong, weak)
    assert c.difference.low > 0
    expected = strong.metrics["weighted_f1"].estimate - weak.metrics["weighted_f1"].estimate
    assert c.difference.estimate == pytest.approx(expected)
    assert c.p_bootstrap < 0.01
    assert sorted(c.fold_pairs) == [0, 1, 2, 3, 4]
    assert c.fold_min_p == pytest.approx(0.0625)
    assert [t.true_class for t in c.true_class_tests] == ["intermediate/high", "low"]
    assert all(t.p_value < 0.01 for t in c.true_class_tests)


def test_true_class_test_is_scipys_one_sided_wilcoxon(cohort) -> None:
    a = evaluate(sim_predictions(cohort, seed=3))
    b = evaluate(sim_predictions(cohort, seed=4))
    c = compare_models(a, b)
    y, _ = a.predictions.indices()
    rows = np.arange(len(y))
    for test in c.true_class_tests:
        k = BINARY.index(test.true_class)
        new = a.predictions.probabilities[rows, y][y == k]
        base = b.predictions.probabilities[rows, y][y == k]
        assert test.n == len(new)
        assert test.p_value == pytest.approx(wilcoxon(base, new, alternative="less").pvalue)


def test_comparing_a_model_with_itself_finds_nothing(cohort) -> None:
    a = evaluate(sim_predictions(cohort, seed=5))
    c = compare_models(a, a)
    assert c.difference.estimate == 0 and c.difference.low == 0 and c.difference.high == 0
    assert np.isnan(c.fold_p_value)
    assert all(np.isnan(t.p_value) for t in c.true_class_tests)
    assert any("no case with differing probabilities" in n for n in c.notes)


def test_comparison_needs_the_same_cases(cohort) -> None:
    a = sim_predictions(cohort, seed=6)
    fewer = a.subset(np.arange(len(a) - 2))
    with pytest.raises(EvaluationError, match="same cases"):
        compare_models(evaluate(a), evaluate(fewer))


def test_probe_matches_scikit_learn_with_the_chosen_c() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(80) < 0.4
    x = rng.normal(size=(80, 24)) + 0.8 * y[:, None] * rng.normal(size=24)
    labels = np.where(y, BINARY[1], BINARY[0])
    groups = np.array([f"P{i // 2}" for i in range(80)])
    fit = fit_probe(x[:60], labels[:60], x[60:], BINARY, train_groups=groups[:60])
    assert fit.c in ProbeConfig().c_values()
    scaler = StandardScaler().fit(x[:60])
    reference = LogisticRegression(C=fit.c, class_weight="balanced", max_iter=10_000).fit(
        scaler.transform(x[:60]), y[:60].astype(int)
    )
    expected = reference.predict_proba(scaler.transform(x[60:]))
    worst = np.unravel_index(np.argmax(np.abs(fit.probabilities - expected)), expected.shape)
    assert np.allclose(fit.probabilities, expected, atol=1e-4), f"worst element {worst}"


def test_probe_on_a_run_pools_folds_and_learns_the_label(tmp_path: Path, cohort) -> None:
    path = tmp_path / "slide.npz"
    np.savez(path, **sim_embeddings(cohort, seed=7))
    run = probe_predictions(read_embeddings(path), BINARY)
    assert sorted(run.predictions.case_ids) == sorted(cohort.case_ids)
    assert sorted({f for _, f in run.c}) == [0, 1, 2, 3, 4]
    ev = evaluate(run.predictions)
    assert ev.metrics["auc"].low > 0.5  # the label shifts the embeddings: better than chance


def test_paper_probe_searches_40_of_100_values_by_case() -> None:
    from hsafast.evaluation.probe import _candidates

    paper = ProbeConfig.paper()
    values = _candidates(paper)
    grid = np.logspace(-3, 2, 100)
    assert len(values) == 40 == len(set(values))
    assert all(np.isclose(grid, v).any() for v in values)
    assert not paper.group_by_patient and paper.inner_folds == 5
    rng = np.random.default_rng(3)
    y = rng.random(50) < 0.5
    x = rng.normal(size=(50, 6)) + y[:, None]
    labels = np.where(y, BINARY[1], BINARY[0])
    fit = fit_probe(x, labels, x, BINARY, config=paper)
    assert fit.c in values
    pred = fit.probabilities.argmax(axis=1)
    assert f1_score(y.astype(int), pred, average="weighted") > 0.7  # separable by a shift of 1


def test_probe_without_training_rows_says_why(tmp_path: Path, cohort) -> None:
    path = tmp_path / "held_out_only.npz"
    np.savez(path, **sim_embeddings(cohort, seed=8, with_train=False))
    with pytest.raises(EvaluationError, match="no training rows"):
        probe_predictions(read_embeddings(path), BINARY)


def test_alignment_separates_aligned_from_unaligned_embeddings(tmp_path: Path, cohort) -> None:
    results = {}
    for alignment in (0.8, 0.0):
        path = tmp_path / f"a{alignment}.npz"
        np.savez(path, **sim_embeddings(cohort, seed=9, alignment=alignment, with_train=False))
        results[alignment] = alignment_analysis(read_embeddings(path))
    aligned, unaligned = results[0.8], results[0.0]
    assert aligned.gap_mean.low > 0.3 and aligned.p_value < 1e-6
    assert unaligned.gap_mean.mean < 0.1
    assert aligned.recall["H&E to IHC"][1] > 0.9
    # chance of recall@1 is 1 / (cases per fold): about 1/30 here
    assert unaligned.recall["H&E to IHC"][1] < 0.3
    assert aligned.chance[1] == pytest.approx(unaligned.chance[1])
    assert compare_alignment(aligned, unaligned) < 1e-6


def test_alignment_excludes_the_same_patient_from_shuffled_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, dim = 6, 8
    he = rng.normal(size=(n, dim))
    ihc = he + 0.1 * rng.normal(size=(n, dim))
    path = tmp_path / "e.npz"
    np.savez(
        path,
        case_id=np.array([f"c{i}" for i in range(n)]),
        patient_id=np.array(["P1", "P1", "P2", "P3", "P4", "P5"]),
        marker=np.array(["p53"] * n),
        label=np.array(["low", "intermediate/high"] * 3),
        fold=np.zeros(n, dtype=np.int64),
        he=he,
        ihc=ihc,
    )
    result = alignment_analysis(read_embeddings(path))
    cos = (he / np.linalg.norm(he, axis=1, keepdims=True)) @ (
        ihc / np.linalg.norm(ihc, axis=1, keepdims=True)
    ).T
    assert result.shuffled[0] == pytest.approx(cos[0, 2:].mean())  # c1 (same patient) left out
    assert result.shuffled[2] == pytest.approx(np.delete(cos[2], 2).mean())
    assert result.paired[3] == pytest.approx(cos[3, 3])


def test_bad_embeddings_raise(tmp_path: Path, cohort) -> None:
    arrays = sim_embeddings(cohort, seed=10, with_train=False)
    arrays["he"][3, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, **arrays)
    with pytest.raises(EvaluationError, match="not finite"):
        read_embeddings(path)
    arrays = sim_embeddings(cohort, seed=10, with_train=False)
    del arrays["ihc"]
    np.savez(path, **arrays)
    with pytest.raises(EvaluationError, match="lack arrays"):
        read_embeddings(path)
