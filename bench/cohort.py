"""Cohort runner throughput: ``python -m bench cohort [--cases N] [--size PX] [--repeats R]``.

Over one simulated paired cohort (``hsafast.synth``; H&E and IHC slides, pyramidal JPEG
TIFF), side by side in one process:

1. ``tile`` (every slide) and ``quantify`` (the IHC slides) through ``run_cohort`` with
   the local executor (1 and 2 threads), local processes (2) and Ray (2 actors on a
   local cluster): items per hour, wall time per run (worker start included), and the
   ideal 2-worker rate (twice the 1-thread rate) as the physical limit on 2 cores.
2. The peer of the runner: the same step functions in a plain loop (no staging, no
   journal, no hashing), 1 thread; the runner's overhead is its CPU time over this loop's,
   per item ("CPU ms per item" of the 1-thread row; CPU time of this process, which
   depends less than wall time on what else runs on the machine).
3. A resume of a finished folder (every item skipped): CPU milliseconds per item.
4. The journal alone: one item line appended and fsynced, per line.

Each row is the median of ``--repeats`` runs into fresh output folders. Ray's cluster
start is measured once and reported beside (a run pays only its actors' start).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import Table


class _FirstItem:
    """A run's progress hook that notes when its first item finished."""

    def __init__(self) -> None:
        self.first: float | None = None

    def start(self, total: int, skipped: int) -> None:
        pass

    def advance(self, item_id: str, ok: bool) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def stop(self) -> None:
        pass


@dataclass
class _Timing:
    seconds: float
    """Median wall time of fresh runs."""
    first: float
    """Median time until the first item finished (worker start + one item)."""
    cpu: float
    """Median CPU time of this process (all its threads; not of worker processes)."""


def _median_run(run: Callable[[Path, _FirstItem], Any], root: Path, repeats: int) -> _Timing:
    times, firsts, cpus = [], [], []
    for i in range(repeats):
        out = root / f"run{i}"
        hook = _FirstItem()
        t0, c0 = time.perf_counter(), time.process_time()
        run(out, hook)
        end, c1 = time.perf_counter(), time.process_time()
        times.append(end - t0)
        firsts.append((hook.first or end) - t0)
        cpus.append(c1 - c0)
        shutil.rmtree(out, ignore_errors=True)
    return _Timing(*(statistics.median(v) for v in (times, firsts, cpus)))


def _bare_loop(task: Any, items: list[Any], out: Path) -> None:
    """The step functions alone: what a hand-written loop over the slides would do."""
    from hsafast.cohort.task import ItemContext

    out.mkdir(parents=True)
    task.setup()
    for item in items:
        task.run(item, ItemContext(out, task.outputs(item), task.fallbacks()))


def _journal_append_seconds(root: Path, lines: int = 200) -> float:
    from hsafast.cohort import Journal

    record = {
        "kind": "item",
        "task": "tile",
        "item": "case001.ki67",
        "status": "done",
        "fingerprint": "0123456789abcdef",
        "outputs": {"coords": {"name": "case001.ki67.h5", "bytes": 123456, "sha256": "0" * 64}},
        "seconds": 1.234,
    }
    with Journal.open(root / "journal") as journal:
        t0 = time.perf_counter()
        for _ in range(lines):
            journal.append(record)
        return (time.perf_counter() - t0) / lines


def _measure(
    table: Table,
    name: str,
    task: Any,
    items: list[Any],
    executors: dict[str, Callable[[], Any]],
    root: Path,
    repeats: int,
) -> None:
    """The rows of one step: bare loop, every executor, the 2-worker ideal, a resume."""
    from hsafast.cohort import run_cohort

    n = len(items)
    _bare_loop(task, items, root / f"warm-up-{name}")  # imports, caches: for every row alike
    bare = _median_run(lambda out, _: _bare_loop(task, items, out), root, repeats)
    table.add(
        name, "bare loop (no runner), 1 thread", n, bare.seconds, "", bare.cpu,
        3600 * n / bare.seconds, "", 1.0, "",
    )  # fmt: skip
    single = None
    for how, make in executors.items():

        def run(out: Path, hook: _FirstItem, make: Callable[[], Any] = make) -> None:
            run_cohort(task, items, out, executor=make(), progress=hook)

        t = _median_run(run, root, repeats)
        single = single or t.seconds
        # the runner's own cost: CPU time over the bare loop's (robust to other load)
        overhead = 1e3 * (t.cpu - bare.cpu) / n if how.endswith("1 thread") else ""
        table.add(
            name, f"run_cohort, {how}", n, t.seconds, t.first, t.cpu, 3600 * n / t.seconds,
            single / t.seconds, bare.seconds / t.seconds, overhead,
        )  # fmt: skip
    assert single is not None
    table.add(
        name, "ideal 2 workers (2 x 1 thread)", n, single / 2, "", "", 7200 * n / single, 2.0,
        "", "",
    )  # fmt: skip
    finished = root / f"finished-{name}"
    run_cohort(task, items, finished)
    resume = _median_run(lambda *_: run_cohort(task, items, finished), root, repeats)
    table.add(
        name, "resume, all done (skip check)", n, resume.seconds, "", resume.cpu,
        3600 * n / resume.seconds, "", "", 1e3 * resume.cpu / n,
    )  # fmt: skip


def main(argv: list[str]) -> int:
    from hsafast.cohort import LocalExecutor, slide_items
    from hsafast.cohort.ray_executor import RayExecutor, start_local_cluster
    from hsafast.cohort.tasks import QuantifyTask, TileTask
    from hsafast.synth import make_cohort

    parser = argparse.ArgumentParser(prog="python -m bench cohort")
    parser.add_argument("--cases", type=int, default=6, help="simulated cases (2 slides each)")
    parser.add_argument("--size", type=int, default=4096, help="slide side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    parser.add_argument("--cohort", default=None, help="reuse (or keep) the simulated cohort here")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="hsafast-bench-cohort-"))
    cohort_dir = Path(args.cohort) if args.cohort else root / "cohort"
    cohort = make_cohort(cohort_dir, args.cases, slide_size=args.size, seed=0)
    manifest = cohort.manifest_path
    jobs = {
        "tile": (TileTask(), slide_items([manifest])),
        "quantify": (QuantifyTask(), slide_items([manifest], stains=("ihc",))),
    }
    executors: dict[str, Callable[[], Any]] = {
        "local, 1 thread": lambda: LocalExecutor(1),
        "local, 2 threads": lambda: LocalExecutor(2),
        "process, 2 processes": lambda: LocalExecutor(2, processes=True),
    }
    ray_start = None
    if not args.no_ray:
        t0 = time.perf_counter()
        start_local_cluster(2)
        ray_start = time.perf_counter() - t0
        executors["ray, 2 actors"] = lambda: RayExecutor(2)

    columns = ["step", "how", "items", "seconds", "first item s", "CPU s", "items/hour"]
    columns += ["vs 1 thread", "vs bare loop", "CPU ms per item"]
    table = Table("cohort", columns)
    try:
        for name, (task, items) in jobs.items():
            _measure(table, name, task, items, executors, root, args.repeats)
    finally:
        if ray_start is not None:
            import ray

            ray.shutdown()
        append = _journal_append_seconds(root)
        if not args.cohort:
            shutil.rmtree(root, ignore_errors=True)
    table.notes = {
        "cases": args.cases,
        "slide_size": args.size,
        "repeats": args.repeats,
        "ray_local_cluster_start_seconds": ray_start,
        "journal_append_fsync_ms": append * 1e3,
        "note": "medians of fresh runs; worker/actor start included in each run",
    }
    table.print()
    print(
        f"journal line append + fsync: {append * 1e3:.2f} ms; "
        + (f"Ray local cluster start: {ray_start:.1f} s" if ray_start else "Ray rows skipped")
    )
    table.save(["ray", "h5py"])
    return 0
