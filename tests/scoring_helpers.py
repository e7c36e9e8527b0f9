"""Randomly initialised bundles for the scoring tests (no trained weights are needed to test
the plumbing: every comparison is between two ways of running the same random model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def random_bundle(
    path: Path | None = None,
    *,
    encoder: str = "hsafast-test-tiny",
    markers: tuple[str, ...] = ("ki67", "p53"),
    aggregator: str = "gated",
    patch: bool = True,
    tile_size: int = 64,
    target_mpp: float = 1.0,
    seed: int = 0,
):
    """A ModelBundle with random weights (saved to `path` when given), encoder inside."""
    from hsafast.bundle import EncoderSpec, ModelBundle, Preprocessing
    from hsafast.encoders import create_encoder
    from hsafast.models import SlideModel, SlideModelConfig

    torch.manual_seed(seed)
    enc = create_encoder(encoder)
    # a random encoder's BatchNorm statistics are 0/1: perturb them so that eval mode is not
    # the identity, and give the bias some spread (a more realistic, less symmetric model)
    with torch.no_grad():
        for module in enc.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    config = dict(
        embed_dim=32,
        attention_hidden=16,
        aggregator=aggregator,
        positivity_outputs=1 if patch else 0,
        transformer_heads=4,
    )
    models = {m: SlideModel(SlideModelConfig(in_dim=enc.dim, **config)) for m in markers}
    bundle = ModelBundle(
        mode="patch" if patch else "slide",
        encoder=EncoderSpec.from_encoder(enc, in_bundle=True),
        models=models,
        preprocessing=Preprocessing(target_mpp=target_mpp, tile_size=tile_size, max_tiles=512),
        tile_encoder=enc,
    )
    if path is not None:
        bundle.save(path)
    return bundle


def random_tiles(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Tissue-like uint8 tiles: a pink-purple base with noise and blobs (not constant)."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 140, 190], dtype=np.float32)
    tiles = base + rng.normal(0, 25, size=(n, size, size, 3)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cx, cy = rng.uniform(0, size, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size / 6) ** 2))
        tiles[i] -= 90 * blob[..., None] * np.array([0.6, 1.0, 0.3], dtype=np.float32)
    return np.clip(tiles, 0, 255).astype(np.uint8)
