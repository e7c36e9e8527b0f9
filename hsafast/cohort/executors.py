"""Where items run: in this process (threads) or in local worker processes.

Every executor keeps one copy of the task per worker, set up once (``Task.setup``:
an opened model stays open between items), hands out one item per idle worker and
yields :class:`~hsafast.cohort.task.Outcome` objects as items complete. A worker that
dies mid-item (killed, out of memory, a crashing native library) costs that attempt
only: the item is retried on a fresh worker up to ``max_retries`` times, then
recorded as failed. Closing the iterator (an interrupt) stops handing out items and
abandons the ones running: threads are daemons, processes are terminated.
The Ray executor lives in :mod:`hsafast.cohort.ray_executor`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsafast.cohort.items import WorkItem
from hsafast.cohort.task import Outcome, Task, execute_item
from hsafast.errors import HsafastError, InvalidParameterError

#: Executor names, as ``--executor`` takes them.
EXECUTORS = ("local", "process", "ray")


class WorkerSetupError(HsafastError):
    """A worker could not prepare the task (``Task.setup`` failed): the run cannot go on."""


class Executor(ABC):
    """Runs a task over items on some workers."""

    name: str = "executor"

    def __init__(self, workers: int = 1, max_retries: int = 2) -> None:
        if not (isinstance(workers, int) and workers >= 1):
            raise InvalidParameterError(f"workers must be a positive integer, got {workers!r}")
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise InvalidParameterError(f"max_retries must be >= 0, got {max_retries!r}")
        self.workers = workers
        self.max_retries = max_retries

    @abstractmethod
    def map(self, task: Task, items: Sequence[WorkItem], staging: Path) -> Iterator[Outcome]:
        """Run ``task`` on every item; yield outcomes in completion order."""

    def describe(self) -> str:
        """In words, for the run summary and the journal."""
        return f"{self.name} ({self.workers} worker{'s' if self.workers > 1 else ''})"


class LocalExecutor(Executor):
    """Threads of this process (the default; native kernels release the GIL), or with
    ``processes=True`` local worker processes (steps that hold the GIL; isolation)."""

    def __init__(self, workers: int = 1, *, processes: bool = False, max_retries: int = 2):
        super().__init__(workers, max_retries)
        self.processes = processes
        self.name = "process" if processes else "local"

    def describe(self) -> str:
        kind = ("process", "processes") if self.processes else ("thread", "threads")
        return f"{self.name} ({self.workers} {kind[self.workers > 1]})"

    def map(self, task: Task, items: Sequence[WorkItem], staging: Path) -> Iterator[Outcome]:
        if self.processes:
            return _ProcessPool(task, self.workers, self.max_retries).map(items, staging)
        if self.workers == 1:
            return _inline(task, items, staging)
        return _ThreadPool(task, self.workers).map(items, staging)


def make_executor(
    name: str = "local", workers: int = 1, *, ray_address: str | None = None, max_retries: int = 2
) -> Executor:
    """The executor named ``local``, ``process`` or ``ray`` (``--executor``)."""
    if ray_address is not None and name != "ray":
        raise InvalidParameterError("ray_address is only used by the ray executor")
    if name == "local":
        return LocalExecutor(workers, max_retries=max_retries)
    if name == "process":
        return LocalExecutor(workers, processes=True, max_retries=max_retries)
    if name == "ray":
        from hsafast.cohort.ray_executor import RayExecutor

        return RayExecutor(workers, address=ray_address, max_retries=max_retries)
    raise InvalidParameterError(f"unknown executor {name!r}; expected one of {EXECUTORS}")


def task_copy(task: Task) -> Task:
    """A worker's own copy of the task, made the way processes and Ray get theirs."""
    try:
        copy: Task = pickle.loads(pickle.dumps(task))
    except Exception as exc:
        raise WorkerSetupError(f"task {task.name!r} cannot be sent to workers: {exc}") from exc
    return copy


def setup_task(task: Task) -> None:
    """``task.setup()`` in a worker; any failure becomes a WorkerSetupError with its reason."""
    try:
        task.setup()
    except Exception as exc:
        reason = exc.reason if isinstance(exc, HsafastError) else f"{type(exc).__name__}: {exc}"
        raise WorkerSetupError(f"cannot prepare the {task.name} step: {reason}") from exc


def _inline(task: Task, items: Sequence[WorkItem], staging: Path) -> Iterator[Outcome]:
    """One worker: the calling thread (Ctrl-C stops the item at once)."""
    setup_task(task)
    for item in items:
        yield execute_item(task, item, staging)


class _ThreadPool:
    def __init__(self, task: Task, workers: int) -> None:
        self.task = task
        self.workers = workers

    def map(self, items: Sequence[WorkItem], staging: Path) -> Iterator[Outcome]:
        todo: queue.Queue[WorkItem | None] = queue.Queue()
        done: queue.Queue[Outcome | BaseException] = queue.Queue()
        stop = threading.Event()
        for item in items:
            todo.put(item)
        for _ in range(self.workers):
            todo.put(None)

        def work(task: Task) -> None:
            try:
                setup_task(task)
            except WorkerSetupError as exc:
                done.put(exc)
                return
            while not stop.is_set():
                item = todo.get()
                if item is None:
                    return
                done.put(execute_item(task, item, staging))

        copies = [task_copy(self.task) for _ in range(self.workers)]
        for i, copy in enumerate(copies):
            # daemons: an interrupted run exits without waiting for the items in flight
            threading.Thread(target=work, args=(copy,), name=f"hsafast-{i}", daemon=True).start()
        try:
            for _ in range(len(items)):
                result = _get(done)
                if isinstance(result, BaseException):
                    raise result
                yield result
        finally:
            stop.set()


def _get(q: queue.Queue[Any]) -> Any:
    while True:  # a timeout keeps the main thread responsive to Ctrl-C
        try:
            return q.get(timeout=0.5)
        except queue.Empty:
            continue


@dataclass
class _Worker:
    process: Any
    conn: multiprocessing.connection.Connection
    item: WorkItem | None = None
    ready: bool = False


class _ProcessPool:
    def __init__(self, task: Task, workers: int, max_retries: int) -> None:
        self.payload = pickle.dumps(task_copy(task))
        self.name = task.name
        self.workers = workers
        self.max_retries = max_retries
        method = (
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        self.context: Any = multiprocessing.get_context(method)

    def _start(self) -> _Worker:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=_process_worker, args=(self.payload, theirs), name="hsafast-worker", daemon=True
        )
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def map(self, items: Sequence[WorkItem], staging: Path) -> Iterator[Outcome]:
        pending = deque(items)
        attempts: dict[str, int] = {}
        workers = [self._start() for _ in range(min(self.workers, len(items)))]
        remaining = len(items)
        try:
            while remaining:
                for w in workers:
                    if w.ready and w.item is None and pending:
                        w.item = pending.popleft()
                        w.conn.send((w.item, staging))
                ready = multiprocessing.connection.wait(
                    [w.conn for w in workers] + [w.process.sentinel for w in workers], timeout=0.5
                )
                for i, w in enumerate(workers):
                    message, dead = None, False
                    if w.conn in ready:
                        try:
                            message = w.conn.recv()
                        except Exception:  # EOF or a message cut off by the worker's death
                            dead = True
                    elif w.process.sentinel in ready:
                        dead = True
                    if message is not None:
                        kind, value = message
                        if kind == "setup_error":
                            raise WorkerSetupError(value)
                        if kind == "ready":
                            w.ready = True
                        else:
                            w.item = None
                            remaining -= 1
                            yield value
                    if not dead:
                        continue
                    if w.process.is_alive():
                        w.process.kill()
                    w.process.join()
                    w.conn.close()
                    if not w.ready:
                        raise WorkerSetupError(
                            f"a worker process died while preparing the {self.name} step "
                            f"({_how(w.process.exitcode)})"
                        )
                    workers[i] = self._start()
                    lost = w.item
                    if lost is None:
                        continue
                    attempts[lost.id] = attempts.get(lost.id, 0) + 1
                    if attempts[lost.id] <= self.max_retries:
                        pending.appendleft(lost)
                    else:
                        remaining -= 1
                        yield _died(lost, staging, attempts[lost.id], w.process.exitcode)
        finally:
            for w in workers:
                if w.process.is_alive():
                    w.process.terminate()
            for w in workers:
                w.process.join(timeout=5)
                w.conn.close()


def _process_worker(payload: bytes, conn: multiprocessing.connection.Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what an interrupt stops
    task: Task = pickle.loads(payload)
    try:
        setup_task(task)
    except WorkerSetupError as exc:
        conn.send(("setup_error", exc.reason))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        item, staging = message
        conn.send(("outcome", execute_item(task, item, staging)))


def _died(item: WorkItem, staging: Path, attempts: int, exitcode: int | None) -> Outcome:
    return Outcome(
        item.id,
        ok=False,
        staging=os.fspath(staging),
        reason=f"the worker died while running it, {attempts} times ({_how(exitcode)})",
        error="WorkerDied",
    )


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"
