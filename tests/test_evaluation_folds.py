"""Patient-level folds: no patient in two folds, stratified, order-independent, clear errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from hsafast.errors import InvalidParameterError
from hsafast.evaluation import FoldPlan, holdout_split, patient_folds


def _cohort(n_patients: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Patients with 1-4 cases each, markers cycled, about a third 'high' per marker."""
    rng = np.random.default_rng(seed)
    cases, patients, strata = [], [], []
    for p in range(n_patients):
        for c in range(int(rng.integers(1, 5))):
            marker = ("ki67", "p53", "pdl1")[(p + c) % 3]
            label = "high" if rng.random() < 0.35 else "low"
            cases.append(f"P{p:03d}-{c}")
            patients.append(f"P{p:03d}")
            strata.append(f"{marker}:{label}")
    return cases, patients, strata


def test_every_patient_in_one_fold_and_every_case_tested_once() -> None:
    cases, patients, strata = _cohort(60, seed=1)
    plan = patient_folds(cases, patients, strata, k=5, seed=3)
    tested = np.concatenate([f.test for f in plan.folds])
    assert sorted(tested.tolist()) == list(range(len(cases)))
    for fold in plan.folds:
        train_patients = {plan.patient_ids[i] for i in fold.train}
        test_patients = {plan.patient_ids[i] for i in fold.test}
        assert not train_patients & test_patients
        assert len(fold.train) + len(fold.test) == len(cases)
    folds_of_patient: dict[str, set[int]] = {}
    for case, patient in zip(cases, patients, strict=True):
        folds_of_patient.setdefault(patient, set()).add(plan.fold_of(case))
    assert all(len(f) == 1 for f in folds_of_patient.values())


def test_folds_are_stratified() -> None:
    cases, patients, strata = _cohort(150, seed=2)
    plan = patient_folds(cases, patients, strata, k=5, seed=0)
    overall = Counter(strata)
    for fold in plan.folds:
        share = Counter(strata[i] for i in fold.test)
        for stratum, n in overall.items():
            expected = n / len(strata)
            got = share[stratum] / len(fold.test)
            # 150 patients, ~375 cases: a fold holds ~75; a stratum share within 6 points
            assert abs(got - expected) < 0.06, (fold.index, stratum, got, expected)


def test_folds_do_not_depend_on_input_order_but_on_seed() -> None:
    cases, patients, strata = _cohort(40, seed=4)
    plan = patient_folds(cases, patients, strata, k=4, seed=7)
    perm = np.random.default_rng(0).permutation(len(cases))
    shuffled = patient_folds(
        [cases[i] for i in perm],
        [patients[i] for i in perm],
        [strata[i] for i in perm],
        k=4,
        seed=7,
    )
    assert all(plan.fold_of(c) == shuffled.fold_of(c) for c in cases)
    other = patient_folds(cases, patients, strata, k=4, seed=8)
    assert any(plan.fold_of(c) != other.fold_of(c) for c in cases)


def test_without_strata_folds_are_balanced_by_case_count() -> None:
    cases, patients, _ = _cohort(50, seed=5)
    plan = patient_folds(cases, patients, k=5, seed=1)
    sizes = [len(f.test) for f in plan.folds]
    assert max(sizes) - min(sizes) <= 4  # a patient has at most 4 cases
    assert plan.to_dict()["method"] == "GroupKFold by patient"


def test_round_trip_through_json() -> None:
    cases, patients, strata = _cohort(30, seed=6)
    plan = patient_folds(cases, patients, strata, k=3, seed=2)
    again = FoldPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert all(plan.fold_of(c) == again.fold_of(c) for c in cases)
    assert again.k == 3 and again.seed == 2 and again.notes == plan.notes


def test_from_dict_rejects_a_patient_split_across_folds() -> None:
    data = {
        "k": 2,
        "seed": 0,
        "folds": {"a": 0, "b": 1, "c": 1},
        "patients": {"a": "P1", "b": "P1", "c": "P2"},
    }
    with pytest.raises(InvalidParameterError, match="P1"):
        FoldPlan.from_dict(data)
    with pytest.raises(InvalidParameterError, match="not a fold plan"):
        FoldPlan.from_dict({"k": 2})


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(InvalidParameterError, match="at least 5 patients"):
        patient_folds(["a", "b", "c"], ["P1", "P2", "P3"], k=5)
    with pytest.raises(InvalidParameterError, match="duplicate case IDs"):
        patient_folds(["a", "a", "b"], ["P1", "P2", "P3"], k=2)
    with pytest.raises(InvalidParameterError, match="one patient per case"):
        patient_folds(["a", "b"], ["P1"], k=2)
    with pytest.raises(InvalidParameterError, match="k must be"):
        patient_folds(["a", "b"], ["P1", "P2"], k=1)


def test_stratum_of_one_patient_raises_and_rare_stratum_is_noted() -> None:
    cases, patients, strata = _cohort(40, seed=7)
    lonely = [*strata[:-1], "ki67:rare"]
    with pytest.raises(InvalidParameterError, match="ki67:rare"):
        patient_folds(cases, patients, lonely, k=5)
    # a stratum held by 3 patients reaches at most 3 of 5 test folds: a note says so
    rare_patients = sorted(set(patients))[:3]
    few = [("x:rare" if p in rare_patients else s) for p, s in zip(patients, strata, strict=True)]
    plan = patient_folds(cases, patients, few, k=5, seed=0)
    assert any("'x:rare'" in n and "fewer than 5 folds" in n for n in plan.notes)


def test_holdout_split_stays_inside_the_training_set_and_by_patient() -> None:
    cases, patients, strata = _cohort(60, seed=8)
    plan = patient_folds(cases, patients, strata, k=5, seed=0)
    train, val = holdout_split(plan, fold=2, fraction=0.2)
    fold = plan.folds[2]
    assert sorted(np.concatenate([train, val]).tolist()) == fold.train.tolist()
    assert not {plan.patient_ids[i] for i in train} & {plan.patient_ids[i] for i in val}
    assert 0.1 < len(val) / len(fold.train) < 0.3
    again_train, again_val = holdout_split(plan, fold=2, fraction=0.2)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    with pytest.raises(InvalidParameterError, match="fraction"):
        holdout_split(plan, fold=0, fraction=0.9)


def test_cross_validate_pools_every_case_once_and_evaluates() -> None:
    from sklearn.linear_model import LogisticRegression

    from hsafast.errors import EvaluationError
    from hsafast.evaluation import cross_validate, evaluate

    cases, patients, strata = _cohort(60, seed=9)
    labels = [s.split(":")[1] for s in strata]
    rng = np.random.default_rng(0)
    y = np.array([label == "high" for label in labels])
    features = rng.normal(size=(len(cases), 8)) + 1.2 * y[:, None]
    plan = patient_folds(cases, patients, strata, k=5, seed=1)
    seen: list[int] = []

    def fit_predict(fold) -> np.ndarray:
        seen.extend(fold.test.tolist())
        model = LogisticRegression().fit(features[fold.train], y[fold.train])
        return model.predict_proba(features[fold.test])  # columns: False ("low"), True ("high")

    predictions = cross_validate(plan, labels, ("low", "high"), fit_predict)
    assert sorted(seen) == list(range(len(cases)))
    assert np.array_equal(predictions.folds, plan.assignment)
    ev = evaluate(predictions)
    assert ev.metrics["auc"].low > 0.8  # a shift of 1.2 SD in every feature
    with pytest.raises(EvaluationError, match="fold 0: fit_predict returned shape"):
        cross_validate(plan, labels, ("low", "high"), lambda fold: np.ones((1, 2)) / 2)
