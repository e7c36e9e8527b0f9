"""Parameters of gated-attention pooling (ABMIL): a = w . (tanh(V h + bV) * sigmoid(U h + bU)) + b.

Kept as float32 NumPy arrays, checked once on construction, so every engine can trust them.
They load from and save to safetensors (never pickle) under fixed tensor names.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsafast.errors import PoolingError

#: tensor names in a parameters file
TENSOR_NAMES = ("V", "bV", "U", "bU", "w", "b_w")
_FORMAT = "hsafast.GatedAttentionParams"


def _as_float32(value: Any, name: str, path: Path | None) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().to("cpu").float().numpy()
    try:
        arr = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise PoolingError(f"parameter {name} is not numeric: {exc}", path) from exc
    if not np.isfinite(arr).all():
        raise PoolingError(f"parameter {name} contains NaN or Inf", path)
    return arr


@dataclass(frozen=True, eq=False)
class GatedAttentionParams:
    """Weights of one gated-attention head: V, U are H x D, bV, bU, w are H, b_w a scalar."""

    V: np.ndarray
    """Tanh branch projection, H x D."""
    bV: np.ndarray
    """Tanh branch bias, H."""
    U: np.ndarray
    """Sigmoid (gate) branch projection, H x D."""
    bU: np.ndarray
    """Sigmoid branch bias, H."""
    w: np.ndarray
    """Projection of the gated hidden vector onto one logit, H."""
    b_w: float = 0.0
    """Bias of the logit; it cancels in the softmax but is part of the returned logits."""
    source: Path | None = None
    """File the parameters were read from, named in errors."""
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        src = self.source
        for name in ("V", "bV", "U", "bU", "w"):
            object.__setattr__(self, name, _as_float32(getattr(self, name), name, src))
        b_w = _as_float32(self.b_w, "b_w", src)
        if b_w.size != 1:
            raise PoolingError(f"parameter b_w must be a scalar, got shape {b_w.shape}", src)
        object.__setattr__(self, "b_w", float(b_w.reshape(())))
        if self.V.ndim != 2 or self.V.shape[0] == 0 or self.V.shape[1] == 0:
            raise PoolingError(f"V must be a non-empty H x D matrix, got shape {self.V.shape}", src)
        if self.U.shape != self.V.shape:
            raise PoolingError(f"U has shape {self.U.shape} but V has {self.V.shape}", src)
        for name in ("bV", "bU", "w"):
            if getattr(self, name).shape != (self.hidden,):
                raise PoolingError(
                    f"{name} must have shape ({self.hidden},), got {getattr(self, name).shape}", src
                )

    @property
    def hidden(self) -> int:
        """H, the width of the attention hidden layer."""
        return int(self.V.shape[0])

    @property
    def dim(self) -> int:
        """D, the embedding width the head expects."""
        return int(self.V.shape[1])

    def stacked(self) -> np.ndarray:
        """[V; U] as one contiguous 2H x D float32 matrix, so one GEMM gives both branches."""
        if "stacked" not in self._cache:
            self._cache["stacked"] = np.ascontiguousarray(np.concatenate([self.V, self.U]))
        return self._cache["stacked"]

    def fingerprint(self) -> str:
        """SHA-256 of the weights: pool states only merge when computed with the same head."""
        if "fingerprint" not in self._cache:
            digest = hashlib.sha256()
            for name in ("V", "bV", "U", "bU", "w"):
                digest.update(getattr(self, name).tobytes())
            digest.update(np.float32(self.b_w).tobytes())
            self._cache["fingerprint"] = digest.hexdigest()
        return self._cache["fingerprint"]

    @classmethod
    def random(cls, dim: int, hidden: int, seed: int = 0) -> GatedAttentionParams:
        """Freshly initialised head (uniform +-1/sqrt(fan_in), like torch.nn.Linear)."""
        rng = np.random.default_rng(seed)
        kd, kh = 1.0 / np.sqrt(dim), 1.0 / np.sqrt(hidden)

        def uni(k: float, *shape: int) -> np.ndarray:
            return rng.uniform(-k, k, size=shape).astype(np.float32)

        return cls(
            uni(kd, hidden, dim),
            uni(kd, hidden),
            uni(kd, hidden, dim),
            uni(kd, hidden),
            uni(kh, hidden),
            float(uni(kh, 1)[0]),
        )

    def to_dict(self) -> dict[str, np.ndarray]:
        """Tensors under the names of TENSOR_NAMES."""
        return {
            "V": self.V,
            "bV": self.bV,
            "U": self.U,
            "bU": self.bU,
            "w": self.w,
            "b_w": np.array([self.b_w], dtype=np.float32),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes a safetensors file atomically and returns its path."""
        from safetensors.numpy import save_file

        from hsafast._fileio import atomic_path

        final = Path(path)
        meta = {"format": _FORMAT, "hidden": str(self.hidden), "dim": str(self.dim)}
        with atomic_path(final) as tmp:
            save_file(self.to_dict(), str(tmp), metadata=meta)
        return final

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GatedAttentionParams:
        """Reads a file written by save (or any safetensors file with the same tensor names)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        src = Path(path)
        if not src.is_file():
            raise PoolingError("parameters file not found", src)
        try:
            tensors = load_file(str(src))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PoolingError(f"not a readable safetensors file: {exc}", src) from exc
        missing = [n for n in TENSOR_NAMES if n not in tensors and n != "b_w"]
        if missing:
            raise PoolingError(f"missing tensors {missing} (expected {list(TENSOR_NAMES)})", src)
        unknown = sorted(set(tensors) - set(TENSOR_NAMES))
        if unknown:
            raise PoolingError(f"unknown tensors {unknown} (expected {list(TENSOR_NAMES)})", src)
        b_w = tensors.get("b_w", np.zeros(1, np.float32))
        return cls(
            tensors["V"],
            tensors["bV"],
            tensors["U"],
            tensors["bU"],
            tensors["w"],
            b_w,  # type: ignore[arg-type]
            source=src,
        )
