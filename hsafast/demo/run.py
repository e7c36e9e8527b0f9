"""``run_demo``: the output folder, the real slide, both cohorts, the closing outputs.

The folder exists only when the demo finished: a previous demo's folder is replaced,
any other non-empty folder is refused, and a failure or an interrupt removes what
this run wrote. The main cohort and the negative control run in two processes at
once (``DemoConfig.workers``); their progress comes back through a queue.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import resource
import shutil
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from hsafast.demo.config import DemoConfig
from hsafast.demo.outputs import MARKER, DemoResult, versions, write_outputs
from hsafast.demo.pipeline import CohortPlan, CohortResult, Progress, run_cohort, training_config
from hsafast.demo.real import TILE_MPP, TILE_SIZE, check_slide, run_real
from hsafast.errors import HsafastError, InvalidParameterError

__all__ = ["plans", "run_demo"]

log = logging.getLogger("hsafast.demo")


def plans(out: Path, config: DemoConfig) -> list[CohortPlan]:
    """The main cohort and the negative control (same patients and seed, predictability 0).

    The control's report skips the UMAP (its numba compilation alone takes 20-50 s of a
    2-core CPU in each process) and the example heatmaps: what it has to show is its
    weighted F1, and the main cohort's report draws both.
    """
    threads = 1 if config.workers > 1 else 0
    prep = 1 if config.workers > 1 else 0
    common: dict[str, Any] = {
        "slide_size": config.slide_size,
        "marker": config.marker,
        "seed": config.seed,
        "threads": threads,
        "workers": prep,
        "training": config.training,
    }
    report = config.report_config()
    control_report = replace(report, embedding_map="pca", examples=0)
    return [
        CohortPlan(
            "cohort", out / "cohort", out / "run", config.cases,
            predictability=config.predictability, report=report, **common,
        ),
        CohortPlan(
            "control", out / "control", out / "control-run", config.control_cases,
            predictability=0.0, report=control_report, **common,
        ),
    ]  # fmt: skip


def run_demo(
    out_dir: str | os.PathLike[str],
    config: DemoConfig | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the whole method on the embedded default into ``out_dir`` (see the package)."""
    from hsafast.data import sample_slide_path

    config = config or DemoConfig()
    say = progress or (lambda _pipeline, _message, _final: None)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    load_start = os.getloadavg()[0]
    slide = Path(config.slide) if config.slide is not None else sample_slide_path()
    if config.slide is not None:
        check_slide(slide)
    out = Path(out_dir).resolve()
    cohort_plans = plans(out, config)
    for plan in cohort_plans:
        training_config(plan)  # unknown or invalid training keys fail before any file
    _claim(out)
    try:
        say("real", f"real slide {slide.name}: tissue, tile grid, reading", False)
        real = run_real(slide, out / "real")
        say(
            "real",
            f"{slide.name}: {real.tissue_mm2:g} mm2 of tissue, {real.tiles} tiles of "
            f"{TILE_SIZE} px at {TILE_MPP} um/px read at {real.tiles_per_second:,.0f} tiles/s "
            f"({real.seconds:.1f} s)",
            True,
        )
        cohorts = _run_cohorts(cohort_plans, config.workers, say)
        result = DemoResult(
            out_dir=str(out),
            real=real,
            cohorts={c.name: c for c in cohorts},
            marker=config.marker,
            seconds=round(time.perf_counter() - t0, 1),
            cpu_seconds=round(_cpu_seconds() - cpu0, 1),
            load_average=(round(load_start, 2), round(os.getloadavg()[0], 2)),
            cores=os.cpu_count() or 0,
            versions=versions(),
        )
        write_outputs(result)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return result


def _claim(out: Path) -> None:
    """Make ``out`` an empty demo folder: new, empty, or a previous demo's (replaced)."""
    if out.exists() and not out.is_dir():
        raise InvalidParameterError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise InvalidParameterError(
                "the output folder is not empty and holds no previous demo; "
                "choose a new or empty folder",
                out,
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by hsafast demo; a rerun replaces this folder\n")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# -- the two cohorts ----------------------------------------------------------------------------


def _run_cohorts(cohort_plans: list[CohortPlan], workers: int, say: Progress) -> list[CohortResult]:
    if workers <= 1:
        return [run_cohort(plan, say) for plan in cohort_plans]
    context = multiprocessing.get_context("spawn")  # torch and OpenCV threads are not fork-safe
    messages: Any = context.Queue()
    processes = [
        context.Process(target=_child, args=(plan, messages), name=f"hsafast-demo-{plan.name}")
        for plan in cohort_plans
    ]
    results: dict[str, CohortResult] = {}
    try:
        for p in processes:
            p.start()
        while len(results) < len(processes):
            try:
                kind, name, payload = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in processes if not p.is_alive() and p.exitcode != 0]
                if dead:
                    raise HsafastError(
                        f"the {dead[0].name.rpartition('-')[2]} process ended with exit "
                        f"code {dead[0].exitcode}"
                    ) from None
                continue
            if kind == "progress":
                say(name, *payload)
            elif kind == "done":
                results[name] = payload
            else:
                raise _child_error(name, payload)
        for p in processes:
            p.join()
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
                p.join()
    return [results[plan.name] for plan in cohort_plans]


def _child(plan: CohortPlan, messages: Any) -> None:
    """One cohort in its own process; progress, the result or the error go to ``messages``."""
    try:
        result = run_cohort(
            plan, lambda name, message, final: messages.put(("progress", name, (message, final)))
        )
        messages.put(("done", plan.name, result))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # reported by the parent, which stops the other cohort
        error = exc.reason if isinstance(exc, HsafastError) else f"{type(exc).__name__}: {exc}"
        path = str(exc.path) if isinstance(exc, HsafastError) and exc.path else None
        messages.put(
            ("error", plan.name, (type(exc).__name__, error, path, traceback.format_exc()))
        )


def _child_error(name: str, payload: tuple[str, str, str | None, str]) -> HsafastError:
    kind, reason, path, trace = payload
    log.debug("the %s process failed (%s):\n%s", name, kind, trace)
    return HsafastError(f"{name}: {reason}", path)
