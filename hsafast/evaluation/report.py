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

from hsafast._fileio import atomic_write_text, safe_id
from hsafast.errors import EvaluationError, HsafastError
from hsafast.evaluation.analysis import MarkerAnalysis, ReportConfig, RunAnalysis, analyse_run
from hsafast.evaluation.assess import Evaluation
from hsafast.evaluation.bootstrap import Interval
from hsafast.evaluation.document import Bullets, Document, Heading, Image, Paragraph, Table
from hsafast.evaluation.paper import PAPER_WEIGHTED_F1, comparison_table
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
        figures += _marker_section(doc, a, analysis, folder)
    _paper_protocol(doc, analysis)
    _alignment(doc, analysis, folder, figures)
    _probe(doc, analysis)
    figures += _examples(doc, analysis, folder)
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


# -- text helpers -----------------------------------------------------------------------------


def _ci(i: Interval) -> str:
    if math.isnan(i.low):
        return "-"
    return f"{i.low:.3f}-{i.high:.3f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _main_mode(a: MarkerAnalysis, baseline: str) -> str:
    modes = list(a.evaluations)
    if "slide" in modes:
        return "slide"
    return next((m for m in modes if m != baseline), modes[0])


def _counts(ev: Evaluation) -> str:
    return ", ".join(f"{n} {c}" for c, n in ev.class_counts.items())


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
        main = _main_mode(a, base)
        ev = a.evaluations[main]
        f1 = ev.metrics["weighted_f1"]
        text = (
            f"For {marker_name(marker)}, {mode_name(main)} reached a weighted F1 of "
            f"{f1.estimate:.2f} (95% CI {f1.low:.2f}-{f1.high:.2f}) on {ev.n_cases} held-out "
            f"cases of {ev.n_patients} patients ({unit}, every patient's cases in one fold)."
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
                f"average, p {_p(al.p_value)})."
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
                _counts(ev),
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


def _metric_table(ev: Evaluation, title: str) -> Table:
    return Table(
        ("Metric", "Estimate", "95% CI"),
        tuple((label, f"{i.estimate:.3f}", _ci(i)) for label, i in ev.rows()),
        caption=f"{title}: {ev.n_cases} cases, {ev.n_patients} patients; CI by resampling "
        f"{ev.config.resample} (hsafast)",
    )


def _marker_section(
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
                f"one-sided p {_p(comparison.p_bootstrap)}",
            )
        )
        rows.append(
            (
                comparison.model,
                f"Wilcoxon signed-rank over {len(comparison.fold_pairs)} folds, two-sided "
                "(hsafast)",
                f"p {_p(comparison.fold_p_value)} (smallest possible {_p(comparison.fold_min_p)})",
            )
        )
        for t in comparison.true_class_tests:
            rows.append(
                (
                    comparison.model,
                    f"Wilcoxon signed-rank, P(true class) on the {t.n} '{t.true_class}' cases, "
                    "one-sided (paper)",
                    f"median {t.median_new:.3f} vs {t.median_baseline:.3f}; p {_p(t.p_value)}",
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


def _paper_protocol(doc: Document, analysis: RunAnalysis) -> None:
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
                    _ci(f1),
                    f"{auc.estimate:.3f}" if not math.isnan(auc.estimate) else "-",
                    _ci(auc),
                )
            )
    doc.add(
        Table(
            ("Marker", "Model", "Weighted F1", "95% CI", "AUC", "95% CI"),
            tuple(rows),
            caption="Paper's protocol: pooled folds, bootstrap resampling cases",
        )
    )


def _alignment(doc: Document, analysis: RunAnalysis, folder: Path, figures: list[Path]) -> None:
    from hsafast.evaluation.plots import embedding_map_png

    if not any(a.alignment for a in analysis.markers.values()):
        return
    doc.add(Heading("Alignment of H&E and IHC embeddings"))
    doc.add(
        Paragraph(
            "Cosine similarity of each held-out case's H&E slide embedding with its own IHC "
            "embedding (paired) and, on average, with the IHC embeddings of other patients' "
            "cases of the same marker and fold (shuffled); the gap is paired minus shuffled. "
            "Means with Student-t 95% intervals as the paper; the p of paired > shuffled is a "
            "one-sided Wilcoxon signed-rank test (hsafast); 'vs baseline' is the paper's "
            "one-sided Wilcoxon test that the model's gaps exceed the baseline's."
        )
    )
    rows, recall_rows = [], []
    for marker, a in analysis.markers.items():
        for mode, al in a.alignment.items():
            rows.append(
                (
                    marker_name(marker),
                    mode_name(mode),
                    str(al.paired_mean),
                    str(al.shuffled_mean),
                    str(al.gap_mean),
                    _p(al.p_value),
                    _p(a.alignment_vs_baseline.get(mode, math.nan)),
                )
            )
            for direction, recall in al.recall.items():
                recall_rows.append(
                    (
                        marker_name(marker),
                        mode_name(mode),
                        direction,
                        *(f"{recall[k]:.2f} ({al.chance[k]:.2f})" for k in sorted(recall)),
                    )
                )
    doc.add(
        Table(
            (
                "Marker",
                "Model",
                "Paired",
                "Shuffled",
                "Gap",
                "p paired > shuffled",
                "p vs baseline",
            ),
            tuple(rows),
            caption="Cosine similarity of slide embeddings, mean (95% CI)",
        )
    )
    ks = sorted(
        next(
            iter(next(a for a in analysis.markers.values() if a.alignment).alignment.values())
        ).recall["H&E to IHC"]
    )
    doc.add(
        Table(
            ("Marker", "Model", "Query to candidates", *(f"Recall@{k} (chance)" for k in ks)),
            tuple(recall_rows),
            caption="Cross-modal retrieval within each fold and marker (hsafast): share of "
            "cases whose own partner is among the k most similar",
        )
    )
    if analysis.config.embedding_map == "none":
        return
    for marker, a in analysis.markers.items():
        for mode in [_main_mode(a, analysis.config.baseline), analysis.config.baseline]:
            if mode not in a.embeddings:
                continue
            path = folder / f"embeddings_{safe_id(marker or 'all')}_{mode}.png"
            embedding_map_png(
                a.embeddings[mode],
                marker,
                f"{marker_name(marker)}, {mode_name(mode)}: held-out slide embeddings",
                path,
                method=analysis.config.embedding_map,
                seed=analysis.config.evaluation.seed,
            )
            figures.append(path)
            method = "UMAP" if analysis.config.embedding_map == "umap" else "PCA"
            doc.add(
                Image(
                    path.name,
                    f"{marker_name(marker)}, {mode_name(mode)}: {method} map "
                    "per fold; circles H&E, triangles IHC, colour = label, grey lines "
                    "join the two stains of a case",
                )
            )


def _probe(doc: Document, analysis: RunAnalysis) -> None:
    probe = analysis.config.probe
    if probe is None:
        return
    doc.add(Heading("Linear probe on frozen slide embeddings"))
    rows = []
    for marker, a in analysis.markers.items():
        for mode, ev in a.probe.items():
            paper = a.probe_paper[mode].metrics["weighted_f1"]
            f1 = ev.metrics["weighted_f1"]
            chosen = ", ".join(f"{c:.2g}" for c in a.probe_c.get(mode, []))
            rows.append(
                (
                    marker_name(marker),
                    mode_name(mode),
                    f"{f1.estimate:.3f}",
                    _ci(paper),
                    _ci(f1),
                    chosen,
                )
            )
    search = (
        "the paper's search (40 random values of 100 log-spaced C in 1e-3..1e2, inner folds "
        "by case)"
        if probe.search == "random"
        else f"{probe.grid_points} log-spaced values of C in {probe.c_min:g}..{probe.c_max:g}, "
        f"inner folds by {'patient' if probe.group_by_patient else 'case'} (hsafast)"
    )
    doc.add(
        Paragraph(
            "Per fold, the H&E slide embeddings that the fold's model gives its training cases "
            "are standardised and fit a class-balanced logistic regression; C is chosen by "
            f"{probe.inner_folds}-fold inner cross-validation on average precision over "
            f"{search}; the held-out cases are predicted and pooled over folds."
        )
    )
    if rows:
        doc.add(
            Table(
                (
                    "Marker",
                    "Embeddings of",
                    "Weighted F1",
                    "95% CI (cases, paper)",
                    "95% CI (patients, hsafast)",
                    "C chosen per fold",
                ),
                tuple(rows),
                caption="Linear probe, held-out predictions pooled over folds",
            )
        )
    else:
        doc.add(Paragraph("No probe could be fitted; the notes say why."))


def _examples(doc: Document, analysis: RunAnalysis, folder: Path) -> list[Path]:
    from hsafast.evaluation.examples import example_png, pick_examples

    tiles = analysis.tiles
    if tiles is None:
        return []
    doc.add(Heading("Patch mode: maps beside the registered IHC"))
    rows = [
        (
            marker_name(m),
            f"{a.tile_agreement[0]:.3f}" if not math.isnan(a.tile_agreement[0]) else "-",
            str(a.tile_agreement[1]),
        )
        for m, a in analysis.markers.items()
        if a.tile_agreement is not None
    ]
    doc.add(
        Table(
            ("Marker", "Spearman rho", "Tiles"),
            tuple(rows),
            caption="Predicted positivity of held-out H&E tiles against the share of positive "
            "cells read from the registered IHC tile (tiles with a target)",
        )
    )
    if analysis.config.examples == 0:
        return []
    cases = _manifest_cases(analysis.run)
    figures = []
    for marker, a in analysis.markers.items():
        ev = a.evaluations.get("patch")
        if ev is None:
            continue
        p = ev.predictions
        confidence = p.probabilities.max(axis=1)
        for case_id in pick_examples(
            p.case_ids, p.labels, p.predicted, confidence, tiles, analysis.config.examples
        ):
            i = p.case_ids.index(case_id)
            slides = cases.get(case_id) if analysis.config.register_examples else None
            registration = analysis.run.root / "registration" / f"{safe_id(case_id)}.json"
            path = folder / f"example_{safe_id(case_id)}.png"
            try:
                png, how = example_png(
                    tiles,
                    case_id,
                    f"{marker_name(marker)}, case {case_id}: label {p.labels[i]}, "
                    f"predicted {p.predicted[i]} ({confidence[i]:.2f})",
                    path,
                    slides=slides,
                    registration=registration if registration.is_file() else None,
                )
            except HsafastError as exc:
                a.notes.append(f"example {case_id}: {exc.reason}")
                continue
            figures.append(png)
            doc.add(
                Image(
                    png.name,
                    f"{marker_name(marker)}, case {case_id}: predicted "
                    f"positivity (left), the IHC (middle), the IHC-derived map (right); "
                    f"{how}",
                )
            )
    return figures


def _manifest_cases(run: RunDir) -> dict[str, tuple[Path, Path]]:
    from hsafast.manifest import read_manifest

    manifest = run.manifest
    if manifest is None or not manifest.is_file():
        return {}
    try:
        return {c.case_id: (c.he_path, c.ihc_path) for c in read_manifest(manifest).cases}
    except HsafastError:
        return {}


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
