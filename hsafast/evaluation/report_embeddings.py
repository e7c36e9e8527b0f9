"""The report's embedding sections: alignment of H&E and IHC embeddings (tables and
maps), the linear probe, and patch mode's example maps beside the registered IHC.
"""

from __future__ import annotations

import math
from pathlib import Path

from hsafast._fileio import safe_id
from hsafast.errors import HsafastError
from hsafast.evaluation.analysis import RunAnalysis, main_mode
from hsafast.evaluation.document import Document, Heading, Image, Paragraph, Table, ci_text, p_text
from hsafast.evaluation.rundir import RunDir, marker_name, mode_name

__all__ = ["alignment_section", "examples_section", "probe_section"]


def alignment_section(
    doc: Document, analysis: RunAnalysis, folder: Path, figures: list[Path]
) -> None:
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
                    p_text(al.p_value),
                    p_text(a.alignment_vs_baseline.get(mode, math.nan)),
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
        for mode in [main_mode(a, analysis.config.baseline), analysis.config.baseline]:
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


def probe_section(doc: Document, analysis: RunAnalysis) -> None:
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
                    ci_text(paper),
                    ci_text(f1),
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
            f"{probe.inner_folds}-fold inner cross-validation (fewer folds where a class has fewer "
            "training patients) on average precision over "
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


def examples_section(doc: Document, analysis: RunAnalysis, folder: Path) -> list[Path]:
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
            panels = (
                "predicted positivity (left), the registered IHC (middle), the IHC-derived "
                "map (right)"
                if "warped" in how
                else "predicted positivity (left), the IHC-derived map (right)"
            )
            doc.add(Image(png.name, f"{marker_name(marker)}, case {case_id}: {panels}; {how}"))
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
