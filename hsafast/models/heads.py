"""Heads on embeddings: slide classification, contrastive projection, per-tile positivity."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ClassifierHead", "PositivityHead", "ProjectionHead", "TileProjection"]


class TileProjection(nn.Sequential):
    """Tile features (D) -> h (E): Linear -> ReLU -> Dropout, the first layer of ABMIL."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))


class ClassifierHead(nn.Sequential):
    """Linear(D, 256) -> ReLU -> Dropout(0.5) -> Linear(256, C), as the authors' code has it."""

    def __init__(self, dim: int, classes: int, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
        )


class ProjectionHead(nn.Sequential):
    """Embedding -> contrastive space: Linear -> ReLU -> Linear (SimCLR's projection head).

    Patch mode aligns H&E and IHC patches in this space, so the embedding h itself is not
    forced to discard what the IHC does not show.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim))


class PositivityHead(nn.Module):
    """Per-tile IHC positivity from the H&E tile embedding h: logits (..., outputs).

    ``probability`` applies the sigmoid: the predicted positive fraction (0-1) of each
    stain-derived target, the spatial map of patch mode.
    """

    def __init__(self, dim: int, outputs: int = 1, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, outputs))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)

    def probability(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(h))
