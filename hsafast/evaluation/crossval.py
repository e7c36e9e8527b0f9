"""The k-fold driver: train and predict fold by fold, pool the held-out predictions.

    plan = patient_folds(case_ids, patient_ids, labels, k=5)
    predictions = cross_validate(plan, labels, classes, fit_predict)
    ev = hsafast.evaluate(predictions)

``fit_predict(fold)`` trains on ``fold.train`` (indices into the plan's cases) and
returns class probabilities for ``fold.test`` (rows in that order). Any model
fits this: a scikit-learn pipeline on slide features, or a whole training run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hsafast.errors import EvaluationError
from hsafast.evaluation.folds import Fold, FoldPlan
from hsafast.evaluation.predictions import Predictions

__all__ = ["cross_validate"]


def cross_validate(
    plan: FoldPlan,
    labels: Sequence[str],
    classes: Sequence[str],
    fit_predict: Callable[[Fold], np.ndarray],
    *,
    markers: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Predictions:
    """Run ``fit_predict`` on every fold of ``plan``; pool the held-out predictions.

    ``labels`` (and ``markers``) hold one entry per case of the plan, in the plan's
    order (``plan.case_ids``). A fold's output must be (test cases x classes)
    probabilities; anything else raises naming the fold.
    """
    classes = tuple(classes)
    n = len(plan.case_ids)
    if len(labels) != n or (markers is not None and len(markers) != n):
        raise EvaluationError(f"give one label (and marker) per case of the plan ({n})")
    proba = np.full((n, len(classes)), np.nan)
    for fold in plan.folds:
        out = np.asarray(fit_predict(fold), dtype=np.float64)
        if out.shape != (len(fold.test), len(classes)):
            raise EvaluationError(
                f"fold {fold.index}: fit_predict returned shape {out.shape}, expected "
                f"{(len(fold.test), len(classes))} (test cases x classes)"
            )
        proba[fold.test] = out
        if progress is not None:
            progress(fold.index + 1, plan.k)
    return Predictions(
        case_ids=plan.case_ids,
        patient_ids=plan.patient_ids,
        classes=classes,
        probabilities=proba,
        predicted=tuple(classes[i] for i in np.argmax(np.nan_to_num(proba), axis=1)),
        folds=plan.assignment.copy(),
        labels=tuple(str(v) for v in labels),
        markers=tuple(markers) if markers is not None else ("",) * n,
    )
