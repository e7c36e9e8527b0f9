"""The per-marker slide model that the trainer trains and the scorer runs.

tile features (N x D) -> ``proj`` -> h (N x E) -> ``pool`` -> slide embedding (E) -> ``head``
(class logits). Patch mode adds ``positivity`` (per-tile IHC positivity from h) and ``align``
(the contrastive projection of h). The IHC slides go through the same ``proj`` and ``pool``
(``ihc="shared"``, as the authors' code runs one slide encoder on both stains) or through a
branch of their own (``ihc="separate"``, stored under ``ihc.``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from hsafast.errors import InvalidParameterError
from hsafast.models.heads import ClassifierHead, PositivityHead, ProjectionHead, TileProjection
from hsafast.models.pooling import AGGREGATORS, GatedAttentionPool, MeanPool, TransformerPool
from hsafast.pooling import GatedAttentionParams

__all__ = ["IHC_BRANCHES", "SlideEncoder", "SlideModel", "SlideModelConfig", "SlideOutput"]

IHC_BRANCHES = ("shared", "separate", "none")


@dataclass(frozen=True)
class SlideModelConfig:
    """The architecture of one marker's slide model."""

    in_dim: int
    """D, the width of the tile features (the tile encoder's ``dim``)."""
    classes: tuple[str, ...] = ("low", "high")
    """Class names, in logit order; the paper's binary reading is low vs intermediate/high."""
    embed_dim: int = 256
    """E, the width of h and of the slide embedding. 256 keeps a demo-sized model small on
    a CPU; the authors' slide encoder (Prov-GigaPath's) gives 768."""
    attention_hidden: int = 128
    """H, the hidden width of gated attention (128 in Ilse et al., 2018, ABMIL)."""
    aggregator: str = "gated"
    """'gated' (ABMIL gated attention), 'mean' (the mean-pooling baseline) or 'transformer'
    (self-attention across the tiles, then gated attention)."""
    proj_dropout: float = 0.25
    """Dropout after the tile projection (0.25 as in CLAM's ABMIL)."""
    head_hidden: int = 256
    """Hidden width of the classification head (256 in the authors' code)."""
    head_dropout: float = 0.5
    """Dropout of the classification head (0.5 in the authors' code)."""
    ihc: str = "shared"
    """How IHC slides are embedded: 'shared' (the H&E proj and pool, as the authors' code),
    'separate' (an IHC branch of its own, under ``ihc.``) or 'none' (no IHC input)."""
    align_dim: int = 0
    """Width of the contrastive projection heads (patch mode); 0: none, slide embeddings
    are aligned directly (slide mode, as the authors do)."""
    positivity_outputs: int = 0
    """Per-tile stain targets the positivity head predicts (patch mode); 0: no head."""
    positivity_hidden: int = 64
    """Hidden width of the positivity head."""
    transformer_layers: int = 2
    """Self-attention blocks of the 'transformer' aggregator."""
    transformer_heads: int = 4
    """Attention heads per block of the 'transformer' aggregator (must divide E)."""
    transformer_dropout: float = 0.1
    """Dropout inside the 'transformer' aggregator's blocks."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

        def bad(name: str, reason: str) -> InvalidParameterError:
            return InvalidParameterError(f"SlideModelConfig.{name}: {reason}")

        for name in ("in_dim", "embed_dim", "attention_hidden", "head_hidden"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise bad(name, f"must be a positive integer, got {value!r}")
        for name in ("align_dim", "positivity_outputs"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise bad(name, f"must be a non-negative integer, got {value!r}")
        for name in ("positivity_hidden", "transformer_layers", "transformer_heads"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise bad(name, f"must be a positive integer, got {value!r}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise bad("classes", f"needs at least two distinct names, got {list(self.classes)}")
        if self.aggregator not in AGGREGATORS:
            raise bad("aggregator", f"must be one of {AGGREGATORS}, got {self.aggregator!r}")
        if self.ihc not in IHC_BRANCHES:
            raise bad("ihc", f"must be one of {IHC_BRANCHES}, got {self.ihc!r}")
        for name in ("proj_dropout", "head_dropout", "transformer_dropout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise bad(name, f"must be in [0, 1), got {value!r}")
        if self.aggregator == "transformer" and self.embed_dim % self.transformer_heads:
            raise bad(
                "transformer_heads",
                f"{self.transformer_heads} heads do not divide embed_dim {self.embed_dim}",
            )

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        out = asdict(self)
        out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SlideModelConfig:
        """Build from a mapping (``hsafast._config``: unknown keys and wrong types are a
        ConfigError naming the key)."""
        from hsafast._config import config_from_mapping

        return config_from_mapping(cls, values, section="SlideModelConfig")


class SlideOutput(NamedTuple):
    """What a slide model returns for a batch of bags (B bags of N tiles)."""

    embedding: torch.Tensor
    """B x E slide embeddings."""
    logits: torch.Tensor
    """B x C class logits."""
    attention: torch.Tensor
    """B x N pooling weights (0 on padded tiles)."""
    tiles: torch.Tensor
    """B x N x E tile embeddings h."""
    positivity: torch.Tensor | None
    """B x N x K per-tile positivity logits (patch mode), else None."""


def _aggregator(config: SlideModelConfig) -> nn.Module:
    if config.aggregator == "gated":
        return GatedAttentionPool(config.embed_dim, config.attention_hidden)
    if config.aggregator == "mean":
        return MeanPool()
    return TransformerPool(
        config.embed_dim,
        config.attention_hidden,
        config.transformer_layers,
        config.transformer_heads,
        config.transformer_dropout,
    )


class SlideEncoder(nn.Module):
    """Tile features -> h -> slide embedding (the IHC branch when ``ihc='separate'``)."""

    def __init__(self, config: SlideModelConfig) -> None:
        super().__init__()
        self.proj = TileProjection(config.in_dim, config.embed_dim, config.proj_dropout)
        self.pool = _aggregator(config)
        self.align = (
            ProjectionHead(config.embed_dim, config.align_dim) if config.align_dim else None
        )

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(slide embedding B x E, pooling weights B x N, tile embeddings h B x N x E)."""
        h = self.proj(features)
        pooled, weights = self.pool(h, mask)
        return pooled, weights, h if h.ndim == 3 else h.unsqueeze(0)


class SlideModel(SlideEncoder):
    """One marker's model: the H&E slide encoder, its heads and the IHC branch."""

    def __init__(self, config: SlideModelConfig) -> None:
        super().__init__(config)
        self.config = config
        self.head = ClassifierHead(
            config.embed_dim, len(config.classes), config.head_hidden, config.head_dropout
        )
        self.positivity = (
            PositivityHead(config.embed_dim, config.positivity_outputs, config.positivity_hidden)
            if config.positivity_outputs
            else None
        )
        self.ihc = SlideEncoder(config) if config.ihc == "separate" else None

    def forward(  # type: ignore[override]
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> SlideOutput:
        """H&E tile features (N x D or B x N x D, mask B x N True on real tiles)."""
        embedding, weights, h = super().forward(features, mask)
        positivity = self.positivity(h) if self.positivity is not None else None
        return SlideOutput(embedding, self.head(embedding), weights, h, positivity)

    def encode_ihc(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IHC tile features -> (slide embedding, pooling weights, h), by the IHC branch."""
        if self.config.ihc == "none":
            raise InvalidParameterError("this slide model was built without an IHC branch")
        branch: SlideEncoder = self.ihc if self.ihc is not None else self
        return SlideEncoder.forward(branch, features, mask)

    def align_he(self, h: torch.Tensor) -> torch.Tensor:
        """H&E embeddings in the contrastive space (patch mode)."""
        if self.align is None:
            raise InvalidParameterError("this slide model has no projection head (align_dim=0)")
        return self.align(h)

    def align_ihc(self, h: torch.Tensor) -> torch.Tensor:
        """IHC embeddings in the contrastive space (the IHC branch's head when separate)."""
        branch: SlideEncoder = self.ihc if self.ihc is not None else self
        if branch.align is None:
            raise InvalidParameterError("this slide model has no projection head (align_dim=0)")
        return branch.align(h)

    def pool_params(self) -> GatedAttentionParams:
        """The H&E pooling head as ``GatedAttentionParams`` (gated aggregator only)."""
        if not isinstance(self.pool, GatedAttentionPool):
            raise InvalidParameterError(
                f"the {self.config.aggregator!r} aggregator has no gated-attention parameters"
            )
        return self.pool.to_params()
