"""The report's results sections: per marker, metric tables, ROC curves, confusion
matrices, the comparison with the baseline and per-fold values; then the table of
the paper's protocol.
"""

from __future__ import annotations

import math
from pathlib import Path

from hsafast._fileio import safe_id
from hsafast.evaluation.analysis import MarkerAnalysis, RunAnalysis
from hsafast.evaluation.assess import Evaluation
from hsafast.evaluation.bootstrap import Interval
from hsafast.evaluation.document import Document, Heading, Image, Paragraph, Table, ci_text, p_text
from hsafast.evaluation.paper import PAPER_WEIGHTED_F1
from hsafast.evaluation.rundir import marker_name, mode_name

__all__ = ["marker_section", "paper_protocol"]


def _metric_table(ev: Evaluation, title: str) -> Table:
    return Table(
        ("Metric", "Estimate", "95% CI"),
        tuple((label, f"{i.estimate:.3f}", ci_text(i)) for label, i in ev.rows()),
        caption=f"{title}: {ev.n_cases} cases, {ev.n_patients} patients; CI by resampling "
        f"{ev.config.resample} (hsafast)",
    )


def marker_section(
    doc: Document, a: MarkerAnalysis, analysis: RunAnalysis, folder: Path
) -> list[Path]:
    from hsafast.evaluation.plots import confusion_png, intervals_png, roc_png

    name = marker_name(a.marker)
    key = safe_id(a.marker or "all")
    figures = []
    doc.add(Heading(f"{name}: results"))
    for mode, ev in a.evaluations.items():
        doc.add(_metric_table(ev, f"{name}, {mode_name(mode)}"))
    roc = roc_png(
        {mode_name(m): ev for m, ev in a.evaluations.items()},
        f"{name}: ROC of held-out cases",
        folder / f"roc_{key}.png",
    )
    figures.append(roc)
    doc.add(Image(roc.name, f"{name}: ROC curves of the held-out predictions pooled over folds"))
    cm = confusion_png(
        {mode_name(m): ev for m, ev in a.evaluations.items()},
        f"{name}: confusion matrices",
        folder / f"confusion_{key}.png",
    )
    figures.append(cm)
    doc.add(Image(cm.name, f"{name}: confusion matrices (count and share of each true class)"))
    rows: list[tuple[str, Interval | tuple[float, float, float]]] = [
        (mode_name(m), ev.metrics["weighted_f1"]) for m, ev in a.evaluations.items()
    ]
    if a.marker in PAPER_WEIGHTED_F1:
        rows.append(("paper (different, real data)", PAPER_WEIGHTED_F1[a.marker]))
    forest = intervals_png(
        rows, f"{name}: weighted F1", "weighted F1 (95% CI)", folder / f"weighted_f1_{key}.png"
    )
    figures.append(forest)
    doc.add(Image(forest.name, f"{name}: weighted F1 with 95% intervals"))
    _comparisons(doc, a, analysis)
    _folds(doc, a)
    return figures


def _comparisons(doc: Document, a: MarkerAnalysis, analysis: RunAnalysis) -> None:
    if not a.comparisons:
        return
    base = mode_name(analysis.config.baseline)
    rows = []
    for comparison in a.comparisons.values():
        d = comparison.difference
        rows.append(
            (
                comparison.model,
                "paired bootstrap of the weighted F1 difference (hsafast)",
                f"{d.estimate:+.3f} (95% CI {d.low:+.3f} to {d.high:+.3f}); "
                f"one-sided p {p_text(comparison.p_bootstrap)}",
            )
        )
        rows.append(
            (
                comparison.model,
                f"Wilcoxon signed-rank over {len(comparison.fold_pairs)} folds, two-sided "
                "(hsafast)",
                f"p {p_text(comparison.fold_p_value)} "
                f"(smallest possible {p_text(comparison.fold_min_p)})",
            )
        )
        for t in comparison.true_class_tests:
            rows.append(
                (
                    comparison.model,
                    f"Wilcoxon signed-rank, P(true class) on the {t.n} '{t.true_class}' cases, "
                    "one-sided (paper)",
                    f"median {t.median_new:.3f} vs {t.median_baseline:.3f}; p {p_text(t.p_value)}",
                )
            )
    doc.add(
        Table(
            ("Model", "Test against the " + base, "Result"),
            tuple(rows),
            caption=f"{marker_name(a.marker)}: each model against the {base} on the same cases",
        )
    )


def _folds(doc: Document, a: MarkerAnalysis) -> None:
    folds = sorted({f for ev in a.evaluations.values() for f in ev.per_fold})
    if not folds:
        return
    rows = []
    for f in folds:
        first = next(iter(a.evaluations.values()))
        n = int((first.predictions.folds == f).sum())
        cells = [
            f"{ev.per_fold[f]['weighted_f1']:.3f}" if f in ev.per_fold else "-"
            for ev in a.evaluations.values()
        ]
        rows.append((str(f), str(n), *cells))
    doc.add(
        Table(
            ("Fold", "Cases", *(mode_name(m) for m in a.evaluations)),
            tuple(rows),
            caption=f"{marker_name(a.marker)}: weighted F1 per fold (hsafast)",
        )
    )


def paper_protocol(doc: Document, analysis: RunAnalysis) -> None:
    doc.add(Heading("The paper's protocol"))
    doc.add(
        Paragraph(
            "As HistoStainAlign evaluates: the held-out predictions of all folds pooled, "
            "weighted F1 with a 1000-resample percentile bootstrap interval that resamples "
            "cases (slides), and the one-sided Wilcoxon tests above marked (paper). "
            "Resampling cases treats slides of one patient as independent; where patients "
            "have several slides these intervals are too narrow, which is why hsafast's "
            "tables resample patients."
        )
    )
    rows = []
    for marker, a in analysis.markers.items():
        for mode, ev in a.paper.items():
            f1, auc = ev.metrics["weighted_f1"], ev.metrics["auc"]
            rows.append(
                (
                    marker_name(marker),
                    mode_name(mode),
                    f"{f1.estimate:.3f}",
                    ci_text(f1),
                    f"{auc.estimate:.3f}" if not math.isnan(auc.estimate) else "-",
                    ci_text(auc),
                )
            )
    doc.add(
        Table(
            ("Marker", "Model", "Weighted F1", "95% CI", "AUC", "95% CI"),
            tuple(rows),
            caption="Paper's protocol: pooled folds, bootstrap resampling cases",
        )
    )
