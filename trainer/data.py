"""Training data in memory: slide bags of tile features, and registered tile pairs.

Prepared cases (``prepare.py``) hold uint8 tiles; slide-level modes see each case as a bag
of tile features (N x D) per stain, patch mode sees tile pairs with their stain targets.
Every random choice (batch order, augmentation) comes from a generator seeded by
``(seed, epoch)``, so an epoch's batches do not depend on what ran before it: a resumed
run and a run on several processes see the same data as one uninterrupted process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hsafast.encoders.base import TileEncoder

from .distributed import Dist
from .prepare import PreparedCase

__all__ = [
    "CLASSES",
    "Bag",
    "PairBatch",
    "TilePairs",
    "apply_ops",
    "augment_pair",
    "draw_ops",
    "draw_stain_jitter",
    "embed_tiles",
    "epoch_generator",
    "global_batches",
    "pad_bags",
    "stain_jitter",
]

#: The paper's binary reading, in logit order (``hsafast.stain`` and the simulator use these).
CLASSES = ("low", "intermediate/high")


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for one epoch's random choices (``stream`` separates their uses)."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0]))
    return g


def global_batches(n: int, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """A shuffled epoch of ``n`` items in batches; a last batch of one item is dropped
    (InfoNCE needs a negative)."""
    order = torch.randperm(n, generator=generator).numpy()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) >= 2]


@dataclass
class Bag:
    """One case as bags of tile features."""

    case_id: str
    patient_id: str
    marker: str
    label: int
    he: torch.Tensor
    """(N, D) H&E tile features."""
    ihc: torch.Tensor
    """(M, D) IHC tile features."""


def pad_bags(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N_max, D) zero-padded bags and the (B, N_max) mask of real tiles."""
    n = max(int(t.shape[0]) for t in tensors)
    d = int(tensors[0].shape[1])
    out = torch.zeros((len(tensors), n, d), dtype=tensors[0].dtype)
    mask = torch.zeros((len(tensors), n), dtype=torch.bool)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return out, mask


@torch.no_grad()
def embed_tiles(
    encoder: TileEncoder, tiles: np.ndarray, device: str = "cpu", batch_size: int = 256
) -> torch.Tensor:
    """(N, D) float32 CPU features of uint8 tiles, with the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    out = torch.zeros((len(tiles), encoder.dim), dtype=torch.float32)
    try:
        for start in range(0, len(tiles), batch_size):
            x = encoder.preprocess(tiles[start : start + batch_size]).to(device)
            out[start : start + len(x)] = encoder(x).float().cpu()
    finally:
        encoder.train(was_training)
    return out


def draw_ops(n: int, generator: torch.Generator) -> torch.Tensor:
    """One of the 8 flips/90-degree rotations per tile: bit 2 = mirror (left-right), then
    bits 0-1 = quarter turns (``torch.rot90`` over the height and width axes)."""
    return torch.randint(0, 8, (n,), generator=generator)


def apply_ops(tiles: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    """Tiles (B x H x W x 3) transformed by their ``draw_ops`` codes."""
    out = tiles.clone()
    for op in range(1, 8):
        idx = torch.nonzero(ops == op).flatten()
        if len(idx) == 0:
            continue
        t = tiles[idx]
        if op & 4:
            t = t.flip(2)
        out[idx] = torch.rot90(t, op & 3, dims=(1, 2))
    return out


def draw_stain_jitter(n: int, generator: torch.Generator, strength: float) -> torch.Tensor:
    """(n, 2, 3) per tile: a scale (row 0) and a shift (row 1) of each stain's optical
    density, uniform in 1 +- ``strength`` and +- ``strength`` (Tellez et al., 2018,
    "HED-light": strength 0.05)."""
    u = 2.0 * torch.rand((n, 2, 3), generator=generator) - 1.0
    return u * strength + torch.tensor([1.0, 0.0]).view(1, 2, 1)


def stain_jitter(tiles: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """uint8 tiles (B x H x W x 3) with each stain's optical density scaled and shifted by
    ``draw_stain_jitter`` values (B x 2 x 3), in Ruifrok and Johnston's H/E/DAB space.

    Every simulated (and scanned) slide has its own stain colours; without this a model
    can learn a slide's colour instead of its cells (the colour says nothing about a tile
    of another slide).
    """
    from hsafast.stain.vectors import HED

    rgb_from_hed = torch.tensor(HED.rgb_from_stains, dtype=torch.float32, device=tiles.device)
    rgb_from_hed = rgb_from_hed / rgb_from_hed.norm(dim=1, keepdim=True)
    od = -torch.log((tiles.float() + 1.0) / 256.0)
    hed = od @ torch.linalg.inv(rgb_from_hed)
    jitter = jitter.to(tiles.device, torch.float32)
    hed = hed * jitter[:, 0].view(-1, 1, 1, 3) + jitter[:, 1].view(-1, 1, 1, 3)
    rgb = 256.0 * torch.exp(-(hed @ rgb_from_hed)) - 1.0
    return rgb.round_().clamp_(0, 255).to(torch.uint8)


def augment_pair(
    he: torch.Tensor, ihc: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip and 90-degree rotation on both tiles of each pair (B x H x W x 3)."""
    ops = draw_ops(he.shape[0], generator)
    return apply_ops(he, ops), apply_ops(ihc, ops)


@dataclass
class PairBatch:
    """This process's share of one global batch of tile pairs."""

    he: torch.Tensor
    """uint8 B x S x S x 3, not yet transformed."""
    ihc: torch.Tensor
    ops: torch.Tensor
    """Per pair: the flip/rotation code (``draw_ops``; 0 = none) to apply to both tiles."""
    target: torch.Tensor
    weight: torch.Tensor
    global_weight: float
    """Total target weight of the global batch."""
    jitter: torch.Tensor | None = None
    """(B, 2, 2, 3) stain jitter of the H&E (index 0) and the IHC tile (``draw_stain_jitter``);
    None: none."""


class TilePairs:
    """Registered H&E/IHC tile pairs of some cases, with the stain-derived targets."""

    def __init__(self, cases: Sequence[PreparedCase]) -> None:
        paired = [c for c in cases if c.paired]
        self.case_ids = [c.case_id for c in paired]
        s = paired[0].he_tiles.shape[1] if paired else 1
        self.he = torch.from_numpy(
            np.concatenate([c.he_tiles for c in paired])
            if paired
            else np.zeros((0, s, s, 3), np.uint8)
        )
        self.ihc = torch.from_numpy(
            np.concatenate([c.pair_tiles for c in paired])
            if paired
            else np.zeros((0, s, s, 3), np.uint8)
        )
        self.targets = torch.from_numpy(
            np.concatenate([c.targets for c in paired]) if paired else np.zeros(0, np.float32)
        )
        self.weights = torch.from_numpy(
            np.concatenate([c.target_weight for c in paired]) if paired else np.zeros(0, np.float32)
        )

    def __len__(self) -> int:
        return int(self.he.shape[0])

    def epoch(
        self,
        epoch: int,
        batch_size: int,
        seed: int,
        dist: Dist,
        augment: bool,
        stain_jitter: float = 0.0,
    ) -> Iterator[PairBatch]:
        """This process's share of each global batch; the flip/rotation codes and stain
        jitters are drawn for the global batch on every process, so they do not depend on
        the process count."""
        g = epoch_generator(seed, epoch)
        aug = epoch_generator(seed, epoch, stream=1)
        colour = epoch_generator(seed, epoch, stream=3)
        for batch in global_batches(len(self), batch_size, g):
            idx = torch.from_numpy(batch)
            ops = draw_ops(len(idx), aug) if augment else torch.zeros(len(idx), dtype=torch.long)
            jitter = None
            if augment and stain_jitter > 0:
                jitter = draw_stain_jitter(2 * len(idx), colour, stain_jitter).view(-1, 2, 2, 3)
            lo, hi = dist.bounds(len(idx))
            local = idx[lo:hi]
            yield PairBatch(
                self.he[local],
                self.ihc[local],
                ops[lo:hi],
                self.targets[local],
                self.weights[local],
                float(self.weights[idx].sum()),
                None if jitter is None else jitter[lo:hi],
            )

    def batches(
        self, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Every pair in order (validation)."""
        for start in range(0, len(self), batch_size):
            sl = slice(start, start + batch_size)
            yield self.he[sl], self.ihc[sl], self.targets[sl], self.weights[sl]
