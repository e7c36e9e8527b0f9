"""Cohort runs: one runner for every batch command, resumable, on threads, processes or Ray.

A run is a list of :class:`WorkItem` (stable, unique, file-name-safe IDs), a
:class:`Task` (the step, its outputs and the parameters that change them) and an
output folder with a journal (``journal.jsonl``) and ``failures.csv``::

    from hsafast.cohort import run_cohort, slide_items, make_executor
    report = run_cohort(MyTask(...), slide_items(["slides/"]), "out/",
                        executor=make_executor("ray", workers=8))

See docs/cohort.md for the contract and for moving a command onto the runner.
"""

from hsafast.cohort.executors import (
    EXECUTORS,
    Executor,
    LocalExecutor,
    WorkerSetupError,
    make_executor,
)
from hsafast.cohort.fingerprint import fingerprint, input_signature
from hsafast.cohort.ids import case_item_id, pair_id, path_id, sanitize_id
from hsafast.cohort.items import SLIDE_SUFFIXES, WorkItem, pair_items, slide_items
from hsafast.cohort.journal import ItemState, Journal, JournalError
from hsafast.cohort.pixels import PixelSize, open_item_slide
from hsafast.cohort.runner import (
    Failure,
    MixedOutputsError,
    OutputError,
    Progress,
    RunInterrupted,
    RunReport,
    item_states,
    run_cohort,
    write_failures,
)
from hsafast.cohort.task import ItemContext, ItemFailed, Task

__all__ = [
    "EXECUTORS",
    "SLIDE_SUFFIXES",
    "Executor",
    "Failure",
    "ItemContext",
    "ItemFailed",
    "ItemState",
    "Journal",
    "JournalError",
    "LocalExecutor",
    "MixedOutputsError",
    "OutputError",
    "PixelSize",
    "Progress",
    "RunInterrupted",
    "RunReport",
    "Task",
    "WorkItem",
    "WorkerSetupError",
    "case_item_id",
    "fingerprint",
    "input_signature",
    "item_states",
    "make_executor",
    "open_item_slide",
    "pair_id",
    "pair_items",
    "path_id",
    "run_cohort",
    "sanitize_id",
    "slide_items",
    "write_failures",
]
