"""The encoder registry: names -> how to build the encoder and where its weights come from.

Families register themselves when ``hsafast.encoders`` is imported; nothing heavy (timm, the
weights) is touched until ``create_encoder`` is called. ``timm:<architecture>`` names any timm
architecture without registering it first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hsafast.errors import EncoderError

if TYPE_CHECKING:
    from hsafast.encoders.base import TileEncoder

__all__ = ["EncoderInfo", "create_encoder", "encoder_info", "list_encoders", "register_encoder"]

#: Prefix of names that stand for any timm architecture.
TIMM_PREFIX = "timm:"

#: How an encoder gets its weights.
WEIGHTS_KINDS = ("random", "optional", "required")


@dataclass(frozen=True)
class EncoderInfo:
    """What the registry knows about an encoder before building it."""

    name: str
    """Registry name, as FeatureFiles and bundles record it."""
    family: str
    """'small' (trainable here), 'timm', 'pathology' or 'test'."""
    dim: int
    """Embedding width."""
    input_size: int
    """Edge of the square input in pixels (tiles are resized to it)."""
    description: str
    """One line for ``list_encoders`` and the docs."""
    build: Callable[..., TileEncoder] = field(repr=False, compare=False)
    """Builds the module, randomly initialised; called with the user's keyword arguments."""
    weights: str = "random"
    """'random': starts from a seeded random init (trained here); 'optional': a weights file
    may be given; 'required': the encoder is useless without its published weights."""
    weights_file: str = ""
    """File name the published weights come as (for 'required' encoders)."""
    weights_origin: str = ""
    """Where users obtain the weights (for the error that says where they must go)."""
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    """Per-channel normalisation mean of the input (RGB, 0-1 scale; ImageNet's by default)."""
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    """Per-channel normalisation standard deviation (RGB, 0-1 scale; ImageNet's by default)."""

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS_KINDS:
            raise EncoderError(f"encoder {self.name!r}: weights must be one of {WEIGHTS_KINDS}")


_REGISTRY: dict[str, EncoderInfo] = {}


def register_encoder(info: EncoderInfo) -> EncoderInfo:
    """Add an encoder to the registry (a name may be registered once)."""
    if info.name in _REGISTRY:
        raise EncoderError(f"an encoder named {info.name!r} is already registered")
    if info.name.startswith(TIMM_PREFIX):
        raise EncoderError(f"names starting with {TIMM_PREFIX!r} are reserved for timm models")
    _REGISTRY[info.name] = info
    return info


def list_encoders(family: str | None = None) -> list[str]:
    """Registered encoder names (of one family if given), sorted."""
    return sorted(n for n, i in _REGISTRY.items() if family is None or i.family == family)


def encoder_info(name: str) -> EncoderInfo:
    """The registry entry for ``name``; ``timm:<arch>`` is described on the fly."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(TIMM_PREFIX):
        from hsafast.encoders.timm_family import timm_info

        return timm_info(name[len(TIMM_PREFIX) :])
    known = ", ".join(list_encoders())
    raise EncoderError(f"unknown encoder {name!r}; registered: {known}, or timm:<architecture>")


def create_encoder(
    name: str, weights: str | os.PathLike[str] | None = None, **kwargs: Any
) -> TileEncoder:
    """Build encoder ``name``, with ``weights`` from a local file where given.

    Encoders whose published weights are required look in ``weights_dir() / name`` when
    ``weights`` is None, and say where the file must go when it is not there. Nothing is
    ever downloaded. Other keyword arguments go to the family's builder (``seed`` for the
    random initialisation of small encoders, ``img_size`` and the like for timm).
    """
    import torch

    from hsafast.encoders.locations import default_weights_path

    info = encoder_info(name)
    if weights is None and info.weights == "required":
        weights = default_weights_path(info)
    # an encoder that is useless without its weights is built without initialising them
    on_meta = info.weights == "required" and weights is not None
    try:
        with torch.device("meta") if on_meta else contextlib.nullcontext():
            encoder = info.build(**kwargs)
    except TypeError as exc:
        raise EncoderError(f"encoder {name!r} cannot be built with {kwargs}: {exc}") from exc
    if weights is not None:
        encoder.load_weights(weights, assign=on_meta)
    return encoder
