"""Slide models over tile embeddings, shared by the trainer and the scorer.

``SlideModel`` (one per marker): tile projection, an aggregator (``GatedAttentionPool``,
``MeanPool`` or ``TransformerPool``), the classification head, and in patch mode the
positivity and contrastive projection heads. See docs/models.md for the contract.
"""

from hsafast.models.heads import ClassifierHead, PositivityHead, ProjectionHead, TileProjection
from hsafast.models.pooling import AGGREGATORS, GatedAttentionPool, MeanPool, TransformerPool
from hsafast.models.slide import (
    IHC_BRANCHES,
    SlideEncoder,
    SlideModel,
    SlideModelConfig,
    SlideOutput,
)

__all__ = [
    "AGGREGATORS",
    "IHC_BRANCHES",
    "ClassifierHead",
    "GatedAttentionPool",
    "MeanPool",
    "PositivityHead",
    "ProjectionHead",
    "SlideEncoder",
    "SlideModel",
    "SlideModelConfig",
    "SlideOutput",
    "TileProjection",
    "TransformerPool",
]
