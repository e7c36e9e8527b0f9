"""Patient-level cross-validation splits.

Every case of a patient lands in the same fold, whatever its marker: two slides
of one patient share tissue, so a patient seen in training and tested in
another fold would inflate every metric. Folds are stratified by a label per
case (usually ``marker:label``) with scikit-learn's ``StratifiedGroupKFold``,
and depend only on the set of cases and the seed, never on their order.

The trainer writes ``FoldPlan.to_dict()`` into ``run.json``; the evaluation
reads it back with ``FoldPlan.from_dict``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hsafast.errors import InvalidParameterError

__all__ = ["Fold", "FoldPlan", "holdout_split", "patient_folds"]


@dataclass(frozen=True)
class Fold:
    """One fold: indices into the plan's cases (sorted ascending)."""

    index: int
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class FoldPlan:
    """A k-fold split of cases by patient.

    ``assignment[i]`` is the fold in which case ``case_ids[i]`` is held out.
    ``notes`` records what a reader of the results should know (a fold whose
    test cases lack a stratum, for instance).
    """

    case_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    strata: tuple[str, ...] | None
    assignment: np.ndarray
    k: int
    seed: int
    notes: tuple[str, ...] = ()

    @property
    def folds(self) -> tuple[Fold, ...]:
        everything = np.arange(len(self.case_ids))
        return tuple(
            Fold(
                index=f,
                train=everything[self.assignment != f],
                test=everything[self.assignment == f],
            )
            for f in range(self.k)
        )

    def fold_of(self, case_id: str) -> int:
        try:
            return int(self.assignment[self.case_ids.index(case_id)])
        except ValueError:
            raise InvalidParameterError(f"case {case_id!r} is not in the fold plan") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"k", "seed", "method", "folds": {case_id: fold}, ...}``."""
        return {
            "k": self.k,
            "seed": self.seed,
            "method": "StratifiedGroupKFold by patient" if self.strata else "GroupKFold by patient",
            "folds": {c: int(f) for c, f in zip(self.case_ids, self.assignment, strict=True)},
            "patients": dict(zip(self.case_ids, self.patient_ids, strict=True)),
            "strata": None
            if self.strata is None
            else dict(zip(self.case_ids, self.strata, strict=True)),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FoldPlan:
        """Rebuild a plan written by :meth:`to_dict`, checking that it is one."""
        try:
            folds = {str(c): int(f) for c, f in data["folds"].items()}
            patients = {str(c): str(p) for c, p in data["patients"].items()}
            k, seed = int(data["k"]), int(data["seed"])
            strata_map = data.get("strata")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidParameterError(f"not a fold plan: {exc!r}") from None
        case_ids = tuple(sorted(folds))
        if set(patients) != set(folds):
            raise InvalidParameterError("fold plan: 'folds' and 'patients' name different cases")
        assignment = np.array([folds[c] for c in case_ids], dtype=np.int64)
        if k < 2 or assignment.min() < 0 or assignment.max() >= k:
            raise InvalidParameterError(f"fold plan: fold numbers outside 0..{k - 1}")
        plan = cls(
            case_ids=case_ids,
            patient_ids=tuple(patients[c] for c in case_ids),
            strata=None if strata_map is None else tuple(str(strata_map[c]) for c in case_ids),
            assignment=assignment,
            k=k,
            seed=seed,
            notes=tuple(str(n) for n in data.get("notes", ())),
        )
        _check_patients_whole(plan.patient_ids, plan.assignment)
        return plan


def patient_folds(
    case_ids: Sequence[str],
    patient_ids: Sequence[str],
    strata: Sequence[str] | None = None,
    *,
    k: int = 5,
    seed: int = 0,
) -> FoldPlan:
    """Split cases into ``k`` folds so that no patient spans two folds.

    ``strata`` (one string per case, e.g. ``f"{marker}:{label}"``) balances the
    folds; a stratum with fewer patients than ``k`` cannot reach every fold and
    is named in ``notes``. A training set (all folds but one) that lacks a
    stratum raises, since no model could learn that class there.
    """
    case_ids, patient_ids, strata = _validated(case_ids, patient_ids, strata)
    n_patients = len(set(patient_ids))
    if not (isinstance(k, int) and k >= 2):
        raise InvalidParameterError(f"k must be an integer >= 2, got {k!r}")
    if n_patients < k:
        raise InvalidParameterError(f"{k} folds need at least {k} patients, got {n_patients}")

    # Split in a canonical order so that the folds do not depend on input order.
    order = sorted(range(len(case_ids)), key=lambda i: (patient_ids[i], case_ids[i]))
    groups = np.array([patient_ids[i] for i in order])
    ordered_strata = None if strata is None else [strata[i] for i in order]
    assignment_sorted = _split(groups, ordered_strata, k, seed)
    assignment = np.empty(len(case_ids), dtype=np.int64)
    assignment[order] = assignment_sorted

    notes = _check_strata(patient_ids, strata, assignment, k)
    _check_patients_whole(patient_ids, assignment)
    return FoldPlan(
        case_ids=case_ids,
        patient_ids=patient_ids,
        strata=strata,
        assignment=assignment,
        k=k,
        seed=seed,
        notes=tuple(notes),
    )


def holdout_split(
    plan: FoldPlan, fold: int, fraction: float = 0.2, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training cases into (train, validation) by patient.

    For early stopping and model selection inside one fold; stratified like the
    plan. ``fraction`` is the share of the training patients held out (about
    1/round(1/fraction) in practice, as the split is one fold of a k-fold).
    """
    if not 0.0 < fraction <= 0.5:
        raise InvalidParameterError(f"fraction must be in (0, 0.5], got {fraction}")
    if not 0 <= fold < plan.k:
        raise InvalidParameterError(f"fold must be in 0..{plan.k - 1}, got {fold}")
    train = plan.folds[fold].train
    patients = [plan.patient_ids[i] for i in train]
    parts = max(2, round(1.0 / fraction))
    if len(set(patients)) < parts:
        raise InvalidParameterError(
            f"fold {fold}: {len(set(patients))} training patients cannot give a "
            f"{fraction:.0%} validation split"
        )
    strata = None if plan.strata is None else [plan.strata[i] for i in train]
    order = sorted(range(len(train)), key=lambda i: (patients[i], plan.case_ids[train[i]]))
    inner = _split(
        np.array([patients[i] for i in order]),
        None if strata is None else [strata[i] for i in order],
        parts,
        plan.seed + 1000 + fold if seed is None else seed,
    )
    is_val = np.empty(len(train), dtype=bool)
    is_val[order] = inner == 0
    return train[~is_val], train[is_val]


def _validated(
    case_ids: Sequence[str], patient_ids: Sequence[str], strata: Sequence[str] | None
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None]:
    cases = tuple(str(c) for c in case_ids)
    patients = tuple(str(p) for p in patient_ids)
    if not cases:
        raise InvalidParameterError("no cases to split")
    if len(patients) != len(cases):
        raise InvalidParameterError(
            f"{len(cases)} case IDs but {len(patients)} patient IDs: one patient per case"
        )
    duplicated = [c for c, n in Counter(cases).items() if n > 1]
    if duplicated:
        raise InvalidParameterError(f"duplicate case IDs: {duplicated[:5]}")
    empty = [c for c, p in zip(cases, patients, strict=True) if not c or not p]
    if empty:
        raise InvalidParameterError(f"empty case or patient ID (cases {empty[:5]})")
    if strata is None:
        return cases, patients, None
    labels = tuple(str(s) for s in strata)
    if len(labels) != len(cases):
        raise InvalidParameterError(f"{len(cases)} case IDs but {len(labels)} strata")
    return cases, patients, labels


def _split(groups: np.ndarray, strata: list[str] | None, k: int, seed: int) -> np.ndarray:
    """Fold number per row (rows in canonical order)."""
    from sklearn.model_selection import StratifiedGroupKFold

    assignment = np.full(len(groups), -1, dtype=np.int64)
    if strata is None:
        # GroupKFold without shuffling would always put the same patients together;
        # shuffle patients with the seed and deal them out evenly by case count.
        unique = np.unique(groups)
        rng = np.random.default_rng(seed)
        sizes = Counter(groups.tolist())
        load = np.zeros(k, dtype=np.int64)
        fold_of: dict[str, int] = {}
        for patient in rng.permutation(unique):
            target = int(np.argmin(load))
            fold_of[str(patient)] = target
            load[target] += sizes[str(patient)]
        return np.array([fold_of[str(g)] for g in groups], dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # The least populated class warning is turned into a note by _check_strata.
        warnings.simplefilter("ignore", UserWarning)
        for f, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), strata, groups)):
            assignment[test] = f
    return assignment


def _check_strata(
    patient_ids: tuple[str, ...], strata: tuple[str, ...] | None, assignment: np.ndarray, k: int
) -> list[str]:
    if strata is None:
        return []
    notes = []
    labels = np.array(strata)
    for stratum in sorted(set(strata)):
        holders = {p for p, s in zip(patient_ids, strata, strict=True) if s == stratum}
        in_folds = set(assignment[labels == stratum].tolist())
        if len(in_folds) == 1:
            (only,) = in_folds
            raise InvalidParameterError(
                f"stratum {stratum!r} has cases in fold {only} only ({len(holders)} patient(s)): "
                f"the training set of fold {only} would lack it; add patients or merge classes"
            )
        missing = sorted(set(range(k)) - in_folds)
        if missing:
            notes.append(
                f"stratum {stratum!r} has {len(holders)} patient(s), fewer than {k} folds: "
                f"test folds {missing} hold none of it"
            )
    return notes


def _check_patients_whole(patient_ids: Sequence[str], assignment: np.ndarray) -> None:
    seen: dict[str, int] = {}
    for patient, fold in zip(patient_ids, assignment.tolist(), strict=True):
        if seen.setdefault(patient, fold) != fold:
            raise InvalidParameterError(f"patient {patient!r} spans folds {seen[patient]}, {fold}")
