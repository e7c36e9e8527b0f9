"""Plain reference implementations of gated-attention pooling, the ground truth for the kernels.

The PyTorch one is also the `engine="torch"` fallback (any device, any dtype): it is the eager
computation the fused kernels replace, materialising the N x H intermediates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hsafast.pooling.params import GatedAttentionParams

if TYPE_CHECKING:
    import torch


def torch_params(
    params: GatedAttentionParams, device: Any = "cpu", dtype: Any = None
) -> dict[str, torch.Tensor]:
    """The parameters as tensors on `device` (cached per device and dtype)."""
    import torch

    dtype = dtype or torch.float32
    key = f"torch:{device}:{dtype}"
    cache = params._cache
    if key not in cache:
        cache[key] = {
            name: torch.from_numpy(np.array(arr)).to(device=device, dtype=dtype)
            for name, arr in params.to_dict().items()
        }
    return cache[key]


def attention_logits_torch(h: torch.Tensor, params: GatedAttentionParams) -> torch.Tensor:
    """Logits a_i = w . (tanh(V h_i + bV) * sigmoid(U h_i + bU)) + b_w, in h's dtype."""
    import torch

    p = torch_params(params, h.device, h.dtype)
    gated = torch.tanh(h @ p["V"].T + p["bV"]) * torch.sigmoid(h @ p["U"].T + p["bU"])
    return gated @ p["w"] + p["b_w"][0]


def gated_attention_pool_torch(
    h: torch.Tensor, params: GatedAttentionParams, return_weights: bool = False
) -> Any:
    """Eager PyTorch pooling: softmax of the logits over N, then the weighted sum of h."""
    import torch

    weights = torch.softmax(attention_logits_torch(h, params), dim=0)
    pooled = weights @ h
    return (pooled, weights) if return_weights else pooled


def gated_attention_pool_numpy(
    h: np.ndarray, params: GatedAttentionParams, return_weights: bool = False
) -> Any:
    """NumPy pooling in float64 (a second, independent reference)."""
    x = np.asarray(h, dtype=np.float64)
    zv = x @ params.V.T.astype(np.float64) + params.bV
    zu = x @ params.U.T.astype(np.float64) + params.bU
    logits = (np.tanh(zv) / (1.0 + np.exp(-zu))) @ params.w.astype(np.float64) + params.b_w
    e = np.exp(logits - logits.max())
    weights = e / e.sum()
    pooled = weights @ x
    return (pooled, weights) if return_weights else pooled
