"""What every inference engine offers: a batch of preprocessed tiles in, named outputs out.

An engine runs one `torch.nn.Module` (the scorer's tile network: encoder, then each marker's
projection and positivity head) on N x 3 x S x S float tensors and returns its outputs by
name, as torch tensors on the engine's device, in the order of `output_names`. Preprocessing
(uint8 tiles -> normalised floats) happens before the engine, in PyTorch, so that it is the
same on every engine.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hsafast.errors import EngineError

if TYPE_CHECKING:
    import torch

#: extra that installs each engine (named in the error when it is missing)
EXTRAS = {"torch": None, "onnxruntime": None, "tensorrt": "trt"}
#: pip package that provides each engine
PACKAGES = {"torch": "torch", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt-cu13"}


@dataclass(frozen=True)
class ModelSpec:
    """What an engine needs to know about the network besides its weights."""

    network: Any
    """The torch.nn.Module to run (eval mode); its forward returns a tuple of tensors."""
    input_size: int
    """Tile side (pixels) the network takes: inputs are N x 3 x input_size x input_size."""
    output_names: tuple[str, ...]
    """Names of the forward's outputs, in order (e.g. h/ki67, positivity/ki67)."""
    model_hash: str
    """SHA-256 that identifies the weights and the outputs; keys the exported-engine cache."""
    cache_dir: Any = None
    """Folder for exported engines (the bundle's engines/); None keeps them in memory only."""

    def export_key(self, **options: Any) -> str:
        """A short hash of the model and the export options, for cached file names."""
        text = json.dumps(
            {"model": self.model_hash, "outputs": self.output_names, **options}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Engine(ABC):
    """One way of running the tile network; see the module docstring."""

    name: str = "abstract"

    def __init__(self, spec: ModelSpec, device: str) -> None:
        self.spec = spec
        self.device = device

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.spec.output_names

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype the preprocessing should produce for this engine."""
        import torch

        return torch.float32

    @abstractmethod
    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs for a batch x (N x 3 x S x S on this engine's device), by name."""

    def describe(self) -> str:
        """One line for logs and results: the engine and how it runs."""
        return f"{self.name} on {self.device}"

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing
        """Releases sessions, contexts and buffers."""


def missing_engine(name: str, exc: BaseException | None = None) -> EngineError:
    """The error for an engine whose package is not installed, naming what to install."""
    extra = EXTRAS.get(name)
    how = f'pip install "hsafast[{extra}]"' if extra else f"pip install {PACKAGES[name]}"
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return EngineError(f"engine {name!r} is not installed{detail}; install it with: {how}")
