"""Aggregators: a bag of tile embeddings (B x N x E, with a validity mask) -> slide embedding.

Every aggregator returns ``(pooled B x E, weights B x N)``; padded tiles (mask False) get
weight 0. ``GatedAttentionPool`` names its tensors as ``hsafast.pooling.GatedAttentionParams``
does, so a trained head pools with the native CPU, CUDA and Triton kernels and ``PoolState``
and gives the same result.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from hsafast.pooling import GatedAttentionParams

__all__ = ["AGGREGATORS", "GatedAttentionPool", "MeanPool", "TransformerPool"]

AGGREGATORS = ("gated", "mean", "transformer")


def _as_batch(
    h: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, N, E) and (B, N) from a single bag (N, E) or a batch."""
    if h.ndim == 2:
        h = h.unsqueeze(0)
        mask = None if mask is None else mask.unsqueeze(0)
    if h.ndim != 3:
        raise ValueError(f"tile embeddings must be N x E or B x N x E, got shape {tuple(h.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(h.shape[:2]):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match bags {tuple(h.shape[:2])}")
    return h, mask


class GatedAttentionPool(nn.Module):
    """ABMIL gated attention: a_i = w . (tanh(V h_i + bV) * sigmoid(U h_i + bU)) + b_w.

    The weights are softmax(a) over the valid tiles of each bag; the result is sum_i
    weight_i h_i. Initialised like ``torch.nn.Linear`` (uniform +-1/sqrt(fan_in)).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        self.V = nn.Parameter(torch.empty(hidden, dim))
        self.bV = nn.Parameter(torch.empty(hidden))
        self.U = nn.Parameter(torch.empty(hidden, dim))
        self.bU = nn.Parameter(torch.empty(hidden))
        self.w = nn.Parameter(torch.empty(hidden))
        self.b_w = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        kd, kh = 1.0 / math.sqrt(self.dim), 1.0 / math.sqrt(self.hidden)
        for tensor, bound in ((self.V, kd), (self.bV, kd), (self.U, kd), (self.bU, kd)):
            nn.init.uniform_(tensor, -bound, bound)
        nn.init.uniform_(self.w, -kh, kh)
        nn.init.uniform_(self.b_w, -kh, kh)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Attention logits (..., N) of tile embeddings (..., N, E)."""
        gated = torch.tanh(h @ self.V.T + self.bV) * torch.sigmoid(h @ self.U.T + self.bU)
        return gated @ self.w + self.b_w

    def forward(
        self, h: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, mask = _as_batch(h, mask)
        logits = self.logits(h)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        return torch.bmm(weights.unsqueeze(1), h).squeeze(1), weights

    def to_params(self) -> GatedAttentionParams:
        """The head as ``GatedAttentionParams`` (float32 NumPy), for the native kernels."""

        def array(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float32).numpy()

        return GatedAttentionParams(
            array(self.V),
            array(self.bV),
            array(self.U),
            array(self.bU),
            array(self.w),
            float(self.b_w.detach().reshape(())),
        )

    @classmethod
    def from_params(cls, params: GatedAttentionParams) -> GatedAttentionPool:
        """A module holding a copy of ``params``."""
        pool = cls(params.dim, params.hidden)
        with torch.no_grad():
            for name, value in params.to_dict().items():
                getattr(pool, name).copy_(torch.from_numpy(value.copy()))
        return pool


class MeanPool(nn.Module):
    """The mean of the valid tile embeddings (the mean-pooling baseline); no parameters."""

    def forward(
        self, h: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, mask = _as_batch(h, mask)
        if mask is None:
            weights = torch.full(h.shape[:2], 1.0 / h.shape[1], dtype=h.dtype, device=h.device)
        else:
            valid = mask.to(h.dtype)
            weights = valid / valid.sum(dim=1, keepdim=True).clamp_min(1.0)
        return torch.bmm(weights.unsqueeze(1), h).squeeze(1), weights


class TransformerPool(nn.Module):
    """Self-attention across the tiles of a bag (pre-norm blocks), then gated attention.

    The option for tiles whose meaning depends on their neighbours in the bag; it costs
    O(N^2) per block, so bags are capped (``max_tiles`` in the bundle's preprocessing).
    """

    def __init__(self, dim: int, hidden: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        block = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=2 * dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.attention = GatedAttentionPool(dim, hidden)

    def forward(
        self, h: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, mask = _as_batch(h, mask)
        padding = None if mask is None else ~mask
        context = self.norm(self.blocks(h, src_key_padding_mask=padding))
        return self.attention(context, mask)
