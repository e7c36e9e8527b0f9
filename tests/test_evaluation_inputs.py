"""Predictions and labels in, clear errors or explicit notes out; never a silent drop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from evaluation_data import BINARY, sim_cohort, sim_predictions, write_predictions_csv

from hsafast.errors import EvaluationError
from hsafast.evaluation import (
    EvaluationConfig,
    Predictions,
    evaluate,
    read_labels,
    read_predictions,
)


@pytest.fixture(scope="module")
def predictions() -> Predictions:
    return sim_predictions(sim_cohort(30, seed=3, markers=("p53", "ki67")), seed=4)


def test_csv_round_trip_keeps_every_column(tmp_path: Path, predictions: Predictions) -> None:
    path = tmp_path / "slide.csv"
    write_predictions_csv(path, predictions)
    again = read_predictions(path)
    assert again.case_ids == predictions.case_ids
    assert again.patient_ids == predictions.patient_ids
    assert again.classes == BINARY
    assert np.allclose(again.probabilities, predictions.probabilities, atol=1e-6)
    assert np.array_equal(again.folds, predictions.folds)
    assert again.labels == predictions.labels and again.markers == predictions.markers
    assert sorted(again.by_marker()) == ["ki67", "p53"]


def test_evaluate_reads_a_csv_and_a_mapping_alike(tmp_path: Path, predictions: Predictions) -> None:
    path = tmp_path / "slide.csv"
    write_predictions_csv(path, predictions)
    from_csv = evaluate(path)
    mapping = {
        c: dict(zip(BINARY, row, strict=True))
        for c, row in zip(predictions.case_ids, predictions.probabilities.tolist(), strict=True)
    }
    labels = dict(zip(predictions.case_ids, predictions.labels, strict=True))
    patients = dict(zip(predictions.case_ids, predictions.patient_ids, strict=True))
    from_mapping = evaluate(mapping, labels, patients=patients)
    for name, interval in from_csv.metrics.items():
        assert interval.estimate == pytest.approx(from_mapping.metrics[name].estimate, abs=1e-6)
    assert from_csv.n_patients == from_mapping.n_patients == 30


def test_labels_from_a_manifest_override_and_supply_patients(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "case_id,patient_id,he_path,ihc_path,marker,label\n"
        "a,P1,a.svs,a_ihc.svs,p53,low\n"
        "b,P1,b.svs,b_ihc.svs,p53,intermediate/high\n"
        "c,P2,c.svs,c_ihc.svs,p53,intermediate/high\n"
        "d,P3,d.svs,d_ihc.svs,p53,low\n"
    )
    labels, patients = read_labels(manifest)
    assert labels["b"] == "intermediate/high" and patients["b"] == "P1"
    probs = {"a": [0.8, 0.2], "b": [0.3, 0.7], "c": [0.6, 0.4], "d": [0.9, 0.1]}
    ev = evaluate(Predictions.from_probabilities(probs, BINARY), manifest)
    assert ev.n_cases == 4 and ev.n_patients == 3
    assert ev.confusion.tolist() == [[2, 0], [1, 1]]


def test_missing_labels_raise_naming_the_cases_or_become_notes(predictions: Predictions) -> None:
    labels = dict(zip(predictions.case_ids, predictions.labels, strict=True))
    gone = predictions.case_ids[:3]
    for case in gone:
        del labels[case]
    with pytest.raises(EvaluationError, match="3 predicted case.*no label") as err:
        evaluate(predictions, labels)
    assert gone[0] in str(err.value)
    ev = evaluate(predictions, labels, config=EvaluationConfig(on_mismatch="note"))
    assert ev.n_cases == len(predictions) - 3
    assert any(gone[0] in n and "left out" in n for n in ev.notes)


def test_labels_of_cases_never_predicted_raise_or_become_notes(predictions: Predictions) -> None:
    labels = dict(zip(predictions.case_ids, predictions.labels, strict=True))
    labels["ghost-1"] = "low"
    with pytest.raises(EvaluationError, match="ghost-1"):
        evaluate(predictions, labels)
    ev = evaluate(predictions, labels, config=EvaluationConfig(on_mismatch="note"))
    assert ev.n_cases == len(predictions)
    assert any("ghost-1" in n and "not evaluated" in n for n in ev.notes)


def test_a_label_outside_the_classes_raises(predictions: Predictions) -> None:
    labels = dict(zip(predictions.case_ids, predictions.labels, strict=True))
    labels[predictions.case_ids[0]] = "moderate"
    with pytest.raises(EvaluationError, match="'moderate'"):
        evaluate(predictions, labels)


def test_a_fold_with_one_class_is_noted(predictions: Predictions) -> None:
    folds = predictions.folds.copy()
    low = [i for i, label in enumerate(predictions.labels) if label == "low"][:3]
    folds[low] = 9  # a fold of three 'low' cases only
    one_class = Predictions(**{**predictions.__dict__, "folds": folds})
    ev = evaluate(one_class)
    assert any("fold 9 holds only class 'low'" in n for n in ev.notes)
    assert np.isnan(ev.per_fold[9]["auc"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"probabilities": "nan"}, "not finite"),
        ({"probabilities": "sum"}, "summing to 1"),
        ({"case_ids": "dup"}, "duplicate case IDs"),
    ],
)
def test_bad_predictions_raise(predictions: Predictions, change: dict, message: str) -> None:
    values = dict(predictions.__dict__)
    proba = predictions.probabilities.copy()
    if change.get("probabilities") == "nan":
        proba[2, 0] = np.nan
    if change.get("probabilities") == "sum":
        proba[4] = [0.7, 0.7]
    values["probabilities"] = proba
    if change.get("case_ids") == "dup":
        values["case_ids"] = (predictions.case_ids[1], *predictions.case_ids[1:])
    with pytest.raises(EvaluationError, match=message):
        Predictions(**values)


def test_bad_csv_files_raise_with_the_path(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("case_id,p_low,p_high,colour\na,0.5,0.5,red\n")
    with pytest.raises(EvaluationError, match="unknown columns") as err:
        read_predictions(unknown)
    assert str(unknown) in str(err.value)
    one_class = tmp_path / "one.csv"
    one_class.write_text("case_id,p_low\na,1.0\n")
    with pytest.raises(EvaluationError, match="two or more"):
        read_predictions(one_class)
    words = tmp_path / "words.csv"
    words.write_text("case_id,p_low,p_high\na,half,0.5\n")
    with pytest.raises(EvaluationError, match="line 2"):
        read_predictions(words)
    with pytest.raises(EvaluationError, match="cannot read"):
        read_predictions(tmp_path / "missing.csv")
    with pytest.raises(EvaluationError, match="case_id and label"):
        read_labels(words)


def _slide_results(n: int, seed: int, markers: tuple[str, ...] = ("ki67",)) -> list:
    from hsafast.scoring.results import MarkerResult, SlideResult

    rng = np.random.default_rng(seed)
    results = []
    for i in range(n):
        per_marker = {}
        for m in markers:
            p = float(rng.uniform(0.05, 0.95))
            per_marker[m] = MarkerResult(m, BINARY, np.array([1 - p, p]), BINARY[1])
        coords = np.zeros((4, 2), np.int64)
        results.append(SlideResult(f"case{i:02d}_HE", per_marker, coords, 256, 0.5))
    return results


def _manifest(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["case_id,patient_id,he_path,ihc_path,marker,label"]
    for i in range(n):
        label = BINARY[int(rng.random() < 0.4)]
        lines.append(f"case{i:02d},P{i // 2},case{i:02d}_HE.svs,case{i:02d}_IHC.svs,ki67,{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_scorer_results_are_matched_to_the_manifest_by_slide_file(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "manifest.csv", 20, seed=1)
    results = _slide_results(20, seed=2)
    ev = evaluate(results, manifest)
    labels, _ = read_labels(manifest)
    assert ev.n_cases == 20 and ev.n_patients == 10
    mapping = {
        f"case{i:02d}": dict(zip(BINARY, r.markers["ki67"].probabilities, strict=True))
        for i, r in enumerate(results)
    }
    same = evaluate(mapping, labels, patients={f"case{i:02d}": f"P{i // 2}" for i in range(20)})
    assert ev.metrics["weighted_f1"] == same.metrics["weighted_f1"]


def test_scorer_results_named_by_manifest_item_id_are_matched(tmp_path: Path) -> None:
    """A scorer run over a manifest names each H&E slide <case_id>.HE."""
    manifest = _manifest(tmp_path / "manifest.csv", 20, seed=1)
    by_stem = _slide_results(20, seed=2)
    by_item = _slide_results(20, seed=2)
    for i, result in enumerate(by_item):
        result.slide_id = f"case{i:02d}.HE"
    a, b = evaluate(by_stem, manifest), evaluate(by_item, manifest)
    assert b.n_cases == 20 and b.predictions.case_ids == a.predictions.case_ids
    assert b.metrics["weighted_f1"] == a.metrics["weighted_f1"]


def test_unscored_slides_raise_or_are_noted(tmp_path: Path) -> None:
    from hsafast.scoring.results import SlideResult

    manifest = _manifest(tmp_path / "manifest.csv", 12, seed=3)
    results = _slide_results(12, seed=4)
    results[5] = SlideResult(
        "case05_HE",
        {},
        np.zeros((0, 2), np.int64),
        256,
        0.5,
        status="no_tissue",
        message="no tissue above the threshold",
    )
    with pytest.raises(EvaluationError, match="case05 .no_tissue"):
        evaluate(results, manifest)
    ev = evaluate(results, manifest, config=EvaluationConfig(on_mismatch="note"))
    assert ev.n_cases == 11
    assert any("case05 (no_tissue: no tissue above the threshold)" in n for n in ev.notes)


def test_multi_marker_scorer_results_need_a_marker() -> None:
    results = _slide_results(10, seed=5, markers=("ki67", "p53"))
    labels = {r.slide_id: BINARY[i % 2] for i, r in enumerate(results)}
    with pytest.raises(EvaluationError, match="say which"):
        evaluate(results, labels)
    ev = evaluate(results, labels, marker="p53")
    assert set(ev.predictions.markers) == {"p53"} and ev.n_cases == 10
