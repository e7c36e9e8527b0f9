"""The step contract: what a batch command gives the runner, and how a worker runs one item.

A :class:`Task` says what its items produce (``outputs``), which options change the
result (``params``: the fingerprint) and how to compute one item (``run``). The worker
runs ``run`` with output paths inside a private staging folder; the runner moves the
files into the output folder and records them in the journal only once the step has
returned. A step therefore never writes a final output name itself, and a crash at
any point leaves either the old outputs or the new ones, never a mix or a partial file.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hsafast.cohort.items import WorkItem
from hsafast.errors import HsafastError, InvalidParameterError

if TYPE_CHECKING:
    from hsafast.cohort.runner import Failure


class ItemFailed(HsafastError):
    """Raised by a step that failed but wrote outputs worth keeping (e.g. a failed
    registration's verdict and overlay): the item is recorded as failed with them."""


class Task:
    """One batch command's step, run once per :class:`WorkItem`.

    Subclasses set ``name`` (and bump ``version`` when the output format changes) and
    implement ``params``, ``outputs`` and ``run``. A task is pickled to each worker
    before ``setup`` runs there, so heavy state (an opened model) belongs in ``setup``,
    not in ``__init__``.
    """

    name: ClassVar[str] = "task"
    """The command's name; the journal keeps each task's items apart."""

    version: ClassVar[int] = 1
    """Bump when the outputs change for the same parameters: finished items recompute."""

    def params(self) -> Mapping[str, Any]:
        """Every option that changes the outputs (JSON-able: numbers, strings, dataclasses)."""
        return {}

    def fallbacks(self) -> Mapping[str, Any]:
        """Options that only some items use, e.g. a pixel size for files that record none.

        They are not in the fingerprint; an item that used one (``ItemContext.used``)
        is redone when its value changes, the others are not.
        """
        return {}

    def item_params(self, item: WorkItem) -> Mapping[str, Any]:
        """The item's own fields that change its outputs (default: its stain and marker).

        A manifest edit that changes one recomputes the item; others (a label added
        later, say) do not.
        """
        return {k: item.meta[k] for k in ("stain", "marker") if k in item.meta}

    def outputs(self, item: WorkItem) -> Mapping[str, str]:
        """Role -> file name (in the output folder) of each file the item may write."""
        raise NotImplementedError

    def check(self, items: Sequence[WorkItem]) -> None:
        """Reject a run before it starts (e.g. an item without the marker it needs)."""

    def setup(self) -> None:
        """Prepare a worker (open a model...); called once per worker before its first item."""

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        """Compute one item, writing each output to ``ctx.path(role)``."""
        raise NotImplementedError

    def finish(self, out_dir: Path, done: list[WorkItem], failed: list[Failure]) -> None:
        """After the run, in the driver: cohort-level outputs (written atomically) from the
        items done (now or before) and those that failed in this run."""


class ItemContext:
    """What a step gets besides its item: where to write, and what to record."""

    def __init__(self, staging: Path, names: Mapping[str, str], fallbacks: Mapping[str, Any]):
        self.staging = staging
        self._names = dict(names)
        self._fallbacks = dict(fallbacks)
        self.facts: dict[str, Any] = {}
        self.uses: dict[str, Any] = {}

    def path(self, role: str) -> Path:
        """The (staging) path to write output ``role`` to."""
        try:
            return self.staging / self._names[role]
        except KeyError:
            raise KeyError(f"no output {role!r}; declared: {sorted(self._names)}") from None

    def used(self, name: str) -> Any:
        """Mark fallback ``name`` as used by this item and return its value."""
        value = self._fallbacks[name]
        self.uses[name] = value
        return value

    def record(self, **facts: Any) -> None:
        """Facts to keep in the journal with the item (JSON-able)."""
        self.facts.update(facts)


@dataclass
class OutputFile:
    """One file an item wrote: its name in the output folder, size and SHA-256."""

    name: str
    bytes: int
    sha256: str


@dataclass
class Outcome:
    """What a worker reports back for one item."""

    item_id: str
    ok: bool
    staging: str
    files: dict[str, OutputFile] = field(default_factory=dict)
    reason: str = ""
    error: str = ""
    error_path: str | None = None
    output_error: bool = False
    """The step could not write its outputs (disk full, permission): the run stops."""
    facts: dict[str, Any] = field(default_factory=dict)
    uses: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    worker: str = ""
    detail: str = ""
    """Traceback of an unexpected error (logged at debug level)."""


#: errno values that mean "the output cannot be written", whatever the item.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def execute_item(task: Task, item: WorkItem, staging_root: Path) -> Outcome:
    """Run ``task`` on ``item`` in a fresh staging folder; never raises for the item's errors."""
    from hsafast.cohort.fingerprint import file_digest

    staging = staging_root / f"{item.id}.{uuid.uuid4().hex[:12]}"
    outcome = Outcome(item.id, ok=False, staging=str(staging), worker=_worker_name())
    wall, cpu = time.perf_counter(), time.thread_time()
    keep = False
    try:
        ctx = ItemContext(staging, _checked_names(task.outputs(item)), task.fallbacks())
        staging.mkdir(parents=True)
        task.run(item, ctx)
        outcome.ok = keep = True
    except ItemFailed as exc:
        keep = True
        _describe(outcome, exc)
    except OSError as exc:
        _describe(outcome, exc)
        outcome.output_error = _is_output_error(exc, staging_root)
    except Exception as exc:  # a batch records any failure of an item and goes on
        _describe(outcome, exc)
    outcome.seconds = time.perf_counter() - wall
    outcome.cpu_seconds = time.thread_time() - cpu
    if keep:
        outcome.facts, outcome.uses = ctx.facts, ctx.uses
        try:
            for role, name in task.outputs(item).items():
                path = staging / name
                if path.is_file():
                    _flush(path)
                    outcome.files[role] = OutputFile(name, path.stat().st_size, file_digest(path))
        except OSError as exc:
            keep = outcome.ok = False
            _describe(outcome, exc)
            outcome.output_error = _is_output_error(exc, staging_root)
        if outcome.ok and not outcome.files:
            keep = outcome.ok = False
            outcome.reason = "the step wrote none of its outputs"
    if not keep:
        outcome.files = {}
        shutil.rmtree(staging, ignore_errors=True)
    return outcome


#: Names in the output folder that belong to the runner, never to an item.
RESERVED_NAMES = frozenset({"journal.jsonl", "failures.csv"})


def _checked_names(names: Mapping[str, str]) -> Mapping[str, str]:
    for role, name in names.items():
        if Path(name).name != name or name.startswith(".") or name in RESERVED_NAMES:
            raise InvalidParameterError(f"output {role!r} has an unusable file name {name!r}")
    return names


def _describe(outcome: Outcome, exc: BaseException) -> None:
    outcome.error = type(exc).__name__
    if isinstance(exc, HsafastError):
        outcome.reason = exc.reason
        outcome.error_path = None if exc.path is None else os.fspath(exc.path)
    elif isinstance(exc, OSError):  # strerror may be a library's multi-line report
        outcome.reason = os.strerror(exc.errno) if exc.errno else str(exc).splitlines()[0]
        outcome.error_path = None if exc.filename is None else os.fsdecode(exc.filename)
    else:
        outcome.reason = f"{type(exc).__name__}: {exc}"
        outcome.detail = traceback.format_exc()


def _is_output_error(exc: OSError, staging_root: Path) -> bool:
    if exc.errno in _OUTPUT_ERRNOS:
        return True
    if exc.errno in (errno.EACCES, errno.EPERM) and exc.filename is not None:
        name = Path(os.fsdecode(exc.filename)).absolute()
        return name.is_relative_to(staging_root.absolute())
    return False


def _flush(path: Path) -> None:
    """Make a staged file durable before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
