"""``run_cohort``: run a task over work items into an output folder, resumably.

The driver (this module) alone touches the output folder's final names and the
journal. Per item: the worker writes into a private staging folder; the driver moves
the files into place, removes the item's older outputs that the new ones do not
replace, syncs the folder, then appends the item's journal line. A rerun skips an
item only if its last line says done with the same parameters, the same inputs and
output files of the recorded sizes; parameters that differ from those of finished
items are refused (their outputs would mix in one folder) unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hsafast.cohort.executors import Executor, LocalExecutor
from hsafast.cohort.fingerprint import (
    canonical,
    describe_changes,
    fingerprint,
    input_signature,
    task_params,
)
from hsafast.cohort.ids import check_unique
from hsafast.cohort.items import WorkItem
from hsafast.cohort.journal import (
    FAILURES_NAME,
    JOURNAL_NAME,
    STATE_DIR,
    ItemState,
    Journal,
    read_records,
)
from hsafast.cohort.task import Outcome, Task
from hsafast.errors import HsafastError, InvalidParameterError

log = logging.getLogger(__name__)


class MixedOutputsError(HsafastError):
    """The output folder holds items made with other parameters; refusing to mix them."""


class OutputError(HsafastError):
    """Outputs cannot be written (disk full, permission denied): the run stopped."""


class RunInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C); ``report`` holds what was finished and recorded."""

    def __init__(self, report: RunReport) -> None:
        super().__init__("interrupted")
        self.report = report


class Progress(Protocol):
    """What a run reports as it goes (the command line draws a progress bar from it)."""

    def start(self, total: int, skipped: int) -> None: ...

    def advance(self, item_id: str, ok: bool) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Failure:
    item: str
    path: str
    """The input file the failure concerns (the item's first input if none is named)."""
    reason: str


@dataclass
class RunReport:
    """What one run did."""

    task: str
    out_dir: Path
    executor: str
    fingerprint: str
    total: int = 0
    done: list[str] = field(default_factory=list)
    """Items computed by this run."""
    skipped: list[str] = field(default_factory=list)
    """Items already done with the same parameters and inputs."""
    failed: list[Failure] = field(default_factory=list)
    removed: int = 0
    """Items made with other parameters whose outputs ``overwrite`` removed."""
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.interrupted else 0


def run_cohort(
    task: Task,
    items: Sequence[WorkItem],
    out_dir: str | os.PathLike[str],
    *,
    executor: Executor | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    reason_text: Callable[[str], str] | None = None,
) -> RunReport:
    """Run ``task`` on every item into ``out_dir``; skip what is done, record the rest.

    ``overwrite`` recomputes every item, and first removes the outputs of items made
    with other parameters. ``reason_text`` rewrites failure reasons for
    ``failures.csv`` and the report (the command line names its own flags there).
    Raises :class:`MixedOutputsError`, :class:`OutputError`, :class:`RunInterrupted`.
    """
    if not items:
        raise InvalidParameterError("no items to run")
    check_unique(item.id for item in items)
    task.check(items)
    executor = executor or LocalExecutor()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder: {exc.strerror}", out) from None
    start = time.perf_counter()
    fp = fingerprint(task)
    report = RunReport(task.name, out, executor.describe(), fp, total=len(items))
    with Journal.open(out) as journal:
        run = _Run(task, journal, fp, report, reason_text or (lambda text: text))
        run.retire_other_params(overwrite)
        todo = run.plan(items, overwrite)
        journal.append(
            {
                "kind": "run",
                "task": task.name,
                "fingerprint": fp,
                "params": task_params(task),
                "fallbacks": run.fallbacks,
                "executor": report.executor,
                "items": len(items),
                "to_run": len(todo),
                "overwrite": overwrite,
                "host": os.uname().nodename,
                "pid": os.getpid(),
            }
        )
        if progress is not None:
            progress.start(len(todo), len(report.skipped))
        try:
            outcomes = executor.map(task, todo, run.staging) if todo else iter(())
            try:
                for outcome in outcomes:
                    with _deferred_interrupt():
                        run.commit(outcome)
                    if progress is not None:
                        progress.advance(outcome.item_id, outcome.ok)
            finally:
                close = getattr(outcomes, "close", None)
                if close is not None:
                    close()  # stops the executor: cancels what has not started
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            if progress is not None:
                progress.stop()
            report.seconds = time.perf_counter() - start
            run.close(items)
        if report.interrupted:
            raise RunInterrupted(report)
        done = [item for item in items if run.is_done(item.id)]
        task.finish(out, done, report.failed)
    return report


class _Run:
    """The driver's state during one run (journal states, staging, the report)."""

    def __init__(
        self,
        task: Task,
        journal: Journal,
        fp: str,
        report: RunReport,
        reason_text: Callable[[str], str],
    ) -> None:
        self.task = task
        self.journal = journal
        self.fp = fp
        self.report = report
        self.reason_text = reason_text
        self.out = journal.out_dir
        self.fallbacks = canonical(task.fallbacks())
        self.states = {item: s for (_, item), s in journal.states(task.name).items()}
        self.items: dict[str, WorkItem] = {}
        self.signatures: dict[str, str] = {}
        self.staging = self.out / STATE_DIR / "staging" / task.name
        shutil.rmtree(self.staging, ignore_errors=True)  # left by a killed run; we hold the lock

    def same_params(self, state: ItemState) -> bool:
        return state.fingerprint == self.fp and all(
            self.fallbacks.get(k) == v for k, v in state.uses.items()
        )

    def retire_other_params(self, overwrite: bool) -> None:
        """Refuse, or with ``overwrite`` remove, outputs made with other parameters."""
        stale = [s for s in self.states.values() if s.outputs and not self.same_params(s)]
        if not stale:
            return
        if not overwrite:
            raise MixedOutputsError(
                f"{len(stale)} {self.task.name} item(s) here were made with other parameters "
                f"({self._changes(stale[0])}); use another output folder, or overwrite=True "
                "to replace them",
                self.out,
            )
        for state in stale:
            self._remove_outputs(state, keep=set())
            self._append_removed(state)
        self.report.removed = len(stale)

    def _changes(self, state: ItemState) -> str:
        if state.fingerprint == self.fp:
            used = {k: self.fallbacks.get(k) for k in state.uses}
            return describe_changes(state.uses, used)
        old = self.journal.runs(self.task.name).get(state.fingerprint)
        if old is None:
            return "their parameters are not recorded"
        return describe_changes(old, task_params(self.task))

    def plan(self, items: Sequence[WorkItem], overwrite: bool) -> list[WorkItem]:
        todo = []
        for item in items:
            self.items[item.id] = item
            signature = input_signature(item, self.task.item_params(item))
            self.signatures[item.id] = signature
            state = self.states.get(item.id)
            if (
                not overwrite
                and state is not None
                and state.status == "done"
                and self.same_params(state)
                and state.input_signature == signature
                and self._intact(state)
            ):
                self.report.skipped.append(item.id)
            else:
                todo.append(item)
        return todo

    def _intact(self, state: ItemState) -> bool:
        for output in state.outputs.values():
            try:
                name = str(output["name"])
                if Path(name).name != name or (self.out / name).stat().st_size != output["bytes"]:
                    return False
            except (OSError, KeyError, TypeError):
                return False
        return True

    def commit(self, outcome: Outcome) -> None:
        """Move an item's outputs into place and record it (the driver only)."""
        item = self.items[outcome.item_id]
        staging = Path(outcome.staging)
        if outcome.output_error:
            shutil.rmtree(staging, ignore_errors=True)
            raise OutputError(
                f"cannot write outputs: {outcome.reason} (while running {item.id})", self.out
            )
        old = self.states.get(item.id)
        try:
            for output in outcome.files.values():
                os.replace(staging / output.name, self.out / output.name)
            if old is not None:
                self._remove_outputs(old, keep={o.name for o in outcome.files.values()})
            _sync_folder(self.out)
        except OSError as exc:
            raise OutputError(f"cannot move outputs into place: {exc.strerror}", self.out) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        status = "done" if outcome.ok else "failed"
        path = self._failure_path(item, outcome)
        record: dict[str, Any] = {
            "kind": "item",
            "task": self.task.name,
            "item": item.id,
            "status": status,
            "fingerprint": self.fp,
            "uses": canonical(outcome.uses),
            "inputs": {role: os.fspath(p) for role, p in item.inputs.items()},
            "input_signature": self.signatures[item.id],
            "outputs": {role: vars(o) for role, o in outcome.files.items()},
            "seconds": round(outcome.seconds, 4),
            "cpu_seconds": round(outcome.cpu_seconds, 4),
            "worker": outcome.worker,
        }
        if outcome.facts:
            record["facts"] = canonical(outcome.facts)
        if not outcome.ok:
            record.update(reason=outcome.reason, error=outcome.error, path=path)
            if outcome.detail:
                log.debug("%s: %s", item.id, outcome.detail)
        self.journal.append(record)
        self.states[item.id] = ItemState.from_record(record, 0)
        if outcome.ok:
            self.report.done.append(item.id)
        else:
            self.report.failed.append(Failure(item.id, path, self.reason_text(outcome.reason)))

    def _failure_path(self, item: WorkItem, outcome: Outcome) -> str:
        inputs = {os.fspath(p) for p in item.inputs.values()}
        if outcome.error_path is not None and outcome.error_path in inputs:
            return outcome.error_path
        return os.fspath(item.path)

    def _remove_outputs(self, state: ItemState, keep: set[str]) -> None:
        for output in state.outputs.values():
            name = str(output.get("name", ""))
            if name and name not in keep and Path(name).name == name:
                with contextlib.suppress(FileNotFoundError):
                    (self.out / name).unlink()

    def _append_removed(self, state: ItemState) -> None:
        record = {"kind": "item", "task": state.task, "item": state.item, "status": "removed"}
        self.journal.append(record)
        self.states.pop(state.item, None)

    def is_done(self, item_id: str) -> bool:
        state = self.states.get(item_id)
        return state is not None and state.status == "done"

    def close(self, items: Sequence[WorkItem]) -> None:
        """End of run, also after an interrupt: failures.csv, the run's last line, compaction."""
        report = self.report
        try:
            write_failures(self.out, self.reason_text)
            self.journal.append(
                {
                    "kind": "run_end",
                    "task": self.task.name,
                    "fingerprint": self.fp,
                    "done": len(report.done),
                    "skipped": len(report.skipped),
                    "failed": len(report.failed),
                    "interrupted": report.interrupted,
                    "seconds": round(report.seconds, 3),
                }
            )
            if self.journal.lines > 4 * max(len(self.states), len(items)) + 100:
                self.journal.compact()
        except OSError as exc:
            raise OutputError(f"cannot finish the run's records: {exc.strerror}", self.out) from exc


def write_failures(out_dir: Path, reason_text: Callable[[str], str] | None = None) -> Path:
    """Rewrite ``failures.csv`` from the journal: exactly the items failing now (all tasks)."""
    from hsafast._fileio import atomic_path

    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for _, record in read_records(out_dir / JOURNAL_NAME):
        if record.get("kind") == "item":
            latest[(str(record.get("task")), str(record.get("item")))] = record
    rows = [r for r in latest.values() if r.get("status") == "failed"]
    text = reason_text or (lambda t: t)
    target = out_dir / FAILURES_NAME
    with (
        atomic_path(target) as tmp,
        tmp.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f,
    ):
        writer = csv.writer(f)
        writer.writerow(["path", "item", "command", "reason", "time"])
        for r in rows:
            reason = text(str(r.get("reason", "")))
            writer.writerow([r.get("path", ""), r["item"], r["task"], reason, r.get("time", "")])
    return target


def item_states(out_dir: str | os.PathLike[str], task: str | None = None) -> dict[str, ItemState]:
    """The latest journal state of each item in ``out_dir`` (of ``task``, or of all tasks,
    keyed ``task/item``), read without taking the folder's lock."""
    found: dict[str, ItemState] = {}
    for line, record in read_records(Path(out_dir) / JOURNAL_NAME):
        if record.get("kind") != "item" or (task is not None and record.get("task") != task):
            continue
        with contextlib.suppress(KeyError, TypeError, ValueError):
            state = ItemState.from_record(record, line)
            key = state.item if task is not None else f"{state.task}/{state.item}"
            if state.status == "removed":
                found.pop(key, None)
            else:
                found[key] = state
    return found


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until an item's files and journal line are both in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)
            else:
                raise KeyboardInterrupt
