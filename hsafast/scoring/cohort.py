"""Scoring a cohort into a folder: per-slide JSON and heatmaps, one table for the cohort.

    out_dir/<slide_id>.json                       SlideResult
    out_dir/heatmaps/<slide_id>.<marker>.*        GeoJSON tiles, attention/positivity PNGs
    out_dir/results.parquet, results.csv          one row per slide and marker
    out_dir/failures.csv                          slides that could not be scored, and why

`score_slide_files` is the whole job of one slide (score, then write its files): the unit a
cohort runner distributes. `score_cohort` runs the local loop: it skips slides whose JSON
exists (resume), scores the rest through the scorer's pipeline (the next slide is read while
one is encoded), records each failure and goes on, and rewrites the cohort table from every
slide's JSON at the end, so an interrupted and resumed run gives the same table.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsafast.errors import HsafastError, InvalidParameterError
from hsafast.scoring.results import SlideResult, failure_row, write_cohort_table

if TYPE_CHECKING:
    from hsafast.scoring.scorer import Scorer

log = logging.getLogger("hsafast.scoring")

__all__ = ["CohortReport", "SlideOutputs", "cohort_items", "score_cohort", "score_slide_files"]

EXECUTORS = ("local",)


@dataclass(frozen=True)
class SlideOutputs:
    """Where one slide's files go."""

    json: Path
    heatmaps: Path | None
    """Folder for the heatmaps (None: no heatmaps)."""

    @classmethod
    def in_folder(cls, out_dir: Path, slide_id: str, heatmaps: bool = True) -> SlideOutputs:
        from hsafast._fileio import safe_id

        return cls(
            out_dir / f"{safe_id(slide_id)}.json", out_dir / "heatmaps" if heatmaps else None
        )


@dataclass
class CohortReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    table: tuple[Path, Path] | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        parts = [f"{len(self.done)} slides scored"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already done")
        parts.append(f"{len(self.failed)} failed")
        return f"hsafast: {', '.join(parts)} in {self.seconds:.1f} s"


def cohort_items(inputs: Any) -> list[tuple[str, Path]]:
    """(slide_id, path) of H&E slides or FeatureFiles: from paths, folders and manifests.

    A manifest's slides are named by case_id; files by their sanitised stem.
    """
    from hsafast._fileio import safe_id
    from hsafast.cohort import SLIDE_SUFFIXES
    from hsafast.manifest import is_manifest, read_manifest

    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    items: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for p in sorted(path.iterdir()):
                if p.is_file() and p.suffix.lower() in (*SLIDE_SUFFIXES, ".h5", ".hdf5"):
                    items.append((safe_id(p.stem), p))
        elif is_manifest(path):
            items.extend((c.case_id, c.he_path) for c in read_manifest(path).cases)
        else:
            items.append((safe_id(path.stem), path))
    seen: dict[str, Path] = {}
    for slide_id, path in items:
        if slide_id in seen and seen[slide_id] != path:
            raise InvalidParameterError(
                f"two slides would be saved as {slide_id!r}: {seen[slide_id]} and {path}"
            )
        seen[slide_id] = path
    return list(seen.items())


def write_slide_files(result: SlideResult, outputs: SlideOutputs) -> None:
    """Writes the JSON (last, so that its presence marks the slide done) and the heatmaps."""
    if outputs.heatmaps is not None and result.n_tiles:
        from hsafast.heatmaps import save_heatmaps

        thumbnail, size0 = _thumbnail(result.path)
        save_heatmaps(result, outputs.heatmaps, thumbnail, size0)
    result.save(outputs.json)


def score_slide_files(
    scorer: Scorer, slide_id: str, source: Any, outputs: SlideOutputs
) -> SlideResult:
    """The job of one slide: score it and write its files; raises on failure."""
    result = scorer.score(source, slide_id=slide_id)
    write_slide_files(result, outputs)
    return result


def _thumbnail(path: str | None) -> tuple[Any, tuple[int, int] | None]:
    """The slide's thumbnail and level-0 size for overlays (None, None for feature files)."""
    from hsafast.scoring.scorer import FEATURE_SUFFIXES

    if path is None or Path(path).suffix.lower() in FEATURE_SUFFIXES:
        return None, None
    from hsafast.slides import open_slide

    try:
        with open_slide(path) as slide:
            image, _ = slide.thumbnail(1024)
            return image, slide.dimensions
    except HsafastError as exc:
        log.warning("no thumbnail for the heatmap of %s: %s", path, exc.reason)
        return None, None


def score_cohort(
    scorer: Scorer,
    inputs: Any,
    out_dir: str | os.PathLike[str],
    executor: str = "local",
    *,
    heatmaps: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> CohortReport:
    """Scores every slide of `inputs` into out_dir; see the module docstring."""
    if executor not in EXECUTORS:
        raise InvalidParameterError(
            f"executor {executor!r} is not available for scoring yet; use one of {EXECUTORS}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = cohort_items(inputs)
    report = CohortReport()
    start = time.perf_counter()
    outputs = {sid: SlideOutputs.in_folder(out, sid, heatmaps) for sid, _ in items}
    todo = []
    for sid, path in items:
        if not overwrite and outputs[sid].json.is_file():
            report.skipped.append(sid)
        else:
            todo.append((sid, path))
    failures: dict[str, str] = {}
    bar = _Progress(len(todo)) if progress and len(todo) > 1 else None
    for (sid, _path), result in scorer.score_iter(todo):
        if isinstance(result, BaseException):
            failures[sid] = result.reason if isinstance(result, HsafastError) else str(result)
        else:
            try:
                write_slide_files(result, outputs[sid])
            except HsafastError as exc:
                failures[sid] = exc.reason
            except OSError as exc:
                failures[sid] = f"cannot write its files: {exc}"
            else:
                report.done.append(sid)
        if bar is not None:
            bar.advance()
    if bar is not None:
        bar.close()
    report.failed = [(sid, failures[sid]) for sid, _ in todo if sid in failures]
    report.table = write_cohort_table(_rows(items, outputs, failures), out)
    if report.failed:
        _write_failures(out / "failures.csv", [(str(dict(items)[s]), r) for s, r in report.failed])
        for sid, reason in report.failed:
            print(f"error: {sid}: {reason}", file=sys.stderr)
    report.seconds = time.perf_counter() - start
    return report


def _rows(
    items: Iterable[tuple[str, Path]], outputs: dict[str, SlideOutputs], failures: dict[str, str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for sid, path in items:
        if sid in failures:
            rows.append(failure_row(sid, str(path), failures[sid]))
        elif outputs[sid].json.is_file():
            rows.extend(SlideResult.load(outputs[sid].json).rows())
    return rows


def _write_failures(path: Path, failed: list[tuple[str, str]]) -> None:
    import csv

    from hsafast._fileio import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows(failed)


class _Progress:
    def __init__(self, total: int) -> None:
        from rich.progress import Progress

        self._bar = Progress(transient=True, disable=not sys.stderr.isatty())
        self._bar.start()
        self._task = self._bar.add_task("scoring", total=total)

    def advance(self) -> None:
        self._bar.advance(self._task)

    def close(self) -> None:
        self._bar.stop()
