"""Encoder weights: read local files without executing code, fit them to a module, hash them.

Files are safetensors, or PyTorch checkpoints read with ``torch.load(weights_only=True)`` (no
pickled code runs). Published checkpoints often wrap the tensors (``{"state_dict": ...}``,
``{"model": ...}``) or prefix their names (``module.``, ``model.``); both are undone before the
tensors are matched name by name and shape by shape against the architecture.

The weight hash is SHA-256 over every tensor in name order (name, dtype, shape, then the raw
little-endian bytes), so the same weights give the same hash whether they come from a
safetensors file, a ``.pth`` file or a module's ``state_dict()``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsafast.errors import EncoderWeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["describe_mismatch", "fit_weights", "load_weights_file", "weights_hash"]

#: Keys under which checkpoints commonly nest their state dict.
_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module", "teacher", "weights")
#: Name prefixes that training wrappers add (DDP, Lightning, CLIP-style towers).
_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "visual.", "_orig_mod.")
#: How many offending names an error lists before summarising the rest.
_LISTED = 4


def weights_hash(state: Mapping[str, Any]) -> str:
    """SHA-256 of the tensors of ``state`` (torch tensors or NumPy arrays), in name order."""
    import numpy as np
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        tensor = torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value
        tensor = tensor.detach().to("cpu").contiguous()
        header = f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode("utf-8"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or PyTorch weights file, on the CPU."""
    import torch

    source = Path(path)
    if not source.is_file():
        raise EncoderWeightsError("weights file not found", source)
    if source.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(source), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise EncoderWeightsError(f"not a readable safetensors file: {exc}", source) from exc
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError... all mean "unreadable"
        raise EncoderWeightsError(
            "not a readable PyTorch weights file (read with weights_only=True, so pickled "
            f"objects other than tensors are refused): {type(exc).__name__}: {exc}",
            source,
        ) from exc
    return _unwrap(loaded, source)


def _unwrap(loaded: Any, source: Path) -> dict[str, torch.Tensor]:
    import torch

    for _ in range(3):  # {"model": {"state_dict": {...}}} at worst
        if not isinstance(loaded, Mapping):
            break
        if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return {str(k): v for k, v in loaded.items()}
        inner = next(
            (loaded[k] for k in _CONTAINER_KEYS if isinstance(loaded.get(k), Mapping)), None
        )
        if inner is None:
            break
        loaded = inner
    raise EncoderWeightsError(
        "holds no state dict of tensors (expected a mapping name -> tensor, possibly under "
        f"one of {list(_CONTAINER_KEYS)})",
        source,
    )


def _strip_prefixes(state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """Remove wrapper prefixes while that makes more names match the architecture."""
    best = state
    while True:
        matched = len(expected & set(best))
        if matched == len(expected):
            return best
        candidates = []
        for prefix in _PREFIXES:
            if any(k.startswith(prefix) for k in best):
                stripped = {
                    (k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in best.items()
                }
                candidates.append((len(expected & set(stripped)), stripped))
        if not candidates:
            return best
        score, stripped = max(candidates, key=lambda c: c[0])
        if score <= matched:
            return best
        best = stripped


def fit_weights(
    module: torch.nn.Module,
    state: Mapping[str, Any],
    source: str | os.PathLike[str] | None = None,
    what: str = "the encoder",
    assign: bool = False,
) -> None:
    """Load ``state`` into ``module`` strictly; every mismatch is named in one error.

    ``assign`` adopts the file's tensors instead of copying them (for a module built on the
    meta device, so that large encoders are never randomly initialised first); floating
    tensors are then made float32, as copying into a float32 module would.
    """
    import torch

    expected = module.state_dict()
    tensors = _strip_prefixes(dict(state), set(expected))
    problem = describe_mismatch(expected, tensors, what)
    if problem:
        raise EncoderWeightsError(problem, source)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EncoderWeightsError(f"tensor {name} holds NaN or Inf values", source)
    module.load_state_dict(tensors, strict=True, assign=assign)
    if assign:
        module.float()
        left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:
            raise EncoderWeightsError(
                f"{what} has tensors no file provides: {_listed(left)}", source
            )


def describe_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any], what: str) -> str:
    """'' when ``given`` has exactly the names and shapes of ``expected``, else what differs."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = [
        f"{k}: file {tuple(given[k].shape)}, {what} {tuple(expected[k].shape)}"
        for k in sorted(set(given) & set(expected))
        if tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape ({_listed(wrong)})")
    if missing:
        problems.append(f"{len(missing)} tensors missing ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors ({_listed(unexpected)})")
    return f"weights do not fit {what}: " + "; ".join(problems) if problems else ""


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", and {len(items) - _LISTED} more" if len(items) > _LISTED else "")
