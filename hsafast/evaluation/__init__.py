"""Evaluation: patient-level folds, metrics with bootstrap intervals, paired model
comparisons, the linear probe, the alignment analysis and the report.

Importing this package is cheap: scikit-learn, SciPy, matplotlib and umap-learn
are imported by the functions that use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module under hsafast.evaluation that defines it
_EXPORTS = {
    "Fold": "folds",
    "FoldPlan": "folds",
    "patient_folds": "folds",
    "holdout_split": "folds",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hsafast.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hsafast.evaluation.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # the names above, for type checkers and editors
    from hsafast.evaluation.folds import Fold, FoldPlan, holdout_split, patient_folds  # noqa: F401
