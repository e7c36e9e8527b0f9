"""What the demo leaves behind: the closing table, results.md, summary.json and README.md."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hsafast.demo.pipeline import CohortResult
from hsafast.demo.real import TILE_MPP, TILE_SIZE, RealSlideResult

__all__ = ["DemoResult", "closing_table", "write_outputs"]

FORMAT = "hsafast.demo"
FORMAT_VERSION = 1

#: Written first into the output folder: marks it as the demo's, so that a rerun may
#: replace it (also after a crash that left it half-written).
MARKER = ".hsafast-demo"

#: Column titles of the closing table, per mode of the main cohort.
MODE_TITLES = {
    "slide": "slide mode",
    "patch": "patch mode",
    "classification-only": "classification-only",
}


@dataclass
class DemoResult:
    """Everything the demo measured; ``summary.json`` holds ``to_dict()``."""

    out_dir: str
    real: RealSlideResult
    cohorts: dict[str, CohortResult]
    marker: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """CPU time of the demo and every process it started (user + system)."""
    load_average: tuple[float, float] = (math.nan, math.nan)
    """1-minute load average at the start and the end (other work on the machine)."""
    cores: int = 0
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                **asdict(self),
            }
        )


def closing_table(result: DemoResult) -> Any:
    """Weighted F1 of each model of the main cohort and of the control's slide mode,
    beside the paper's (a different, real dataset): ``hsafast.evaluation``'s table."""
    from hsafast.evaluation import comparison_table

    columns: dict[str, dict[str, tuple[float, float, float]]] = {}
    main = result.cohorts["cohort"]
    for mode, title in MODE_TITLES.items():
        if mode in main.weighted_f1:
            columns[f"Simulated: {title}"] = {result.marker: _triple(main.weighted_f1[mode])}
    control = result.cohorts.get("control")
    if control is not None and "slide" in control.weighted_f1:
        columns["Negative control: slide mode"] = {
            result.marker: _triple(control.weighted_f1["slide"])
        }
    return comparison_table(columns)


def _triple(values: list[float]) -> tuple[float, float, float]:
    estimate, low, high = values
    return (estimate, low, high)


def checks(result: DemoResult) -> list[str]:
    """One sentence per stage check against the simulator's truth."""
    lines = []
    for c in result.cohorts.values():
        name = "Cohort" if c.name == "cohort" else "Control"
        lines.append(
            f"{name} (predictability {c.predictability:g}): {c.labelled} cases of "
            f"{c.patients} patients prepared ({c.failed_cases} failed), {c.tiles} H&E tiles, "
            f"{c.registered} of {c.labelled} pairs registered ({c.pairs} tile pairs); the "
            f"label read from the IHC stain equals the simulator's on "
            f"{c.stain_labels_agree} of {c.labelled} cases."
        )
        for mode, s in c.scored.items():
            f1 = s.get("weighted_f1_truth")
            against = (
                f"weighted F1 {_interval(f1)} against the simulator's labels"
                if f1
                else "no labels to compare"
            )
            lines.append(
                f"{name}, {mode} mode scored from pixels by hsafast.Scorer: {s['slides']} "
                f"held-out slides, {against}; largest difference from the trainer's "
                f"held-out probabilities {s['max_difference_from_trainer']:.1e}."
            )
    return lines


def reading(result: DemoResult) -> list[str]:
    """What the table shows, read from the numbers: whether slide mode separates from
    the negative control, and which models gave every held-out case of a fold one class."""
    main, control = result.cohorts["cohort"], result.cohorts.get("control")
    lines = []
    ours, theirs = main.weighted_f1.get("slide"), control and control.weighted_f1.get("slide")
    if ours and theirs:
        if ours[1] > theirs[2]:
            lines.append(
                "Slide mode's interval lies above the negative control's: on this "
                "simulated cohort the method learns what the H&E shows of the marker."
            )
        else:
            lines.append(
                f"Slide mode's weighted F1, {_interval(ours)}, overlaps the negative "
                f"control's, {_interval(theirs)}: this run shows every stage working, not "
                f"that the method learns; {main.labelled} small simulated cases and a tile "
                "encoder trained from scratch are too little to learn from."
            )
    for c in result.cohorts.values():
        flat = [f"{mode} {n}/{c.folds}" for mode, n in c.one_class_folds.items() if n]
        if flat:
            lines.append(
                f"{c.name.capitalize()}: folds in which every held-out case got the same "
                f"class (the model separates none of them): {', '.join(flat)}."
            )
    return lines


def _interval(values: list[float]) -> str:
    estimate, low, high = values
    if math.isnan(low):
        return f"{estimate:.3f}"
    return f"{estimate:.3f} ({low:.3f}-{high:.3f})"


def results_markdown(result: DemoResult) -> str:
    """results.md: the closing table, the checks and where the reports are."""
    table = closing_table(result)
    lines = [
        "# hsafast demo: results",
        "",
        f"Weighted F1 on held-out cases ({result.cohorts['cohort'].folds}-fold "
        "cross-validation by patient), "
        f"{_marker_name(result.marker)}, 95% bootstrap CI resampling patients.",
        "",
        "| " + " | ".join(table.header) + " |",
        "|" + "---|" * len(table.header),
        *("| " + " | ".join(row) + " |" for row in table.rows),
        "",
        f"*{table.caption}*",
        "",
        "The simulated columns come from slides made by `hsafast.synth` (a test pattern "
        "with a known truth, not tissue); the paper's column comes from real GI and lung "
        "slides. They measure different things and are set side by side only as a "
        "reference. The negative control is the same simulated patients with the link "
        "between morphology and expression cut (predictability 0): its weighted F1 shows "
        "what the pipeline reaches when there is nothing to learn.",
        "",
        *(f"- {line}" for line in reading(result)),
        "",
        "## Checks against the simulator's truth",
        "",
        *(f"- {line}" for line in checks(result)),
        "",
        "## Reports",
        "",
        *(
            f"- {c.name}: `{Path(c.report).relative_to(result.out_dir)}`"
            for c in result.cohorts.values()
            if c.report
        ),
        "",
        "## Time",
        "",
        f"{result.seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU on {result.cores} cores "
        f"(load average {result.load_average[0]:.1f} at the start, "
        f"{result.load_average[1]:.1f} at the end). Each cohort runs in its own process; "
        "its CPU seconds are its wall time when it has a core to itself, so other work "
        "on the machine shows as wall above CPU.",
        "",
        "| step | " + " | ".join(f"{name} wall | {name} CPU" for name in result.cohorts) + " |",
        "|---|" + "---|---|" * len(result.cohorts),
        *(
            f"| {step} | "
            + " | ".join(
                f"{c.seconds.get(step, math.nan):.0f} s | {c.cpu_seconds.get(step, math.nan):.0f} s"
                for c in result.cohorts.values()
            )
            + " |"
            for step in ("simulate", "train", "score", "report")
        ),
        "",
    ]
    return "\n".join(lines)


def readme(result: DemoResult) -> str:
    """README.md of the output folder: what each file is."""
    stem = Path(result.real.slide).stem
    main = result.cohorts["cohort"]
    control = result.cohorts.get("control")
    sizes = f"{main.cases} cases" + (f", control {control.cases}" if control else "")
    files = [
        ("results.md", "the closing table (weighted F1 beside the paper's and the negative "
         "control's), checks against the simulator's truth, time per step"),
        ("summary.json", f"every number of `results.md`, for machines (`format: {FORMAT}`)"),
        (f"real/{stem}.overlay.png", f"the real slide, glass dimmed, tissue outlined in green, "
         f"each kept {TILE_SIZE}-px tile at {TILE_MPP} um/px outlined in blue"),
        (f"real/{stem}.mask.png", "the tissue mask (white: tissue)"),
        (f"real/{stem}.geojson", "the tissue outline as QuPath GeoJSON (File > Import objects)"),
        (f"real/{stem}.h5", "the tile grid's level-0 coordinates (TRIDENT/CLAM layout, "
         "`hsafast.features`)"),
        ("cohort/manifest.csv", "the simulated cohort: case, patient, H&E and IHC slide, "
         "marker, the simulator's label"),
        ("cohort/slides/", "pyramidal TIFF slides, H&E and IHC of each case, 0.5 um/px"),
        ("cohort/truth/", "the simulator's truth per case: cells, stains, deformation, "
         "landmarks"),
        ("run/", "the training run (`hsafast train` layout, docs/training.md)"),
        ("run/run.json", "configuration, folds, and per case the stain-derived label, tiles, "
         "pairs, registration"),
        ("run/models/<mode>/fold<k>/", "one model bundle per mode and fold (`config.json` + "
         "`weights.safetensors`) and its training log"),
        ("run/predictions/<mode>.csv", "held-out predictions pooled over folds; "
         "`patch-tiles.csv`: per-tile positivity"),
        ("run/embeddings/<mode>.npz", "H&E and IHC slide embeddings (alignment analysis, "
         "linear probe)"),
        ("run/features/, run/cache/", "tile features per fold, prepared tiles per case"),
        ("run/scores/<mode>/fold<k>/", "`hsafast.Scorer` on that fold's held-out H&E slides: "
         "`<case>.HE.json`, heatmaps (GeoJSON, attention and positivity PNGs), "
         "`results.csv`/`.parquet`; `held-out.csv` lists the slides"),
        ("run/report/", "the evaluation report: `report.md`, `report.html`, `summary.json`, "
         "ROC, confusion, UMAP and example figures"),
        ("control/, control-run/", "the negative control (predictability 0: same patients, "
         "no link between morphology and expression), laid out as `cohort/` and `run/`"),
        (MARKER, "marks the folder as the demo's: a rerun replaces it"),
    ]  # fmt: skip
    rows = "\n".join(
        "| " + ", ".join(f"`{p}`" for p in path.split(", ")) + f" | {what} |"
        for path, what in files
    )
    return f"""# hsafast demo output

Made by `hsafast demo` (hsafast {result.versions.get("hsafast", "")}) in {result.seconds:.0f} s.
It runs the whole HistoStainAlign method on an embedded default: one real H&E slide
through tissue detection, tiling and tile reading, then simulated paired H&E/IHC
cohorts ({sizes}) through stain-derived labels, registration, training of slide mode,
patch mode and the classification-only baseline, scoring of held-out slides and the
evaluation report. Start with `results.md`, then `run/report/report.html`.

**The cohorts are simulated** (`hsafast.synth`: synthetic tissue with a known truth).
Their numbers show that each stage works and what the method learns on the
simulator; they say nothing about accuracy on real slides.

| path | what it is |
|---|---|
{rows}

Rerun the report alone with `hsafast evaluate {result.out_dir}/run`.
"""


def write_outputs(result: DemoResult) -> None:
    from hsafast._fileio import atomic_write_text

    out = Path(result.out_dir)
    atomic_write_text(out / "summary.json", json.dumps(result.to_dict(), indent=1) + "\n")
    atomic_write_text(out / "results.md", results_markdown(result))
    atomic_write_text(out / "README.md", readme(result))


def versions() -> dict[str, str]:
    import numpy
    import torch

    from hsafast import __version__

    return {
        "hsafast": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
    }


def _marker_name(marker: str) -> str:
    from hsafast.evaluation.rundir import marker_name

    return marker_name(marker)


def _clean(value: Any) -> Any:
    """JSON-ready: NaN -> None, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
