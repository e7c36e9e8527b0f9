"""Patch mode: registered H&E/IHC tile pairs, stain-derived targets, spatial maps.

Stage 1 trains the tile encoders: an H&E encoder shared by the markers and an IHC encoder,
each followed by the marker's projection ``proj`` and contrastive head ``align`` (the IHC
side through the marker's IHC branch). Loss per batch (one marker's pairs) =
contrastive_weight * symmetric InfoNCE between the H&E and IHC tile embeddings +
regression_weight * binary cross-entropy of the marker's ``positivity`` head (from H&E
alone) against the positive share read from the paired IHC tile, over tiles with enough
cells. Stage 2 embeds every tile with the trained H&E encoder and trains the marker's
gated-attention pool and classification head over those bags (cross-entropy), with the
tile encoder and ``proj`` fixed, so slide predictions pool the very tile embeddings whose
positivity the spatial map shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from hsafast.encoders import create_encoder, encoder_info
from hsafast.encoders.base import TileEncoder, resize_tiles
from hsafast.models import SlideModel, SlideModelConfig

from .config import EncoderConfig, PatchConfig, SlideConfig
from .data import CLASSES, PairBatch, TilePairs, apply_ops, epoch_generator, stain_jitter
from .distributed import Dist
from .loop import FitResult, StepOutput, fit, unwrap
from .losses import info_nce, weighted_bce

__all__ = ["PatchObjective", "build_encoder", "patch_model_config", "train_tile_stage"]


def build_encoder(cfg: EncoderConfig, seed: int) -> TileEncoder:
    """The configured tile encoder, seeded (small encoders) and with its weights file."""
    info = encoder_info(cfg.name)
    weights = cfg.weights or None
    if info.family == "small" or info.family == "test":
        return create_encoder(cfg.name, weights=weights, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_encoder(cfg.name, weights=weights)


def patch_model_config(in_dim: int, cfg: PatchConfig, slide: SlideConfig) -> SlideModelConfig:
    """A marker's patch-mode slide model: separate IHC branch, projection and positivity."""
    return SlideModelConfig(
        in_dim=in_dim,
        classes=CLASSES,
        embed_dim=slide.embed_dim,
        attention_hidden=slide.attention_hidden,
        aggregator=slide.aggregator,
        proj_dropout=slide.proj_dropout,
        head_dropout=slide.head_dropout,
        ihc="separate",
        align_dim=cfg.projection_dim,
        positivity_outputs=1,
    )


class PatchObjective(nn.Module):
    """Stage 1's forward pass (the module DDP wraps)."""

    def __init__(
        self, he_encoder: TileEncoder, ihc_encoder: TileEncoder, models: nn.ModuleDict
    ) -> None:
        super().__init__()
        self.he_encoder = he_encoder
        self.ihc_encoder = ihc_encoder
        self.models = models

    def forward(
        self, he: torch.Tensor, ihc: torch.Tensor, marker: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(H&E aligned embedding, IHC aligned embedding, positivity logits) per tile."""
        model = self.models[marker]
        assert isinstance(model, SlideModel)
        h = model.proj(self.he_encoder(he))
        assert model.ihc is not None and model.positivity is not None
        h_ihc = model.ihc.proj(self.ihc_encoder(ihc))
        return model.align_he(h), model.align_ihc(h_ihc), model.positivity(h)[:, 0]


def _set_trainable(objective: PatchObjective, freeze_encoder: bool) -> list[nn.Parameter]:
    """Stage 1 trains the encoders (unless frozen), proj, align, positivity and the IHC
    branch; the pool and the classification head wait for stage 2."""
    params: list[nn.Parameter] = []
    for enc in (objective.he_encoder, objective.ihc_encoder):
        for p in enc.parameters():
            p.requires_grad_(not freeze_encoder)
            if not freeze_encoder:
                params.append(p)
    for model in objective.models.values():
        assert isinstance(model, SlideModel)
        for name, p in model.named_parameters():
            learn = not name.startswith(("pool.", "head."))
            p.requires_grad_(learn)
            if learn:
                params.append(p)
    return params


def train_tile_stage(
    objective: PatchObjective,
    train: dict[str, TilePairs],
    val: dict[str, TilePairs],
    cfg: PatchConfig,
    *,
    seed: int,
    dist: Dist,
    workdir: Path,
    resume: bool,
    label: str,
    pipeline: str = "torch",
) -> FitResult:
    """Stage 1 on the training pairs of every marker; checkpoint by validation loss.

    ``pipeline`` "dali" feeds the tiles through NVIDIA DALI on the GPU (``trainer.dali``).
    """
    objective.to(dist.device)
    params = _set_trainable(objective, cfg.freeze_encoder)
    wrapped: nn.Module = objective
    if dist.active:
        wrapped = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
    he_encoder = objective.he_encoder
    markers = sorted(m for m, pairs in train.items() if len(pairs) >= 2)
    if not markers:
        raise ValueError("no marker has registered tile pairs to train on")

    def loss_of(
        outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        weight: torch.Tensor,
        d: Dist,
        global_weight: float,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """InfoNCE over the gathered global batch, and the regression normalised by the
        global batch's target weight (so DDP's gradient average is the one-process one)."""
        z_he, z_ihc, positivity = outputs
        nce = info_nce(d.gather(z_he), d.gather(z_ihc), cfg.temperature)
        weight = weight.to(positivity.device)
        per_tile = nn.functional.binary_cross_entropy_with_logits(
            positivity, target.to(positivity.device), reduction="none"
        )
        reg = (per_tile * weight).sum() / max(global_weight, 1e-6)
        local = weighted_bce(positivity, target.to(positivity.device), weight)
        loss = cfg.contrastive_weight * d.world * nce + cfg.regression_weight * d.world * reg
        return loss, {"infonce": float(nce.detach()), "bce": float(local.detach())}

    dali = None
    if pipeline == "dali":
        from .dali import DaliPairs

        index = torch.device(dist.device).index
        dali = DaliPairs(cfg.optim.batch_size, he_encoder.mean, he_encoder.std, index or 0)

    def inputs(batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformed, normalised tiles on the device (torch path or DALI)."""
        if dali is None:  # uint8 to the device first: a quarter of the bytes of float
            ops = batch.ops.to(dist.device)
            he, ihc = (
                apply_ops(batch.he.to(dist.device), ops),
                apply_ops(batch.ihc.to(dist.device), ops),
            )
            if batch.jitter is not None:
                he = stain_jitter(he, batch.jitter[:, 0])
                ihc = stain_jitter(ihc, batch.jitter[:, 1])
            return he_encoder.preprocess(he), he_encoder.preprocess(ihc)
        size = he_encoder.input_size
        he, ihc = dali(batch.he, batch.ihc, batch.ops)
        return (
            resize_tiles(he, size).contiguous(memory_format=torch.channels_last),
            resize_tiles(ihc, size).contiguous(memory_format=torch.channels_last),
        )

    def batches(epoch: int) -> Iterator[tuple[str, PairBatch]]:
        # one marker per batch, markers interleaved in a seeded order
        streams = {
            m: train[m].epoch(
                epoch, cfg.optim.batch_size, seed + 7919 * i, dist, cfg.augment, cfg.stain_jitter
            )
            for i, m in enumerate(markers)
        }
        plan = [m for m in markers for _ in range(_n_batches(len(train[m]), cfg.optim.batch_size))]
        order = torch.randperm(len(plan), generator=epoch_generator(seed, epoch, 2)).tolist()
        for k in order:
            yield plan[k], next(streams[plan[k]])

    def step(item: tuple[str, PairBatch]) -> StepOutput:
        marker, batch = item
        x_he, x_ihc = inputs(batch)
        outputs = wrapped(x_he, x_ihc, marker)
        loss, parts = loss_of(outputs, batch.target, batch.weight, dist, batch.global_weight)
        return StepOutput(loss, parts, int(batch.he.shape[0]))

    @torch.no_grad()
    def validate() -> float:
        total, count = 0.0, 0
        for marker, pairs in val.items():
            if marker not in objective.models:
                continue
            for he, ihc, target, weight in pairs.batches(cfg.optim.batch_size):
                if len(he) < 2:
                    continue
                none = torch.zeros(len(he), dtype=torch.long)
                x_he, x_ihc = inputs(PairBatch(he, ihc, none, target, weight, 0.0))
                outputs = objective(x_he, x_ihc, marker)
                loss, _ = loss_of(outputs, target, weight, Dist(), float(weight.sum()))
                total += float(loss) * len(he)
                count += len(he)
        return total / count if count else float("nan")

    steps = sum(_n_batches(len(train[m]), cfg.optim.batch_size) for m in markers)
    result, best = fit(
        wrapped,
        cfg.optim,
        batches,
        step,
        validate,
        steps_per_epoch=max(1, steps),
        workdir=workdir,
        dist=dist,
        label=label,
        seed=seed,
        parameters=params,
        resume=resume,
    )
    unwrap(wrapped).load_state_dict(best)
    for p in objective.parameters():
        p.requires_grad_(True)
    objective.eval()
    return result


def _n_batches(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


@torch.no_grad()
def tile_positivity(model: SlideModel, features: torch.Tensor, device: str = "cpu") -> np.ndarray:
    """Predicted positive share (0-1) of each tile, from its H&E features (N x D)."""
    model.eval()
    assert model.positivity is not None
    h = model.proj(features.to(device))
    return model.positivity.probability(h)[:, 0].cpu().numpy()
