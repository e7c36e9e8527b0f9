"""Linear probe on frozen slide embeddings (the HistoStainAlign paper's evaluation).

Per fold: standardise the training embeddings, fit a class-balanced logistic
regression whose C is chosen by an inner 5-fold cross-validation on average
precision over a log grid 1e-3..1e2, and predict the fold's held-out cases.
The held-out predictions of all folds are pooled into one :class:`Predictions`
that :func:`hsafast.evaluate` reads like any model's.

``ProbeConfig.paper()`` is the authors' search exactly: 40 random draws from
100 log-spaced values of C, inner folds by case. hsafast's default searches 11
values (two per decade) exhaustively and keeps a patient's cases in one inner
fold, so that the choice of C is not tuned on a patient seen in training.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hsafast.errors import EvaluationError, InvalidParameterError
from hsafast.evaluation.embeddings import SlideEmbeddings
from hsafast.evaluation.predictions import Predictions

__all__ = ["ProbeConfig", "ProbeFit", "ProbeRun", "fit_probe", "probe_predictions"]


@dataclass(frozen=True)
class ProbeConfig:
    """The logistic-regression probe and its search for C."""

    c_min: float = 1e-3
    """Smallest inverse regularisation strength searched (the paper's 1e-3)."""

    c_max: float = 1e2
    """Largest C searched (the paper's 1e2)."""

    grid_points: int = 11
    """Log-spaced values of C between c_min and c_max (the paper: 100)."""

    search: Literal["grid", "random"] = "grid"
    """"grid" tries every value; "random" draws ``n_iter`` of them (the paper)."""

    n_iter: int = 40
    """Values drawn by the random search (the paper's 40)."""

    inner_folds: int = 5
    """Folds of the inner cross-validation that chooses C (the paper's 5); fewer
    when a class has fewer training cases (patients) than that."""

    group_by_patient: bool = True
    """Keep a patient's cases in one inner fold (hsafast); the paper splits cases."""

    max_iter: int = 10_000
    """Iterations allowed to the solver (the paper's 10 000)."""

    seed: int = 0
    """Seed of the random search and of the solver (the paper's 0)."""

    blas_threads: int | None = 1
    """BLAS threads while the probe fits; None leaves the BLAS as configured. The
    fits are tiny (tens of cases x hundreds of dimensions), so extra BLAS threads
    only add synchronisation: with 2 threads the search ran 4-7x slower than with
    1 on a loaded 2-core machine."""

    def __post_init__(self) -> None:
        def bad(name: str, reason: str) -> InvalidParameterError:
            return InvalidParameterError(f"ProbeConfig.{name}: {reason}")

        if not (0 < self.c_min < self.c_max and math.isfinite(self.c_max)):
            raise bad("c_min", f"need 0 < c_min < c_max, got {self.c_min}, {self.c_max}")
        if not (isinstance(self.grid_points, int) and self.grid_points >= 1):
            raise bad("grid_points", f"must be a positive integer, got {self.grid_points!r}")
        if self.search not in ("grid", "random"):
            raise bad("search", f"must be 'grid' or 'random', got {self.search!r}")
        if not (isinstance(self.n_iter, int) and self.n_iter >= 1):
            raise bad("n_iter", f"must be a positive integer, got {self.n_iter!r}")
        if not (isinstance(self.inner_folds, int) and self.inner_folds >= 2):
            raise bad("inner_folds", f"must be an integer >= 2, got {self.inner_folds!r}")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise bad("max_iter", f"must be a positive integer, got {self.max_iter!r}")
        if self.blas_threads is not None and not (
            isinstance(self.blas_threads, int) and self.blas_threads >= 1
        ):
            raise bad(
                "blas_threads", f"must be a positive integer or None, got {self.blas_threads!r}"
            )

    @classmethod
    def paper(cls) -> ProbeConfig:
        """The authors' probe: 40 random values of 100 on 1e-3..1e2, inner folds by case."""
        return cls(grid_points=100, search="random", n_iter=40, group_by_patient=False)

    def c_values(self) -> np.ndarray:
        return np.logspace(math.log10(self.c_min), math.log10(self.c_max), self.grid_points)


@dataclass(frozen=True)
class ProbeFit:
    """Held-out class probabilities (rows x classes) and the C chosen."""

    probabilities: np.ndarray
    c: float
    inner_folds: int


def fit_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    classes: tuple[str, ...],
    *,
    train_groups: np.ndarray | None = None,
    config: ProbeConfig | None = None,
) -> ProbeFit:
    """Fit the probe on ``train_x``/``train_y`` (class names) and predict ``test_x``."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    config = config or ProbeConfig()
    y = np.array([classes.index(v) for v in train_y])
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2:
        raise EvaluationError(
            f"the probe's training cases hold one class only ({classes[present[0]]})"
        )
    grouped = config.group_by_patient and train_groups is not None
    units = counts  # cases per class, or patients per class when inner folds group them
    if grouped:
        assert train_groups is not None
        units = np.array([len(set(train_groups[y == c])) for c in present])
    inner = int(min(config.inner_folds, units.min()))
    if inner < 2:
        raise EvaluationError(
            f"the probe needs two training {'patients' if grouped else 'cases'} of each class "
            "for its inner cross-validation"
        )
    x = StandardScaler().fit(train_x)
    splitter = (
        StratifiedGroupKFold(n_splits=inner, shuffle=True, random_state=config.seed)
        if grouped
        else StratifiedKFold(n_splits=inner)
    )
    splits = list(splitter.split(train_x, y, train_groups))
    # LogisticRegressionCV walks the C path with warm starts: the same choice as a
    # grid search over the same values and folds, several times faster.
    model = LogisticRegressionCV(
        Cs=_candidates(config),
        cv=splits,
        scoring="average_precision",  # one-vs-rest, macro-averaged, for more than two classes
        class_weight="balanced",
        max_iter=config.max_iter,
        random_state=config.seed,
    )
    with warnings.catch_warnings(), _blas_threads(config.blas_threads):
        warnings.simplefilter("ignore")  # convergence on separable folds
        model.fit(x.transform(train_x), y)
    proba = np.zeros((len(test_x), len(classes)))
    proba[:, model.classes_] = model.predict_proba(x.transform(test_x))
    return ProbeFit(probabilities=proba, c=float(np.ravel(model.C_)[0]), inner_folds=inner)


def _blas_threads(limit: int | None) -> contextlib.AbstractContextManager[object]:
    if limit is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    return threadpool_limits(limits=limit, user_api="blas")


def _candidates(config: ProbeConfig) -> list[float]:
    """The values of C tried: all grid values, or ``n_iter`` drawn without replacement
    (as scikit-learn's RandomizedSearchCV draws from a list)."""
    values = config.c_values()
    if config.search == "random" and config.n_iter < len(values):
        rng = np.random.default_rng(config.seed)
        values = np.sort(rng.choice(values, size=config.n_iter, replace=False))
    return [float(v) for v in values]


@dataclass(frozen=True)
class ProbeRun:
    """The probe's held-out predictions pooled over folds, the C of each
    (marker, fold), and what could not be probed."""

    predictions: Predictions
    c: dict[tuple[str, int], float]
    notes: tuple[str, ...]


def probe_predictions(
    embeddings: SlideEmbeddings,
    classes: tuple[str, ...],
    *,
    config: ProbeConfig | None = None,
) -> ProbeRun:
    """Probe every (marker, fold) and pool the held-out predictions.

    Needs training rows (``split == "train"``): the embeddings that each fold's
    model gave its own training cases.
    """
    config = config or ProbeConfig()
    if not embeddings.has_training_rows:
        raise EvaluationError(
            "the embeddings hold no training rows (split = 'train'); the linear probe fits on "
            "the embeddings each fold's model gives its training cases",
            embeddings.source,
        )
    notes: list[str] = []
    rows: list[np.ndarray] = []
    probas: list[np.ndarray] = []
    chosen: dict[tuple[str, int], float] = {}
    for marker, fold in embeddings.groups():
        train = embeddings.rows(marker, fold, "train")
        test = embeddings.rows(marker, fold, "test")
        if len(train) == 0:
            notes.append(f"{marker}, fold {fold}: no training embeddings; fold not probed")
            continue
        try:
            fit = fit_probe(
                embeddings.he[train],
                embeddings.labels[train],
                embeddings.he[test],
                classes,
                train_groups=embeddings.patient_ids[train] if config.group_by_patient else None,
                config=config,
            )
        except EvaluationError as exc:
            notes.append(f"{marker}, fold {fold}: {exc.reason}; fold not probed")
            continue
        rows.append(test)
        probas.append(fit.probabilities)
        chosen[(marker, fold)] = fit.c
    if not rows:
        raise EvaluationError("no fold could be probed: " + "; ".join(notes), embeddings.source)
    idx = np.concatenate(rows)
    proba = np.concatenate(probas)
    predictions = Predictions(
        case_ids=tuple(embeddings.case_ids[idx].tolist()),
        patient_ids=tuple(embeddings.patient_ids[idx].tolist()),
        classes=classes,
        probabilities=proba,
        predicted=tuple(classes[i] for i in np.argmax(proba, axis=1)),
        folds=embeddings.folds[idx],
        labels=tuple(embeddings.labels[idx].tolist()),
        markers=tuple(embeddings.markers[idx].tolist()),
        source=embeddings.source,
    )
    return ProbeRun(predictions=predictions, c=chosen, notes=tuple(notes))
