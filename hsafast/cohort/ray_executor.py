"""The Ray executor: one actor per worker, on a local cluster or an existing one.

Each actor unpickles its own copy of the task and calls ``Task.setup`` once, so state
such as an opened model lives as long as the actor. The driver keeps one item in
flight per actor. An actor that dies mid-item (its process killed, a node lost) is
replaced by a fresh one and the item retried, at most ``max_retries`` times; Ray's own
restarts are off so that this bound is exact. Workers write to the output folder's
staging area, so a cluster needs the output folder on storage that every node sees
at the same path (as the slides themselves).
"""

from __future__ import annotations

import os
import pickle
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hsafast.cohort.executors import Executor, WorkerSetupError, task_copy
from hsafast.cohort.items import WorkItem
from hsafast.cohort.task import Outcome, Task
from hsafast.errors import HsafastError

#: Memory for the object store of a local cluster (bytes): only item descriptions and
#: outcomes travel through it, so 200 MB is plenty and leaves the rest to the steps.
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2


class RayUnavailableError(HsafastError):
    """Ray is not installed, or the cluster cannot be reached."""


def import_ray() -> Any:
    """Ray, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "the ray executor needs Ray: pip install 'hsafast[ray]'"
        ) from None
    return ray


class RayExecutor(Executor):
    """Ray actors; ``address`` is ``None`` (start a local cluster), ``"auto"`` or
    ``"ray://host:port"`` (an existing cluster)."""

    name = "ray"

    def __init__(self, workers: int = 1, *, address: str | None = None, max_retries: int = 2):
        super().__init__(workers, max_retries)
        if address is not None and not (address == "auto" or address.startswith("ray://")):
            raise RayUnavailableError(
                f"a Ray address is 'auto' or 'ray://host:port', got {address!r}"
            )
        self.address = address
        import_ray()  # fail before any work when Ray is missing

    def describe(self) -> str:
        where = "local cluster" if self.address is None else self.address
        return f"ray ({self.workers} worker{'s' if self.workers > 1 else ''}, {where})"

    def map(self, task: Task, items: Sequence[WorkItem], staging: Path) -> Iterator[Outcome]:
        ray = import_ray()
        started = self._connect(ray)
        try:
            yield from _ActorPool(ray, task, self.workers, self.max_retries).map(items, staging)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Connect (or start a local cluster); True if this call started Ray."""
        if ray.is_initialized():
            return False
        if self.address is None:
            start_local_cluster(self.workers)
            return True
        try:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        except Exception as exc:
            raise RayUnavailableError(
                f"cannot reach {self.address}: {type(exc).__name__}: {exc}"
            ) from exc
        return True


def start_local_cluster(cpus: int) -> None:
    """Start a Ray cluster on this machine with ``cpus`` worker slots (one per actor);
    its workers import from the same paths as this process."""
    ray = import_ray()
    try:
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_import_paths())}},
        )
    except Exception as exc:
        raise RayUnavailableError(
            f"cannot start a local Ray cluster: {type(exc).__name__}: {exc}"
        ) from exc


class _ActorPool:
    def __init__(self, ray: Any, task: Task, workers: int, max_retries: int) -> None:
        self.ray = ray
        self.payload = pickle.dumps(task_copy(task))
        self.name = task.name
        self.workers = workers
        self.max_retries = max_retries
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_TaskActor)

    def _new_actor(self) -> Any:
        return self.actor_class.remote(self.payload)

    def map(self, items: Sequence[WorkItem], staging: Path) -> Iterator[Outcome]:
        ray = self.ray
        from ray.exceptions import RayActorError, RayTaskError

        pending = deque(items)
        attempts: dict[str, int] = {}
        actors = [self._new_actor() for _ in range(min(self.workers, len(items)))]
        try:
            try:
                reasons = ray.get([a.prepare.remote() for a in actors])
            except RayActorError as exc:
                raise WorkerSetupError(
                    f"a Ray worker died while preparing the {self.name} step"
                ) from exc
            for reason in reasons:
                if reason is not None:
                    raise WorkerSetupError(reason)
            idle = list(actors)
            inflight: dict[Any, tuple[Any, WorkItem]] = {}
            remaining = len(items)
            while remaining:
                while idle and pending:
                    actor, item = idle.pop(), pending.popleft()
                    inflight[actor.run.remote(item, staging)] = (actor, item)
                finished, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
                for ref in finished:
                    actor, item = inflight.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except RayTaskError as exc:  # only a replacement's failed setup raises
                        cause = getattr(exc, "cause", None)
                        raise WorkerSetupError(getattr(cause, "reason", str(exc))) from None
                    except RayActorError:
                        ray.kill(actor)
                        actors.remove(actor)
                        replacement = self._new_actor()
                        actors.append(replacement)
                        idle.append(replacement)
                        attempts[item.id] = attempts.get(item.id, 0) + 1
                        if attempts[item.id] <= self.max_retries:
                            pending.appendleft(item)
                            continue
                        outcome = Outcome(
                            item.id,
                            ok=False,
                            staging=os.fspath(staging),
                            reason=(
                                f"the Ray worker died while running it, {attempts[item.id]} times"
                            ),
                            error="WorkerDied",
                        )
                    else:
                        idle.append(actor)
                    remaining -= 1
                    yield outcome
        finally:
            for actor in actors:
                try:
                    ray.kill(actor)
                except Exception:  # already gone
                    pass


class _TaskActor:
    """One Ray worker: its own task, set up once (also after it replaced a dead one)."""

    def __init__(self, payload: bytes) -> None:
        self.task: Task = pickle.loads(payload)
        self.prepared = False

    def prepare(self) -> str | None:
        """Set the task up; the reason if that failed."""
        from hsafast.cohort.executors import setup_task

        if not self.prepared:
            try:
                setup_task(self.task)
            except WorkerSetupError as exc:
                return exc.reason
            self.prepared = True
        return None

    def run(self, item: WorkItem, staging: Path) -> Outcome:
        from hsafast.cohort.task import execute_item

        reason = self.prepare()
        if reason is not None:
            raise WorkerSetupError(reason)
        return execute_item(self.task, item, staging)


def _import_paths() -> list[str]:
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    return [p for p in dict.fromkeys(paths) if os.path.isdir(p)]
