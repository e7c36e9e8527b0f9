"""``hsafast evaluate RUN_DIR``: the evaluation report of a run.

Writes ``report.md``, ``report.html`` (the same content, images embedded),
``summary.json`` (every number, for machines) and the PNG figures into
``RUN_DIR/report/`` (or ``out``). The report opens with plain sentences and
what was simulated, then tables of metric, estimate and 95% interval, with the
HistoStainAlign paper's protocol and hsafast's additions each named as such.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsafast._fileio import atomic_write_text
from hsafast.errors import EvaluationError
from hsafast.evaluation.analysis import ReportConfig, RunAnalysis, analyse_run, main_mode
from hsafast.evaluation.bootstrap import Interval
from hsafast.evaluation.document import Bullets, Document, Heading, Paragraph, Table, p_text
from hsafast.evaluation.paper import comparison_table
from hsafast.evaluation.report_embeddings import (
    alignment_section,
    examples_section,
    probe_section,
)
from hsafast.evaluation.report_results import marker_section, paper_protocol
from hsafast.evaluation.rundir import RunDir, marker_name, mode_name, open_run

__all__ = ["Report", "write_report"]


@dataclass(frozen=True)
class Report:
    """Files written, and the analysis behind them."""

    folder: Path
    markdown: Path
    html: Path
    summary: Path
    figures: tuple[Path, ...]
    analysis: RunAnalysis = field(repr=False)


def write_report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    config: ReportConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Evaluate a run directory and write its report (see the module docstring)."""
    config = config or ReportConfig()
    run = open_run(run_dir)
    folder = Path(out) if out is not None else run.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    analysis = analyse_run(run, config, progress)
    say = progress or (lambda _message: None)
    say("drawing figures")
    doc = Document("hsafast evaluation report")
    figures: list[Path] = []
    _summary(doc, analysis)
    _simulated(doc, run)
    _data(doc, analysis)
    for a in analysis.markers.values():
        figures += marker_section(doc, a, analysis, folder)
    paper_protocol(doc, analysis)
    alignment_section(doc, analysis, folder, figures)
    probe_section(doc, analysis)
    figures += examples_section(doc, analysis, folder)
    _reference(doc, analysis)
    _notes(doc, analysis)
    _methods(doc, analysis)
    markdown = folder / "report.md"
    html = folder / "report.html"
    summary = folder / "summary.json"
    atomic_write_text(markdown, doc.markdown())
    atomic_write_text(html, doc.html(folder))
    atomic_write_text(summary, json.dumps(_summary_json(analysis), indent=1) + "\n")
    return Report(folder, markdown, html, summary, tuple(figures), analysis)


# -- sections ----------------------------------------------------------------------------------


def _summary(doc: Document, analysis: RunAnalysis) -> None:
    run = analysis.run
    doc.add(Heading("Summary"))
    sim = run.simulated()
    if sim:
        doc.add(
            Paragraph(
                f"**The slides of this run were simulated ({sim}).** The numbers below show "
                "that the method and the pipeline work as intended; they say nothing about "
                "accuracy on real tissue."
            )
        )
    folds = run.run.get("folds", {}).get("k")
    unit = f"{folds}-fold cross-validation" if folds else "cross-validation"
    base = analysis.config.baseline
    for marker, a in analysis.markers.items():
        main = main_mode(a, base)
        ev = a.evaluations[main]
        f1 = ev.metrics["weighted_f1"]
        interval = "no interval" if math.isnan(f1.low) else f"95% CI {f1.low:.2f}-{f1.high:.2f}"
        text = (
            f"For {marker_name(marker)}, {mode_name(main)} reached a weighted F1 of "
            f"{f1.estimate:.2f} ({interval}) on {ev.n_cases} held-out cases of "
            f"{ev.n_patients} patients ({unit}, every patient's cases in one fold)."
        )
        comparison = a.comparisons.get(main)
        if comparison is not None:
            d = comparison.difference
            verdict = (
                "better than"
                if d.low > 0
                else "worse than"
                if d.high < 0
                else "not distinguishable from"
            )
            text += (
                f" It was {verdict} the {mode_name(base)} "
                f"({a.evaluations[base].metrics['weighted_f1'].estimate:.2f}): difference "
                f"{d.estimate:+.2f}, 95% CI {d.low:+.2f} to {d.high:+.2f}."
            )
        if main in a.alignment:
            al = a.alignment[main]
            closer = al.gap_mean.low > 0 and al.p_value < 0.05
            text += (
                " Its H&E and IHC embeddings of the same case were "
                + ("closer than" if closer else "not clearly closer than")
                + f" those of unrelated cases (cosine similarity {al.gap_mean.mean:+.2f} on "
                f"average, p {p_text(al.p_value)})."
            )
        doc.add(Paragraph(text))
    doc.add(
        Paragraph(
            "Intervals are 95% percentile bootstrap intervals "
            f"({analysis.config.evaluation.n_resamples} resamples of "
            f"{analysis.config.evaluation.resample}) unless a table says otherwise."
        )
    )


def _simulated(doc: Document, run: RunDir) -> None:
    doc.add(Heading("What was simulated"))
    sim = run.simulated()
    if sim:
        doc.add(
            Paragraph(
                f"Every slide was made by {sim}: synthetic H&E and IHC images with a known "
                "ground truth (cells, stain, deformation between the sections). The labels "
                "follow the same marker rules as real slides, but the tissue is a test "
                "pattern, not a substitute for real data."
            )
        )
    else:
        doc.add(
            Paragraph(
                "Nothing in the run directory says that its slides were simulated; they are "
                "taken to be the slides the manifest names."
            )
        )
    source = run.label_source()
    if source:
        doc.add(Paragraph(f"Slide labels: {source}."))


def _data(doc: Document, analysis: RunAnalysis) -> None:
    doc.add(Heading("Cases"))
    rows = []
    for marker, a in analysis.markers.items():
        ev = next(iter(a.evaluations.values()))
        folds = sorted(ev.per_fold)
        rows.append(
            (
                marker_name(marker),
                str(ev.n_cases),
                str(ev.n_patients),
                ", ".join(f"{n} {c}" for c, n in ev.class_counts.items()),
                str(len(folds)) if folds else "-",
                ", ".join(mode_name(m) for m in a.evaluations),
            )
        )
    doc.add(
        Table(
            ("Marker", "Cases", "Patients", "Labels", "Folds", "Models"),
            tuple(rows),
            caption="Held-out cases evaluated, per marker",
        )
    )


def _reference(doc: Document, analysis: RunAnalysis) -> None:
    doc.add(Heading("Beside the paper"))
    base = analysis.config.baseline
    columns: dict[str, dict[str, Interval]] = {}
    for mode in dict.fromkeys(m for a in analysis.markers.values() for m in a.evaluations):
        columns[f"This run: {mode_name(mode)}"] = analysis.weighted_f1(mode)
    doc.add(comparison_table(columns))
    doc.add(
        Paragraph(
            "The paper's figures come from its own real slides; "
            + (
                "this run's slides were simulated, so the two columns measure different things. "
                if analysis.run.simulated()
                else "they are a reference point, not a target. "
            )
            + f"This run's intervals resample {analysis.config.evaluation.resample}; the "
            f"paper's resampled cases. Baseline: {mode_name(base)}."
        )
    )


def _notes(doc: Document, analysis: RunAnalysis) -> None:
    notes = list(analysis.notes)
    for marker, a in analysis.markers.items():
        for mode, ev in a.evaluations.items():
            notes += [f"{marker_name(marker)}, {mode_name(mode)}: {n}" for n in ev.notes]
        notes += [f"{marker_name(marker)}: {n}" for n in a.notes]
    doc.add(Heading("Notes"))
    doc.add(
        Bullets(tuple(notes))
        if notes
        else Paragraph("None: every case had a label and every fold held every class.")
    )


def _methods(doc: Document, analysis: RunAnalysis) -> None:
    from hsafast import __version__

    ev = analysis.config.evaluation
    versions = analysis.run.run.get("versions", {})
    positives = sorted(
        {e.positive_class or "-" for a in analysis.markers.values() for e in a.evaluations.values()}
    )
    lines = [
        "Weighted F1: per-class F1 averaged with the class sizes as weights (the paper's "
        "metric); macro F1: unweighted mean over classes; balanced accuracy: mean recall "
        "over classes; AUC: area under the ROC curve (one-vs-rest, macro-averaged beyond two "
        "classes); sensitivity and specificity of the positive class "
        f"({', '.join(positives)}).",
        f"Bootstrap: {ev.n_resamples} resamples of {ev.resample} with replacement, seed "
        f"{ev.seed}, percentile interval at {ev.confidence:.0%}; the paper's protocol "
        "resamples cases with the same count and seed.",
        f"Evaluated by hsafast {__version__}"
        + (
            f"; run made with {', '.join(f'{k} {v}' for k, v in versions.items())}"
            if isinstance(versions, dict) and versions
            else ""
        ),
        f"Run directory: {analysis.run.root}",
    ]
    doc.add(Heading("Methods"))
    doc.add(Bullets(tuple(lines)))


def _summary_json(analysis: RunAnalysis) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run": str(analysis.run.root),
        "simulated": analysis.run.simulated(),
        "markers": {},
        "notes": analysis.notes,
    }
    for marker, a in analysis.markers.items():
        out["markers"][marker] = {
            "evaluations": {m: ev.to_dict() for m, ev in a.evaluations.items()},
            "paper_protocol": {m: ev.to_dict()["metrics"] for m, ev in a.paper.items()},
            "comparisons": {
                m: {
                    "difference": [c.difference.estimate, c.difference.low, c.difference.high],
                    "p_bootstrap": c.p_bootstrap,
                    "fold_p_value": None if math.isnan(c.fold_p_value) else c.fold_p_value,
                    "true_class_tests": [t.__dict__ for t in c.true_class_tests],
                }
                for m, c in a.comparisons.items()
            },
            "probe": {m: ev.to_dict()["metrics"] for m, ev in a.probe.items()},
            "alignment": {
                m: {
                    "paired": al.paired_mean.__dict__,
                    "shuffled": al.shuffled_mean.__dict__,
                    "gap": al.gap_mean.__dict__,
                    "p_value": al.p_value,
                    "recall": al.recall,
                    "chance": al.chance,
                }
                for m, al in a.alignment.items()
            },
            "notes": a.notes,
        }
    return _clean(out)


def _clean(value: Any) -> Any:
    """JSON-ready: NaN -> None, NumPy scalars -> Python numbers, keys -> strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, str | bool) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EvaluationError(f"cannot write {type(value).__name__} to summary.json") from None
    if math.isnan(number):
        return None
    return int(number) if isinstance(value, int) else number
