"""Parameter fingerprints and input signatures: when is a finished item still valid?

An item done earlier is skipped only when (1) its step ran with the same parameters
(the task's fingerprint: every option that changes the output, the task's output
version and the hsafast version), (2) it used the same per-item fallbacks (a pixel
size given for files that record none), and (3) its inputs are the same files as then
(same resolved paths, sizes and modification times, and the same item fields that
change its outputs, e.g. its marker).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hsafast.cohort.items import WorkItem
    from hsafast.cohort.task import Task


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data with a stable form (dataclasses, paths, tuples, enums)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v) for v in value), key=repr)
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "inf", "nan": JSON has no such numbers
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return canonical(value.item())
    raise TypeError(f"cannot fingerprint a {type(value).__name__}: {value!r}")


def digest(value: Any) -> str:
    """SHA-256 (hex, 16 digits) of the canonical JSON of ``value``."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def task_params(task: Task) -> dict[str, Any]:
    """Everything the fingerprint covers, as recorded in the journal."""
    from hsafast import __version__

    return {
        "task": task.name,
        "task_version": task.version,
        "hsafast_version": __version__,
        "params": canonical(task.params()),
    }


def fingerprint(task: Task) -> str:
    """The task's parameter fingerprint (see :func:`task_params`)."""
    return digest(task_params(task))


def input_signature(item: WorkItem, fields: Mapping[str, Any] | None = None) -> str:
    """A digest of the item's input files (path, size, mtime) and of ``fields``, the
    item's own values that change its outputs (``Task.item_params``).

    A file that cannot be read gives a signature too (its failure is the step's to
    report), so that a file appearing later changes the signature.
    """
    files = []
    for role, path in sorted(item.inputs.items()):
        try:
            st = os.stat(path)
            files.append([role, os.fspath(path), st.st_size, st.st_mtime_ns])
        except (OSError, ValueError):
            files.append([role, os.fspath(path), None, None])
    return digest({"files": files, "fields": dict(fields or {})})


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str:
    """``old`` vs ``new`` parameters in words, e.g. ``params.target_mpp 0.5 -> 1.0``."""
    changes = [f"{k} {a} -> {b}" for k, (a, b) in _diff(canonical(old), canonical(new), "")]
    if not changes:
        return "no recorded parameter differs"
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


def _diff(a: Any, b: Any, prefix: str) -> list[tuple[str, tuple[Any, Any]]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            name = f"{prefix}.{key}" if prefix else key
            out.extend(_diff(a.get(key), b.get(key), name))
        return out
    return [] if a == b else [(prefix.removeprefix("params."), (a, b))]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
