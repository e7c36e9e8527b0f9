"""Everything the report says about a run, computed once: per marker and mode,
metrics with intervals both ways (the paper's protocol and hsafast's), the
comparison with the classification-only baseline, the linear probe, the
alignment analysis and the patch-mode maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from hsafast.errors import EvaluationError, InvalidParameterError
from hsafast.evaluation.alignment import AlignmentResult, alignment_analysis, compare_alignment
from hsafast.evaluation.assess import Evaluation, EvaluationConfig, _evaluate_labelled
from hsafast.evaluation.bootstrap import Interval
from hsafast.evaluation.compare import Comparison, compare_models
from hsafast.evaluation.embeddings import SlideEmbeddings, read_embeddings
from hsafast.evaluation.examples import TileMaps, read_tile_maps, tile_agreement
from hsafast.evaluation.predictions import attach_labels, read_predictions
from hsafast.evaluation.probe import ProbeConfig, probe_predictions
from hsafast.evaluation.rundir import RunDir, mode_name

__all__ = ["MarkerAnalysis", "ReportConfig", "RunAnalysis", "analyse_run", "main_mode"]


@dataclass(frozen=True)
class ReportConfig:
    """What the report computes and draws."""

    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Bootstrap settings of hsafast's intervals (the paper's protocol uses the same
    resample count and seed, resampling cases)."""

    probe: ProbeConfig | None = field(default_factory=ProbeConfig)
    """The linear probe; ``ProbeConfig.paper()`` for the authors' exact search, None
    to skip it."""

    baseline: str = "classification-only"
    """The mode every other mode is compared with (the paper's baseline)."""

    embedding_map: Literal["umap", "pca", "none"] = "umap"
    """How embeddings are drawn in 2-D: UMAP (umap-learn; its first call in a
    process compiles for about 15-25 s), PCA, or not at all."""

    examples: int = 3
    """Patch-mode example cases drawn beside their registered IHC (0: none)."""

    register_examples: bool = True
    """Register an example's slides when the run holds no registration for it
    (a few seconds per case); False draws the maps on white instead."""

    def __post_init__(self) -> None:
        if self.embedding_map not in ("umap", "pca", "none"):
            raise InvalidParameterError(
                f"ReportConfig.embedding_map: must be 'umap', 'pca' or 'none', "
                f"got {self.embedding_map!r}"
            )
        if not (isinstance(self.examples, int) and self.examples >= 0):
            raise InvalidParameterError(
                f"ReportConfig.examples: must be an integer >= 0, got {self.examples!r}"
            )


@dataclass
class MarkerAnalysis:
    marker: str
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    paper: dict[str, Evaluation] = field(default_factory=dict)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    probe: dict[str, Evaluation] = field(default_factory=dict)
    probe_paper: dict[str, Evaluation] = field(default_factory=dict)
    probe_c: dict[str, list[float]] = field(default_factory=dict)
    alignment: dict[str, AlignmentResult] = field(default_factory=dict)
    alignment_vs_baseline: dict[str, float] = field(default_factory=dict)
    embeddings: dict[str, SlideEmbeddings] = field(default_factory=dict)
    tile_agreement: tuple[float, int] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class RunAnalysis:
    run: RunDir
    config: ReportConfig
    markers: dict[str, MarkerAnalysis]
    tiles: TileMaps | None
    notes: list[str]

    def weighted_f1(self, mode: str) -> dict[str, Interval]:
        """{marker: weighted F1 with hsafast's interval} of one mode."""
        return {
            m: a.evaluations[mode].metrics["weighted_f1"]
            for m, a in self.markers.items()
            if mode in a.evaluations
        }


def main_mode(a: MarkerAnalysis, baseline: str) -> str:
    """The mode a marker's summary speaks of: slide mode, else the first non-baseline."""
    modes = list(a.evaluations)
    if "slide" in modes:
        return "slide"
    return next((m for m in modes if m != baseline), modes[0])


def analyse_run(
    run: RunDir, config: ReportConfig, progress: Callable[[str], None] | None = None
) -> RunAnalysis:
    """Compute every number of the report."""
    say = progress or (lambda _message: None)
    notes = list(run.notes)
    paper_config = replace(config.evaluation, resample="cases")
    markers: dict[str, MarkerAnalysis] = {}
    for mode in run.modes:
        say(f"evaluating {mode_name(mode)}")
        predictions, mode_notes = attach_labels(
            read_predictions(run.predictions[mode]),
            None,
            on_mismatch=config.evaluation.on_mismatch,
        )
        notes += [f"{mode_name(mode)}: {n}" for n in mode_notes]
        for marker, subset in predictions.by_marker().items():
            a = markers.setdefault(marker, MarkerAnalysis(marker))
            a.evaluations[mode] = _evaluate_labelled(subset, config.evaluation, [])
            a.paper[mode] = _evaluate_labelled(subset, paper_config, [])
    for a in markers.values():
        _compare(a, config)
    for mode, path in run.embeddings.items():
        if mode not in run.predictions:
            continue
        say(f"alignment and probe of {mode_name(mode)}")
        embeddings = read_embeddings(path)
        probe = config.probe if embeddings.has_training_rows else None
        if config.probe is not None and probe is None:
            notes.append(
                f"linear probe of {mode_name(mode)} not run: its embeddings hold only held-out "
                "rows, and the probe fits on the embeddings each fold's model gives its "
                "training cases (rows with split = 'train')"
            )
        for marker, a in markers.items():
            if mode not in a.evaluations:
                continue
            of_marker = embeddings.subset(embeddings.markers == marker)
            if len(of_marker) == 0:
                a.notes.append(f"{mode_name(mode)}: no embeddings of this marker")
                continue
            a.embeddings[mode] = of_marker
            _align(a, mode, of_marker)
            if probe is not None:
                _probe(a, mode, of_marker, probe, config.evaluation, paper_config)
    for a in markers.values():
        base = a.alignment.get(config.baseline)
        for mode, result in a.alignment.items():
            if base is not None and mode != config.baseline:
                try:
                    a.alignment_vs_baseline[mode] = compare_alignment(result, base)
                except EvaluationError as exc:
                    a.notes.append(f"alignment of {mode_name(mode)} vs baseline: {exc.reason}")
    tiles = None
    if run.tiles is not None:
        tiles = read_tile_maps(run.tiles)
        for marker, a in markers.items():
            rows = np.flatnonzero(tiles.markers == marker)
            if len(rows):
                a.tile_agreement = tile_agreement(tiles, rows)
    return RunAnalysis(run=run, config=config, markers=markers, tiles=tiles, notes=notes)


def _compare(a: MarkerAnalysis, config: ReportConfig) -> None:
    base = a.evaluations.get(config.baseline)
    if base is None:
        if len(a.evaluations) > 1:
            a.notes.append(f"no {mode_name(config.baseline)} in the run: no paired comparison")
        return
    for mode, ev in a.evaluations.items():
        if mode == config.baseline:
            continue
        try:
            a.comparisons[mode] = compare_models(
                ev, base, names=(mode_name(mode), mode_name(config.baseline))
            )
        except EvaluationError as exc:
            a.notes.append(f"{mode_name(mode)} vs baseline: {exc.reason}")


def _align(a: MarkerAnalysis, mode: str, embeddings: SlideEmbeddings) -> None:
    try:
        a.alignment[mode] = alignment_analysis(embeddings)
    except EvaluationError as exc:
        a.notes.append(f"alignment of {mode_name(mode)}: {exc.reason}")


def _probe(
    a: MarkerAnalysis,
    mode: str,
    embeddings: SlideEmbeddings,
    probe: ProbeConfig,
    config: EvaluationConfig,
    paper_config: EvaluationConfig,
) -> None:
    classes = a.evaluations[mode].classes
    try:
        probed = probe_predictions(embeddings, classes, config=probe)
    except EvaluationError as exc:
        a.notes.append(f"linear probe of {mode_name(mode)}: {exc.reason}")
        return
    a.notes += [f"linear probe of {mode_name(mode)}: {n}" for n in probed.notes]
    a.probe[mode] = _evaluate_labelled(probed.predictions, config, [])
    a.probe_paper[mode] = _evaluate_labelled(probed.predictions, paper_config, [])
    a.probe_c[mode] = [c for _, c in sorted(probed.c.items())]
