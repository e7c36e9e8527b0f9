"""The sections of a bundle's config.json: the tile encoder, preprocessing, markers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hsafast.errors import HsafastError, InvalidParameterError

if TYPE_CHECKING:
    from hsafast.encoders.base import TileEncoder

__all__ = ["EncoderSpec", "MarkerSpec", "Preprocessing"]

#: ImageNet's channel statistics, the normalisation assumed for unregistered encoders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """The tile encoder a bundle was trained on: features from any other encoder are refused."""

    name: str
    """Registry name (``hsafast.encoders``) or the name a FeatureFile records."""
    hash: str
    """SHA-256 of the encoder's weights; empty when the features' files did not record it."""
    dim: int
    """Embedding width D, the slide model's input."""
    input_size: int
    """Edge of the encoder's square input in pixels (0 when known only from features)."""
    mean: tuple[float, float, float]
    """Per-channel normalisation mean (RGB, 0-1 scale)."""
    std: tuple[float, float, float]
    """Per-channel normalisation standard deviation (RGB, 0-1 scale)."""
    in_bundle: bool = False
    """True when the encoder's weights are stored in the bundle (``encoder.*``), because
    they were trained here; False when the registered encoder is used as published."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not (isinstance(self.name, str) and self.name):
            raise InvalidParameterError("encoder.name must be a non-empty string")
        if not (isinstance(self.hash, str) and re.fullmatch(r"([0-9a-f]{64})?", self.hash)):
            raise InvalidParameterError(
                f"encoder.hash must be a SHA-256 hex digest, got {self.hash!r}"
            )
        if not (isinstance(self.dim, int) and self.dim >= 1):
            raise InvalidParameterError(f"encoder.dim must be a positive integer, got {self.dim!r}")
        if not (isinstance(self.input_size, int) and self.input_size >= 0):
            raise InvalidParameterError(
                f"encoder.input_size must be a non-negative integer, got {self.input_size!r}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise InvalidParameterError(f"encoder.{name} must be three finite numbers")
        if min(self.std) <= 0:
            raise InvalidParameterError(f"encoder.std must be positive, got {list(self.std)}")
        if self.in_bundle and not self.hash:
            raise InvalidParameterError("encoder.hash is required when in_bundle is true")

    @classmethod
    def from_encoder(cls, encoder: TileEncoder, in_bundle: bool = False) -> EncoderSpec:
        """The spec of a built encoder (its current weights' hash)."""
        return cls(**encoder.describe(), in_bundle=in_bundle)

    @classmethod
    def from_features(cls, name: str, hash: str, dim: int) -> EncoderSpec:
        """The spec of features read from files (``FeatureBag.encoder``, ``encoder_hash``).

        A registered encoder contributes its input size and normalisation, so that slides can
        be scored with it; other names get input size 0 (features only) and ImageNet's.
        """
        from hsafast.encoders import encoder_info

        try:
            info = encoder_info(name)
        except HsafastError:
            return cls(name, hash, dim, 0, IMAGENET_MEAN, IMAGENET_STD)
        if info.dim != dim:
            raise InvalidParameterError(
                f"features are {dim}-d but encoder {name!r} gives {info.dim}-d embeddings"
            )
        return cls(name, hash, dim, info.input_size, info.mean, info.std)


@dataclass(frozen=True)
class Preprocessing:
    """How tiles are cut for this model (scoring must cut them the same way)."""

    target_mpp: float = 0.5
    """Tile pixel size in micrometres (0.5 um/px is "20x", the paper's and Prov-GigaPath's)."""
    tile_size: int = 256
    """Tile edge in pixels at ``target_mpp`` (256 px as in the paper)."""
    max_tiles: int = 4096
    """Most tiles per slide given to the slide model (4,096 in the authors' code)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.target_mpp, int | float) and 0 < self.target_mpp < 1000):
            raise InvalidParameterError(
                "preprocessing.target_mpp must be a pixel size in (0, 1000) um, "
                f"got {self.target_mpp!r}"
            )
        for name in ("tile_size", "max_tiles"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InvalidParameterError(
                    f"preprocessing.{name} must be a positive integer, got {value!r}"
                )


@dataclass(frozen=True)
class MarkerSpec:
    """One marker's output classes."""

    classes: tuple[str, ...] = ("low", "high")
    """Class names in logit order."""
    positive_class: str = "high"
    """The class counted as positive in binary metrics (the paper's intermediate/high)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise InvalidParameterError(
                f"markers.classes needs at least two distinct names, got {list(self.classes)}"
            )
        if self.positive_class not in self.classes:
            raise InvalidParameterError(
                f"markers.positive_class {self.positive_class!r} is not one of {list(self.classes)}"
            )
