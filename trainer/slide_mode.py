"""Slide-level modes over bags of tile features: HistoStainAlign and its two baselines.

- ``slide``: loss = contrastive_weight * symmetric InfoNCE(H&E slide embedding, IHC slide
  embedding) + mse_weight * MSE(H&E embedding with 50% of tiles zeroed, without) +
  ce_weight * cross-entropy of the classification head on the H&E embedding.
- ``classification-only``: the same model, cross-entropy alone (the paper's baseline).
- ``mean-pool``: mean of the projected tiles instead of attention, cross-entropy alone.

Under DDP every process takes its share of each global batch; the InfoNCE sees the whole
batch (gathered embeddings), and its local term is scaled by the world size so that DDP's
gradient average gives the gradient of the one-process loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hsafast.models import SlideModel, SlideModelConfig

from .config import OptimConfig, SlideConfig
from .data import CLASSES, Bag, epoch_generator, global_batches, pad_bags
from .distributed import Dist
from .loop import FitResult, StepOutput, fit, unwrap
from .losses import info_nce, mask_tiles, masked_target_mse, random_tile_mask

__all__ = ["SlideOutputs", "evaluate_bags", "slide_model_config", "train_slide_level"]

#: The "epoch" whose random masks the validation loss uses (the same every epoch).
VALIDATION_EPOCH = 1_000_000


def slide_model_config(mode: str, in_dim: int, cfg: SlideConfig, ihc: str) -> SlideModelConfig:
    """The architecture of a slide-level mode (the baselines differ only where named)."""
    return SlideModelConfig(
        in_dim=in_dim,
        classes=CLASSES,
        embed_dim=cfg.embed_dim,
        attention_hidden=cfg.attention_hidden,
        aggregator="mean" if mode == "mean-pool" else cfg.aggregator,
        proj_dropout=cfg.proj_dropout,
        head_dropout=cfg.head_dropout,
        ihc=ihc,
    )


class SlideObjective(nn.Module):
    """One step's forward pass (the module DDP wraps): H&E, masked H&E and IHC embeddings."""

    def __init__(self, model: SlideModel, aligned: bool) -> None:
        super().__init__()
        self.model = model
        self.aligned = aligned

    def forward(
        self,
        he: torch.Tensor,
        he_mask: torch.Tensor,
        he_masked: torch.Tensor,
        ihc: torch.Tensor,
        ihc_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        out = self.model(he, he_mask)
        if not self.aligned:
            return out.embedding, out.logits, None, None
        masked = self.model(he_masked, he_mask).embedding
        ihc_embedding = self.model.encode_ihc(ihc, ihc_mask)[0]
        return out.embedding, out.logits, masked, ihc_embedding


def _mask_generators(seed: int, epoch: int, case_index: list[int]) -> list[torch.Generator]:
    return [epoch_generator(seed, epoch, stream=10_000 + i) for i in case_index]


def _losses(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    labels: torch.Tensor,
    cfg: SlideConfig,
    dist: Dist,
    global_n: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss to back-propagate, reported parts). Per-case terms are this process's mean
    scaled by its share of the global batch times the world size, so that DDP's gradient
    average equals the gradient of the global batch's mean, whatever the split."""
    embedding, logits, masked, ihc = outputs
    share = len(labels) * dist.world / global_n
    ce = F.cross_entropy(logits, labels)
    parts = {"ce": float(ce.detach())}
    loss = cfg.ce_weight * share * ce
    if masked is not None and ihc is not None:
        full_he, full_ihc = dist.gather(embedding), dist.gather(ihc)
        nce = info_nce(full_he, full_ihc, cfg.temperature)
        mse = masked_target_mse(masked, embedding)
        # every process holds the whole InfoNCE; DDP averages gradients over processes
        loss = loss + cfg.contrastive_weight * dist.world * nce + cfg.mse_weight * share * mse
        parts.update({"infonce": float(nce.detach()), "mse": float(mse.detach())})
    return loss, parts


def _batch(
    bags: list[Bag], index: list[int], cfg: SlideConfig, seed: int, epoch: int, device: str
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    he, he_mask = pad_bags([bags[i].he for i in index])
    ihc, ihc_mask = pad_bags([bags[i].ihc for i in index])
    counts = [int(bags[i].he.shape[0]) for i in index]
    drop = random_tile_mask(
        counts, he.shape[1], cfg.mask_fraction, _mask_generators(seed, epoch, index)
    )
    tensors = (he, he_mask, mask_tiles(he, drop), ihc, ihc_mask)
    labels = torch.tensor([bags[i].label for i in index], dtype=torch.long)
    return tuple(t.to(device) for t in tensors), labels.to(device)


def train_slide_level(
    mode: str,
    train: list[Bag],
    val: list[Bag],
    cfg: SlideConfig,
    *,
    ihc_branch: str,
    seed: int,
    dist: Dist,
    workdir: Path,
    resume: bool,
    label: str,
    model: SlideModel | None = None,
    trainable: list[nn.Parameter] | None = None,
    optim: OptimConfig | None = None,
) -> tuple[SlideModel, FitResult]:
    """Train one marker's slide model on ``train``, choosing the epoch by loss on ``val``.

    ``model`` and ``trainable`` continue an existing model with only some of its parameters
    learning (patch mode's slide head); ``optim`` replaces ``cfg.optim``.
    """
    aligned = mode == "slide"
    optim = optim or cfg.optim
    if model is None:
        in_dim = int(train[0].he.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SlideModel(slide_model_config(mode, in_dim, cfg, ihc_branch))
    model = model.to(dist.device)
    objective: nn.Module = SlideObjective(model, aligned)
    if dist.active:
        objective = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
    val_inputs = (
        _batch(val, list(range(len(val))), cfg, seed, VALIDATION_EPOCH, dist.device)
        if val
        else None
    )

    def batches(epoch: int) -> list[tuple[list[int], int, int]]:
        g = epoch_generator(seed, epoch)
        out = []
        for batch in global_batches(len(train), optim.batch_size, g):
            lo, hi = dist.bounds(len(batch))
            out.append(([int(i) for i in batch[lo:hi]], epoch, len(batch)))
        return out

    def step(item: tuple[list[int], int, int]) -> StepOutput:
        index, epoch, global_n = item
        inputs, labels = _batch(train, index, cfg, seed, epoch, dist.device)
        loss, parts = _losses(objective(*inputs), labels, cfg, dist, global_n)
        return StepOutput(loss, parts, len(index))

    @torch.no_grad()
    def validate() -> float:
        if val_inputs is None:
            return float("nan")
        inputs, labels = val_inputs
        outputs = SlideObjective(model, aligned and len(val) >= 2)(*inputs)
        loss, _ = _losses(outputs, labels, cfg, Dist(), len(labels))
        return float(loss)

    result, best = fit(
        objective,
        optim,
        batches,
        step,
        validate,
        steps_per_epoch=max(1, len(batches(0))),
        workdir=workdir,
        dist=dist,
        label=label,
        seed=seed,
        parameters=trainable,
        resume=resume,
    )
    unwrap(objective).load_state_dict(best)
    model.eval()
    return model, result


@dataclass
class SlideOutputs:
    """Held-out outputs of a slide model."""

    probabilities: np.ndarray
    """(B, C) class probabilities."""
    he: np.ndarray
    """(B, E) H&E slide embeddings."""
    ihc: np.ndarray
    """(B, E) IHC slide embeddings (the model's IHC branch); NaN where it has none."""


@torch.no_grad()
def evaluate_bags(model: SlideModel, bags: list[Bag], device: str = "cpu") -> SlideOutputs:
    """Probabilities and slide embeddings of each bag, one bag at a time (no padding)."""
    model.eval()
    probs, he_emb, ihc_emb = [], [], []
    for bag in bags:
        out = model(bag.he.to(device))
        probs.append(torch.softmax(out.logits, dim=-1)[0].cpu().numpy())
        he_emb.append(out.embedding[0].cpu().numpy())
        if model.config.ihc == "none":
            ihc_emb.append(np.full(model.config.embed_dim, np.nan, np.float32))
        else:
            ihc_emb.append(model.encode_ihc(bag.ihc.to(device))[0][0].cpu().numpy())
    return SlideOutputs(np.stack(probs), np.stack(he_emb), np.stack(ihc_emb))
