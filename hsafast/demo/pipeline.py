"""One simulated cohort through the whole method: simulate, train, score, evaluate, report.

Each step calls the public API of its stage; nothing here re-implements one:

1. ``hsafast.synth.make_cohort``: paired H&E/IHC slides with a known truth.
2. ``hsafast.trainer.train`` on the trainer's ``demo_config``: per case tissue, tiles,
   the IHC stain's label and patch targets, registration (the trainer's preparation),
   then per fold patch mode (which learns the tile features), slide mode and the
   classification-only baseline.
3. ``hsafast.Scorer`` on each fold's bundles scores that fold's held-out H&E slides
   from their pixels (JSON, heatmaps, results table per fold and mode).
4. ``hsafast.evaluate`` of those scores against the simulator's labels, and
   ``write_report`` of the run directory (stain-derived labels, as trained).

The simulator's truth is read here, after training, to check the stages (labels read
from the stain, scores); the trainer never sees it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hsafast.evaluation import ReportConfig
    from hsafast.trainer import TrainConfig

__all__ = ["CohortPlan", "CohortResult", "Progress", "run_cohort", "training_config"]

#: Models scored from pixels with ``hsafast.Scorer`` (patch mode adds positivity maps;
#: the baseline shares slide mode's inputs, so scoring it would show nothing new).
SCORED_MODES = ("slide", "patch")

#: ``progress(pipeline, message, final)``: pipeline is "real", "cohort" or "control";
#: ``final`` marks a line that closes a step (the others are passing status).
Progress = Callable[[str, str, bool], None]


@dataclass(frozen=True)
class CohortPlan:
    """Where and how one cohort runs."""

    name: str
    """"cohort" or "control": the progress prefix and the key in summary.json."""
    cohort_dir: Path
    run_dir: Path
    cases: int
    slide_size: int
    predictability: float
    marker: str
    seed: int
    threads: int
    """PyTorch threads (0: PyTorch's default)."""
    workers: int
    """Processes that simulate slides and prepare cases (1: in this process)."""
    training: Mapping[str, Any] = field(default_factory=dict)
    report: ReportConfig | None = None


@dataclass
class CohortResult:
    """The numbers one cohort produced (the demo's summary and closing table)."""

    name: str
    predictability: float
    cases: int
    patients: int = 0
    folds: int = 0
    """Cross-validation folds (by patient) of the training and the held-out scores."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds per step: simulate, train, score, report."""
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU seconds per step of the process that ran the cohort: with one core to
    itself, its wall time (the measure that other work on the machine does not move)."""
    stain_labels_agree: int = 0
    """Cases whose label read from the IHC stain equals the simulator's."""
    labelled: int = 0
    registered: int = 0
    tiles: int = 0
    pairs: int = 0
    failed_cases: int = 0
    weighted_f1: dict[str, list[float]] = field(default_factory=dict)
    """mode -> [estimate, low, high] against the stain-derived labels (the report's)."""
    one_class_folds: dict[str, int] = field(default_factory=dict)
    """mode -> folds whose held-out cases all got the same predicted class (a model that
    learnt only its training folds' majority)."""
    scored: dict[str, dict[str, Any]] = field(default_factory=dict)
    """mode -> slides scored, weighted F1 [est, low, high] against the simulator's labels,
    largest |p| difference from the trainer's held-out prediction of the same slide."""
    report: str = ""


def training_config(plan: CohortPlan) -> TrainConfig:
    """The trainer's demo configuration for this cohort, with the demo's modes and
    the plan's threads and preparation workers (validated: unknown keys raise)."""
    from hsafast.demo.config import DEMO_MODES
    from hsafast.trainer import demo_config

    changes = {"modes": list(DEMO_MODES), "seed": plan.seed, **plan.training}
    config = demo_config(plan.cohort_dir / "manifest.csv", plan.run_dir, **changes)
    return replace(config, threads=plan.threads, data=replace(config.data, workers=plan.workers))


def run_cohort(plan: CohortPlan, progress: Progress) -> CohortResult:
    """Every step of one cohort (see the module docstring)."""
    config = training_config(plan)
    result = CohortResult(plan.name, plan.predictability, plan.cases, folds=config.folds)

    with _timed(result, "simulate"):
        _simulate(plan, progress)
    progress(
        plan.name,
        f"simulated {plan.cases} paired H&E/IHC cases of {plan.slide_size} px "
        f"(predictability {plan.predictability:g}) in {result.seconds['simulate']:.0f} s",
        True,
    )

    with _timed(result, "train"):
        summary = _train(plan, config, progress)
    run = json.loads((plan.run_dir / "run.json").read_text())
    truth = _truth_labels(plan.cohort_dir / "manifest.csv")
    _preparation_facts(result, run, truth, summary.failed)
    progress(
        plan.name,
        f"prepared {result.labelled} cases ({result.registered} pairs registered, stain "
        f"labels = simulator's on {result.stain_labels_agree}), trained {len(config.modes)} "
        f"models x {config.folds} folds in {result.seconds['train']:.0f} s",
        True,
    )

    with _timed(result, "score"):
        for mode in SCORED_MODES:
            result.scored[mode] = _score(plan, config, run, truth, mode, progress)
    slides = sum(s["slides"] for s in result.scored.values())
    progress(
        plan.name,
        f"scored {slides} held-out slides with hsafast.Scorer in {result.seconds['score']:.0f} s",
        True,
    )

    with _timed(result, "report"):
        report = _report(plan, progress)
    result.report = str(report.markdown)
    for mode in config.modes:
        f1 = report.analysis.weighted_f1(mode).get(plan.marker)
        if f1 is not None:
            result.weighted_f1[mode] = [f1.estimate, f1.low, f1.high]
        predictions = plan.run_dir / "predictions" / f"{mode}.csv"
        if predictions.is_file():
            result.one_class_folds[mode] = _one_class_folds(predictions)
    progress(plan.name, f"report in {result.seconds['report']:.0f} s: {report.markdown}", True)
    return result


@contextmanager
def _timed(result: CohortResult, step: str) -> Iterator[None]:
    """Wall and CPU seconds of one step (this process's CPU time, all its threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    result.seconds[step] = round(time.perf_counter() - wall, 1)
    result.cpu_seconds[step] = round(time.process_time() - cpu, 1)


# -- steps -----------------------------------------------------------------------------------


def _simulate(plan: CohortPlan, progress: Progress) -> None:
    from hsafast.synth import make_cohort

    def rendered(done: int, total: int) -> None:
        progress(plan.name, f"simulating: {done}/{total} slides", False)

    make_cohort(
        plan.cohort_dir,
        plan.cases,
        markers=(plan.marker,),
        slide_size=plan.slide_size,
        predictability=plan.predictability,
        seed=plan.seed,
        workers=plan.workers,
        progress=rendered,
    )


class _TrainerProgress(logging.Handler):
    """Passes the trainer's progress lines (cases prepared, epochs) on as status lines."""

    def __init__(self, name: str, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.name_ = name
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not stop training
            return
        self.progress(self.name_, f"training: {message.partition(' | ')[0]}", False)


def _train(plan: CohortPlan, config: TrainConfig, progress: Progress) -> Any:
    from hsafast.trainer import train

    logger = logging.getLogger("hsafast.trainer")
    handler = _TrainerProgress(plan.name, progress)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.propagate, propagate = False, logger.propagate
    try:
        return train(config)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _truth_labels(manifest: Path) -> dict[str, str]:
    """The simulator's label of every case (its manifest's label column)."""
    from hsafast.manifest import read_manifest

    return {c.case_id: c.label or "" for c in read_manifest(manifest).cases}


def _one_class_folds(predictions: Path) -> int:
    """Folds of a trainer's held-out predictions file in which every case got one class."""
    import csv

    classes: dict[str, set[str]] = {}
    with predictions.open(newline="") as f:
        for row in csv.DictReader(f):
            classes.setdefault(row["fold"], set()).add(row["predicted"])
    return sum(len(predicted) == 1 for predicted in classes.values())


def _preparation_facts(
    result: CohortResult, run: Mapping[str, Any], truth: Mapping[str, str], failed: int
) -> None:
    cases = run.get("cases", [])
    result.labelled = len(cases)
    result.failed_cases = failed
    result.patients = len({c["patient_id"] for c in cases})
    result.stain_labels_agree = sum(c["label"] == truth.get(c["case_id"]) for c in cases)
    result.registered = sum(c["registration"] == "ok" for c in cases)
    result.tiles = sum(int(c["he_tiles"]) for c in cases)
    result.pairs = sum(int(c["pairs"]) for c in cases)


def _score(
    plan: CohortPlan,
    config: TrainConfig,
    run: Mapping[str, Any],
    truth: Mapping[str, str],
    mode: str,
    progress: Progress,
) -> dict[str, Any]:
    """Score each fold's held-out H&E slides with that fold's bundle of ``mode``."""
    import hsafast
    from hsafast.cohort import case_item_id
    from hsafast.manifest import read_manifest, write_manifest
    from hsafast.scoring import ScoringOptions, SlideResult

    cases = read_manifest(plan.cohort_dir / "manifest.csv").cases
    fold_of: dict[str, int] = run["folds"]["folds"]
    # the trainer's tiles: same tissue share per tile, so the scores can be compared
    options = ScoringOptions(min_tissue=config.data.min_tissue, workers=1)
    scored: dict[str, SlideResult] = {}  # case ID -> its H&E slide's result
    failed = 0
    for fold in range(config.folds):
        held_out = [c for c in cases if fold_of.get(c.case_id) == fold]
        if not held_out:
            continue
        out = plan.run_dir / "scores" / mode / f"fold{fold}"
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out / "held-out.csv", held_out)
        progress(plan.name, f"scoring: {mode} mode, fold {fold + 1}/{config.folds}", False)
        # PyTorch: exporting each fold's bundle to ONNX costs more than scoring its slides
        scorer = hsafast.Scorer(
            plan.run_dir / "models" / mode / f"fold{fold}", engine="torch", device="cpu",
            options=options,
        )  # fmt: skip
        report = scorer.score_many(out / "held-out.csv", out, heatmaps=True)
        failed += len(report.failed)
        for failure in report.failed:
            progress(plan.name, f"scoring failed: {failure}", True)
        for case in held_out:  # the scorer names each H&E slide <case_id>.HE
            path = out / f"{case_item_id(case.case_id, 'HE')}.json"
            if path.is_file():
                scored[case.case_id] = SlideResult.load(path)
    trained = _trainer_probabilities(plan.run_dir / "predictions" / f"{mode}.csv")
    patients = {c.case_id: c.patient_id for c in cases}
    facts = _scored_facts(scored, trained, truth, patients, plan.marker)
    facts["failed"] = failed
    return facts


def _scored_facts(
    scored: Mapping[str, Any],
    trained: Mapping[str, Mapping[str, float]],
    truth: Mapping[str, str],
    patients: Mapping[str, str],
    marker: str,
) -> dict[str, Any]:
    """Slides scored, their weighted F1 against the simulator's labels, and the largest
    difference between the scorer's and the trainer's held-out probabilities."""
    from hsafast import evaluate

    probabilities = {
        case: dict(zip(r.markers[marker].classes, r.markers[marker].probabilities, strict=True))
        for case, r in scored.items()
        if r.status == "ok" and marker in r.markers
    }
    gaps = [
        abs(p - trained[case][c])
        for case, ps in probabilities.items()
        if case in trained
        for c, p in ps.items()
    ]
    facts: dict[str, Any] = {
        "slides": len(probabilities),
        "max_difference_from_trainer": max(gaps) if gaps else math.nan,
    }
    labels = {case: truth[case] for case in probabilities if truth.get(case)}
    if labels:
        ev = evaluate(
            {case: probabilities[case] for case in labels},
            labels,
            patients={case: patients[case] for case in labels},
        )
        f1 = ev.metrics["weighted_f1"]
        facts["weighted_f1_truth"] = [f1.estimate, f1.low, f1.high]
    return facts


def _trainer_probabilities(path: Path) -> dict[str, dict[str, float]]:
    """case -> the trainer's held-out probability of each class."""
    with path.open(newline="") as f:
        return {
            row["case_id"]: {k[2:]: float(v) for k, v in row.items() if k.startswith("p_")}
            for row in csv.DictReader(f)
        }


def _report(plan: CohortPlan, progress: Progress) -> Any:
    from hsafast.evaluation import write_report

    return write_report(
        plan.run_dir,
        config=plan.report,
        progress=lambda message: progress(plan.name, f"report: {message}", False),
    )
