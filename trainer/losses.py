"""The losses of HistoStainAlign and of patch mode.

As the authors' scripts compute them: embeddings are L2-normalised before InfoNCE and the
symmetric loss is the mean of the two directions' cross-entropies (in-batch negatives);
the masking loss is the MSE between the H&E slide embedding with and without a share of
its tile embeddings set to zero (the tiles stay in the bag).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "info_nce",
    "mask_tiles",
    "masked_target_mse",
    "random_tile_mask",
    "weighted_bce",
]


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between row-paired embeddings a, b (B x E); row i of a matches row i
    of b, every other row of the batch is a negative."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"InfoNCE needs two B x E batches of one shape, got {a.shape}, {b.shape}")
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def random_tile_mask(
    counts: list[int], width: int, fraction: float, generators: list[torch.Generator]
) -> torch.Tensor:
    """(B, width) bool: ``floor(fraction * n)`` of each bag's n real tiles, drawn at random
    from the bag's own generator (so a bag's mask does not depend on its batch)."""
    drop = torch.zeros((len(counts), width), dtype=torch.bool)
    for i, (n, g) in enumerate(zip(counts, generators, strict=True)):
        k = int(n * fraction)
        if k:
            drop[i, torch.randperm(n, generator=g)[:k]] = True
    return drop


def mask_tiles(features: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """A copy of B x N x D bag features with the tiles of ``drop`` (B x N) set to zero.

    The zeroed tiles stay in the bag (they still take part in the attention), as in the
    authors' code.
    """
    return features.masked_fill(drop.to(features.device).unsqueeze(-1), 0.0)


def masked_target_mse(masked: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """MSE between the masked and the unmasked slide embeddings (B x E)."""
    return F.mse_loss(masked, full)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of positive fractions (0-1 soft targets), averaged over the tiles
    with weight > 0 (tiles without a reliable target count for nothing)."""
    per_tile = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    total = weight.sum()
    if total <= 0:
        return logits.sum() * 0.0
    return (per_tile * weight).sum() / total
