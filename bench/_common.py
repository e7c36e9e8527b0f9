"""Shared benchmark plumbing: timing with medians, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"


def median_seconds(
    fn: Callable[[], object],
    repeats: int = 5,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class WorkerThread:
    """One long-lived thread that runs timed calls, so that no peer runs on the main thread.

    glibc's allocator serves the main thread from the brk heap, which it trims on free, so
    large temporaries freed there are faulted in again on the next call; worker threads
    keep their arenas. Running every peer here gives all of them the same footing.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bench")

    def call(self, fn: Callable[[], object]) -> object:
        return self._pool.submit(fn).result()

    def close(self) -> None:
        self._pool.shutdown()


def package_versions(names: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def machine() -> dict[str, Any]:
    from hsafast.info import build_info

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "build_info": build_info(),
    }


@dataclass
class Table:
    """Rows of one benchmark: printed as a table and saved as JSON."""

    name: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def print(self) -> None:
        cells = [self.columns] + [[_fmt(v) for v in r] for r in self.rows]
        widths = [max(len(str(r[i])) for r in cells) for i in range(len(self.columns))]
        for j, r in enumerate(cells):
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
            if j == 0:
                print("  ".join("-" * w for w in widths))

    def save(self, versions: list[str]) -> Path:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path = OUT_DIR / f"{self.name}.json"
        payload = {
            "benchmark": self.name,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "versions": package_versions(["hsafast", "numpy", *versions]),
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
        }
        path.write_text(json.dumps(payload, indent=2, default=str))
        return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)
