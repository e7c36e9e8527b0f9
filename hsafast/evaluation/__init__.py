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
    "cross_validate": "crossval",
    "Predictions": "predictions",
    "read_predictions": "predictions",
    "read_labels": "predictions",
    "Interval": "bootstrap",
    "Evaluation": "assess",
    "EvaluationConfig": "assess",
    "evaluate": "assess",
    "Comparison": "compare",
    "compare_models": "compare",
    "SlideEmbeddings": "embeddings",
    "read_embeddings": "embeddings",
    "ProbeConfig": "probe",
    "fit_probe": "probe",
    "probe_predictions": "probe",
    "AlignmentResult": "alignment",
    "alignment_analysis": "alignment",
    "compare_alignment": "alignment",
    "ReportConfig": "analysis",
    "Report": "report",
    "write_report": "report",
    "PAPER_WEIGHTED_F1": "paper",
    "comparison_table": "paper",
    "format_table": "paper",
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
    from hsafast.evaluation.alignment import (  # noqa: F401
        AlignmentResult,
        alignment_analysis,
        compare_alignment,
    )
    from hsafast.evaluation.analysis import ReportConfig  # noqa: F401
    from hsafast.evaluation.assess import Evaluation, EvaluationConfig, evaluate  # noqa: F401
    from hsafast.evaluation.bootstrap import Interval  # noqa: F401
    from hsafast.evaluation.compare import Comparison, compare_models  # noqa: F401
    from hsafast.evaluation.crossval import cross_validate  # noqa: F401
    from hsafast.evaluation.embeddings import SlideEmbeddings, read_embeddings  # noqa: F401
    from hsafast.evaluation.folds import Fold, FoldPlan, holdout_split, patient_folds  # noqa: F401
    from hsafast.evaluation.paper import (  # noqa: F401
        PAPER_WEIGHTED_F1,
        comparison_table,
        format_table,
    )
    from hsafast.evaluation.predictions import (  # noqa: F401
        Predictions,
        read_labels,
        read_predictions,
    )
    from hsafast.evaluation.probe import ProbeConfig, fit_probe, probe_predictions  # noqa: F401
    from hsafast.evaluation.report import Report, write_report  # noqa: F401
