"""The run journal: one JSON object per line in ``<out>/journal.jsonl``.

Every item's outcome (done or failed, the reason, the fingerprint, the output files
with their sizes and SHA-256, the timings) is appended as one line by the driver
alone, in one ``write`` call followed by ``fsync``, after the item's files are in
place. A line is therefore complete or absent: a crash during the write leaves at
most a torn last line without its newline, which the next run cuts off before
appending. The latest line of an item is its state. ``run`` lines record each run's
parameters, so that a refusal can say which parameter changed.

The journal is plain text for people (``grep``, ``jq``) and for :mod:`json`; SQLite
was not used because its locking is unreliable on the network file systems that
cohorts live on. One run at a time holds the folder's lock (``.hsafast/lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsafast.errors import HsafastError

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
FAILURES_NAME = "failures.csv"
STATE_DIR = ".hsafast"

#: Journal line format; readers skip lines of a newer format with a warning.
FORMAT_VERSION = 1


class JournalError(HsafastError):
    """The output folder's journal cannot be used (locked by another run, unwritable)."""


@dataclass
class ItemState:
    """The latest journal line of one item of one task."""

    task: str
    item: str
    status: str
    """``done``, ``failed`` or ``removed`` (outputs deleted before a recompute)."""
    fingerprint: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    input_signature: str = ""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    uses: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    """What the step recorded (``ItemContext.record``), e.g. the pixel size used."""
    reason: str = ""
    path: str = ""
    line: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any], line: int) -> ItemState:
        return cls(
            task=str(record["task"]),
            item=str(record["item"]),
            status=str(record["status"]),
            fingerprint=str(record.get("fingerprint", "")),
            inputs={str(k): str(v) for k, v in dict(record.get("inputs", {})).items()},
            input_signature=str(record.get("input_signature", "")),
            outputs={str(k): dict(v) for k, v in dict(record.get("outputs", {})).items()},
            uses=dict(record.get("uses", {})),
            facts=dict(record.get("facts", {})),
            reason=str(record.get("reason", "")),
            path=str(record.get("path", "")),
            line=line,
        )


class Journal:
    """Append-only JSON-lines journal of an output folder, held under an exclusive lock."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / JOURNAL_NAME
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self.lines = 0
        """Lines in the journal file (compaction is due when they far outnumber items)."""

    @classmethod
    @contextlib.contextmanager
    def open(cls, out_dir: str | os.PathLike[str]) -> Iterator[Journal]:
        """Lock ``out_dir`` for this run and open its journal for appending."""
        journal = cls(Path(out_dir))
        journal._acquire()
        try:
            yield journal
        finally:
            journal.close()

    def _acquire(self) -> None:
        state = self.out_dir / STATE_DIR
        try:
            state.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(
                f"cannot write to the output folder: {exc.strerror}", self.out_dir
            ) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._lock_fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(self._lock_fd)
            self._lock_fd = None
            raise JournalError(
                f"another hsafast run is writing to this folder ({holder or 'unknown process'})",
                self.out_dir,
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._cut_torn_tail()
            self.lines = self._count_lines()
        except OSError as exc:
            self.close()
            raise JournalError(f"cannot write the journal: {exc.strerror}", self.path) from None

    def _cut_torn_tail(self) -> None:
        """Drop a last line left without its newline by a crash during a write."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        block = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - block)
            newline = os.pread(self._fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        log.warning("%s: dropping a torn last line (%d bytes)", self.path, size - keep)
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)

    def _count_lines(self) -> int:
        assert self._fd is not None
        count, offset, block = 0, 0, 1 << 20
        while data := os.pread(self._fd, block, offset):
            count += data.count(b"\n")
            offset += len(data)
        return count

    def close(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line (one write call, then fsync)."""
        if self._fd is None:
            raise JournalError("the journal is closed", self.path)
        line = {"v": FORMAT_VERSION, "time": _now(), **record}
        data = (json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n").encode()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(28, "short write to the journal (disk full?)")
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot write the journal: {exc.strerror}", self.path) from None
        self.lines += 1

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every readable record with its line number; bad lines are skipped with a warning."""
        yield from read_records(self.path)

    def states(self, task: str | None = None) -> dict[tuple[str, str], ItemState]:
        """(task, item) -> the item's latest state (of one task, or of all)."""
        states: dict[tuple[str, str], ItemState] = {}
        for line, record in self.records():
            if record.get("kind") != "item" or (task is not None and record.get("task") != task):
                continue
            try:
                state = ItemState.from_record(record, line)
            except (KeyError, TypeError, ValueError):
                log.warning("%s:%d: skipping a malformed item record", self.path, line)
                continue
            states[(state.task, state.item)] = state
        return states

    def runs(self, task: str) -> dict[str, dict[str, Any]]:
        """Fingerprint -> the recorded parameters of the runs of ``task``."""
        found: dict[str, dict[str, Any]] = {}
        for _, record in self.records():
            if record.get("kind") == "run" and record.get("task") == task:
                params = record.get("params")
                if isinstance(params, dict):
                    found[str(record.get("fingerprint"))] = params
        return found

    def compact(self) -> None:
        """Rewrite the journal with the latest line of each item and the run lines."""
        assert self._fd is not None
        from hsafast._fileio import atomic_path

        latest: dict[tuple[str, str], dict[str, Any]] = {}
        runs: dict[tuple[str, str], dict[str, Any]] = {}
        for _, record in self.records():
            if record.get("kind") == "item":
                latest[(str(record.get("task")), str(record.get("item")))] = record
            elif record.get("kind") == "run":
                runs[(str(record.get("task")), str(record.get("fingerprint")))] = record
        lines = [*runs.values(), *(r for r in latest.values() if r.get("status") != "removed")]
        with atomic_path(self.path) as tmp:
            with tmp.open("w", encoding="utf-8") as f:
                for record in lines:
                    f.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self.lines = len(lines)


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Records of a journal file (for reading it without taking the lock)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"cannot read the journal: {exc.strerror}", path) from None
    with f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                break  # torn last line: the write never completed
            try:
                record = json.loads(raw)
            except ValueError:
                log.warning("%s:%d: skipping an unreadable line", path, number)
                continue
            if not isinstance(record, dict):
                log.warning("%s:%d: skipping a line that is not an object", path, number)
                continue
            if record.get("v") != FORMAT_VERSION:
                log.warning("%s:%d: skipping a line of format %r", path, number, record.get("v"))
                continue
            yield number, record


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
