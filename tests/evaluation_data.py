"""Simulated predictions, embeddings and run directories for the evaluation tests.

Cohorts look like real ones where it matters to evaluation: patients hold one
to four cases, cases of one patient are correlated (a shared patient effect on
both the label and the model's score), classes are imbalanced, folds split
patients. Nothing here is constant or all-zero.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsafast.evaluation.folds import patient_folds
from hsafast.evaluation.predictions import Predictions

BINARY = ("low", "intermediate/high")


@dataclass(frozen=True)
class SimCohort:
    case_ids: list[str]
    patient_ids: list[str]
    markers: list[str]
    labels: list[str]
    latent: np.ndarray  # per case; the label is latent > threshold
    threshold: float
    patient_effect: np.ndarray  # per case: a standard normal draw shared by the patient's cases
    folds: np.ndarray


def sim_cohort(
    n_patients: int,
    seed: int,
    *,
    markers: tuple[str, ...] = ("p53",),
    max_cases: int = 4,
    patient_share: float = 0.7,
    prevalence: float = 0.35,
    k: int | None = 5,
) -> SimCohort:
    """Patients with 1..max_cases cases; ``patient_share`` of the latent variance is
    per patient. ``k=None`` skips the fold split (every fold is 0)."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_cases + 1, size=n_patients)
    patient = np.repeat(np.arange(n_patients), sizes)
    within = np.concatenate([np.arange(m) for m in sizes])
    u, v = rng.normal(size=(2, n_patients))
    z = np.sqrt(patient_share) * u[patient] + np.sqrt(1 - patient_share) * rng.normal(
        size=len(patient)
    )
    cases = [f"C{p:05d}-{c}" for p, c in zip(patient, within, strict=True)]
    patients = [f"P{p:05d}" for p in patient]
    case_markers = [markers[(p + c) % len(markers)] for p, c in zip(patient, within, strict=True)]
    threshold = float(norm.ppf(1 - prevalence))
    labels = [BINARY[int(t > threshold)] for t in z]
    if k is None:
        folds = np.zeros(len(cases), dtype=np.int64)
    else:
        strata = [f"{m}:{label}" for m, label in zip(case_markers, labels, strict=True)]
        folds = patient_folds(cases, patients, strata, k=k, seed=seed).assignment
    return SimCohort(cases, patients, case_markers, labels, z, threshold, v[patient], folds)


def sim_probabilities(
    cohort: SimCohort,
    seed: int,
    *,
    skill: float = 1.5,
    noise: float = 1.0,
    patient_noise: float = 1.0,
) -> np.ndarray:
    """P(intermediate/high) per case from a model that sees the latent with noise.

    ``patient_noise`` scales an error shared by a patient's cases (a stain batch,
    a scanner, a tumour type the model misreads), the reason to resample patients.
    """
    rng = np.random.default_rng(seed)
    logit = (
        skill * (cohort.latent - cohort.threshold)
        + noise * rng.normal(size=len(cohort.latent))
        + patient_noise * cohort.patient_effect
    )
    return 1.0 / (1.0 + np.exp(-logit))


def sim_predictions(cohort: SimCohort, seed: int, **kwargs) -> Predictions:
    p = sim_probabilities(cohort, seed, **kwargs)
    proba = np.stack([1 - p, p], axis=1)
    return Predictions(
        case_ids=tuple(cohort.case_ids),
        patient_ids=tuple(cohort.patient_ids),
        classes=BINARY,
        probabilities=proba,
        predicted=tuple(BINARY[int(v > 0.5)] for v in p),
        folds=cohort.folds.copy(),
        labels=tuple(cohort.labels),
        markers=tuple(cohort.markers),
    )


def write_predictions_csv(path: Path, predictions: Predictions) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["case_id", "patient_id", "marker", "fold", "label"]
            + [f"p_{c}" for c in predictions.classes]
            + ["predicted"]
        )
        for i, case in enumerate(predictions.case_ids):
            w.writerow(
                [
                    case,
                    predictions.patient_ids[i],
                    predictions.markers[i],
                    int(predictions.folds[i]),
                    predictions.labels[i] or "",
                    *(f"{v:.6f}" for v in predictions.probabilities[i]),
                    predictions.predicted[i],
                ]
            )


def sim_embeddings(
    cohort: SimCohort, seed: int, *, dim: int = 32, alignment: float = 0.6, with_train: bool = True
) -> dict[str, np.ndarray]:
    """Slide embeddings in the run directory's layout (embeddings/<mode>.npz).

    H&E and IHC embeddings of a case share a component of weight ``alignment``;
    the label shifts both along one direction. With ``with_train``, every fold's
    model also embeds its training cases (``split`` = "train"), as the linear
    probe needs.
    """
    rng = np.random.default_rng(seed)
    n = len(cohort.case_ids)
    direction = rng.normal(size=dim)
    rows: dict[str, list] = {k: [] for k in ("case_id", "patient_id", "marker", "label", "fold")}
    rows["split"] = []
    he_rows, ihc_rows = [], []
    k = int(cohort.folds.max()) + 1
    for fold in range(k):
        # each fold's model has its own embedding space: a random rotation
        rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        shared = rng.normal(size=(n, dim))
        y = np.array([label == BINARY[1] for label in cohort.labels], dtype=float)
        he = alignment * shared + (1 - alignment) * rng.normal(size=(n, dim))
        ihc = alignment * shared + (1 - alignment) * rng.normal(size=(n, dim))
        he += 0.25 * y[:, None] * direction
        ihc += 0.4 * y[:, None] * direction
        for i in range(n):
            held_out = cohort.folds[i] == fold
            if not held_out and not with_train:
                continue
            rows["case_id"].append(cohort.case_ids[i])
            rows["patient_id"].append(cohort.patient_ids[i])
            rows["marker"].append(cohort.markers[i])
            rows["label"].append(cohort.labels[i])
            rows["fold"].append(fold)
            rows["split"].append("test" if held_out else "train")
            he_rows.append(he[i] @ rotation)
            ihc_rows.append(ihc[i] @ rotation)
    out = {key: np.array(values) for key, values in rows.items()}
    out["he"] = np.array(he_rows, dtype=np.float32)
    out["ihc"] = np.array(ihc_rows, dtype=np.float32)
    return out


def make_run_dir(
    root: Path,
    *,
    n_patients: int = 40,
    seed: int = 0,
    markers: tuple[str, ...] = ("p53", "ki67"),
    modes: dict[str, float] | None = None,
    with_train: bool = True,
    tiles: bool = False,
) -> Path:
    """A run directory as the trainer writes it: run.json, predictions/, embeddings/
    and, with ``tiles``, patch mode's predictions/patch-tiles.csv."""
    modes = modes or {"slide": 2.0, "patch": 2.2, "classification-only": 1.2}
    cohort = sim_cohort(n_patients, seed, markers=markers)
    root.mkdir(parents=True, exist_ok=True)
    run = {
        "format": "hsafast.Run",
        "modes": list(modes),
        "cohort": {"simulated": True, "source": "hsafast.synth", "cases": len(cohort.case_ids)},
        "folds": {
            "k": int(cohort.folds.max()) + 1,
            "seed": seed,
            "folds": dict(zip(cohort.case_ids, cohort.folds.tolist(), strict=True)),
            "patients": dict(zip(cohort.case_ids, cohort.patient_ids, strict=True)),
        },
        "seed": seed,
    }
    (root / "run.json").write_text(json.dumps(run, indent=1))
    for j, (mode, skill) in enumerate(modes.items()):
        preds = sim_predictions(cohort, seed=100 + j, skill=skill)
        write_predictions_csv(root / "predictions" / f"{mode}.csv", preds)
        emb = sim_embeddings(
            cohort,
            seed=200 + j,
            alignment=0.7 if mode != "classification-only" else 0.2,
            with_train=with_train,
        )
        (root / "embeddings").mkdir(exist_ok=True)
        np.savez(root / "embeddings" / f"{mode}.npz", **emb)
    if tiles:
        write_tiles_csv(root / "predictions" / "patch-tiles.csv", cohort, seed=seed)
    return root


def write_tiles_csv(path: Path, cohort: SimCohort, seed: int, grid: int = 8) -> None:
    """Patch mode's held-out tiles: a grid per case, predicted positivity correlated
    with the stain target, a few tiles without a target (weight 0)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "case_id",
                "marker",
                "fold",
                "x",
                "y",
                "size_level0",
                "positivity",
                "stain_target",
                "target_weight",
            ]
        )
        for i, case in enumerate(cohort.case_ids):
            level = 0.45 if cohort.labels[i] == BINARY[1] else 0.1
            for gy in range(grid):
                for gx in range(grid):
                    target = float(np.clip(level + 0.15 * rng.normal(), 0, 1))
                    positivity = float(np.clip(target + 0.1 * rng.normal(), 0, 1))
                    weight = 0.0 if rng.random() < 0.1 else 1.0
                    w.writerow(
                        [
                            case,
                            cohort.markers[i],
                            int(cohort.folds[i]),
                            256 * gx,
                            256 * gy,
                            256,
                            f"{positivity:.4f}",
                            f"{target:.4f}",
                            weight,
                        ]
                    )
