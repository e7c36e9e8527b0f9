"""Running one step over a slide, a folder of slides or a cohort manifest.

One slide's failure is recorded (in the summary and in ``failures.csv`` in the
output folder) and the rest go on; long runs show a progress bar and every run
ends with a one-line summary.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hsafast.errors import HsafastError

#: Files a folder scan treats as slides.
SLIDE_SUFFIXES = frozenset(
    {
        ".svs",
        ".tif",
        ".tiff",
        ".ndpi",
        ".vms",
        ".vmu",
        ".scn",
        ".mrxs",
        ".svslide",
        ".bif",
        ".dcm",
        ".png",
        ".jpg",
        ".jpeg",
    }
)


def collect_slides(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand slide files, folders (non-recursive) and manifests into slide paths."""
    from hsafast.manifest import is_manifest, read_manifest

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(
                sorted(
                    p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES
                )
            )
        elif is_manifest(path):
            paths.extend(read_manifest(path).slide_paths())
        else:
            paths.append(path)
    return list(dict.fromkeys(paths))


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self, what: str) -> str:
        parts = [f"{len(self.done)} {what}"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already done")
        parts.append(f"{len(self.failed)} failed")
        return f"hsafast: {', '.join(parts)} in {self.seconds:.1f} s"


def run_batch(
    paths: list[Path],
    step: Callable[[Path], bool | None],
    *,
    what: str,
    out_dir: Path | None = None,
    progress: bool = True,
) -> BatchReport:
    """Apply ``step`` to each path; return False from it to mark 'already done'.

    Expected errors (``HsafastError``) and unexpected ones are both caught per
    slide, so that one bad file never stops a cohort.
    """
    report = BatchReport()
    start = time.perf_counter()
    bar = _progress(len(paths), what) if progress and len(paths) > 1 else None
    for path in paths:
        try:
            if step(path) is False:
                report.skipped.append(path)
            else:
                report.done.append(path)
        except HsafastError as exc:
            report.failed.append((path, exc.reason if exc.path == path else str(exc)))
        except Exception as exc:  # a batch records any failure and goes on
            report.failed.append((path, f"{type(exc).__name__}: {exc}"))
        if bar is not None:
            bar.advance()
    if bar is not None:
        bar.close()
    report.seconds = time.perf_counter() - start
    for path, reason in report.failed:
        print(f"error: {path}: {reason}", file=sys.stderr)
    if out_dir is not None and report.failed:
        _write_failures(out_dir / "failures.csv", report.failed)
    print(report.summary(what))
    return report


def _write_failures(path: Path, failed: list[tuple[Path, str]]) -> None:
    from hsafast._fileio import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows((str(p), r) for p, r in failed)


class _progress:
    """A rich progress bar on a terminal, nothing otherwise."""

    def __init__(self, total: int, what: str) -> None:
        from rich.progress import Progress

        self._bar = Progress(transient=True, disable=not sys.stderr.isatty())
        self._bar.start()
        self._task = self._bar.add_task(what, total=total)

    def advance(self) -> None:
        self._bar.advance(self._task)

    def close(self) -> None:
        self._bar.stop()
