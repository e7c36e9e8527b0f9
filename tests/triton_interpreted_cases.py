"""Runs the fused Triton pooling kernels under Triton's interpreter and prints errors as JSON.

Used by test_pooling_triton.py (in a subprocess with TRITON_INTERPRET=1): argv[1] is a JSON
object {"cases": [[N, D, H], ...], "tiles": {...TileConfig fields}, "bad": null|"nan"|"inf"}.
Run as a script, so that its folder (tests/) is on sys.path.
"""

from __future__ import annotations

import json
import sys

import torch
from pooling_helpers import random_bag, random_params

from hsafast.pooling import GatedAttentionParams
from hsafast.pooling import triton_fused as tf
from hsafast.pooling.cuda import device_params
from hsafast.pooling.reference import gated_attention_pool_torch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def run(n: int, dim: int, hidden: int, tiles: tf.TileConfig, bad: str | None) -> dict:
    params = random_params(dim, hidden, seed=hidden, scale=4.0)
    h = torch.from_numpy(random_bag(n, dim, seed=n + dim)).to(torch.float16)
    if bad:
        h[n // 2, dim // 3] = float(bad)
    p = device_params(params, h.device, h.dtype)
    stacked = p["weights"]
    args = (h, stacked, p["bV"], p["bU"], p["w"])
    logits = tf.launch(*args, params.b_w, want_logits=True, want_weights=False, tiles=tiles)
    out = tf.launch(*args, params.b_w, want_logits=False, want_weights=True, tiles=tiles)
    # the reference on exactly the kernel's 16-bit operands, in fp32 arithmetic
    exact = GatedAttentionParams(
        stacked[:hidden].float().numpy(),
        params.bV,
        stacked[hidden:].float().numpy(),
        params.bU,
        params.w,
        params.b_w,
    )
    ref, ref_w = gated_attention_pool_torch(h.float(), exact, return_weights=True)
    hf = h.float()
    tanh = torch.tanh(hf @ torch.from_numpy(exact.V).T + torch.from_numpy(exact.bV))
    gate = torch.sigmoid(hf @ torch.from_numpy(exact.U).T + torch.from_numpy(exact.bU))
    ref_logits = (tanh * gate) @ torch.from_numpy(exact.w) + exact.b_w
    state = out["state"]
    return {
        "case": [n, dim, hidden],
        "status": int(out["status"][0]),
        "pooled_first": float(out["pooled"][0]),
        "pooled": rel(out["pooled"], ref),
        "weights": rel(out["logits"], ref_w),
        "weights_sum": float(out["logits"].double().sum()),
        "logits": rel(logits["logits"], ref_logits),
        "max": abs(float(state[0]) - float(ref_logits.max())),
        "sum": abs(float(state[1]) / float(torch.exp(ref_logits - ref_logits.max()).sum()) - 1),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    tiles = tf.TileConfig(**spec["tiles"])
    results = [run(*case, tiles=tiles, bad=spec["bad"]) for case in spec["cases"]]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
