"""Data-parallel training under ``torchrun`` (DDP): gloo on CPUs, NCCL on GPUs.

``torchrun --nproc-per-node 2 -m hsafast.trainer --config run.toml`` starts one process per
rank; each takes its share of every global batch, and the gradients are averaged by DDP.
InfoNCE gathers the embeddings of the whole global batch (every rank sees every negative,
as one process would), and random masks are drawn for the global batch on every rank from
the same seed, then sliced, so a run on W processes follows the 1-process run up to the
order of floating-point sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Dist", "init_distributed"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share [lo, hi) of a global batch of n items (sizes differ by
        at most one)."""
        return self.rank * n // self.world, (self.rank + 1) * n // self.world

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def sum_int(self, value: int) -> int:
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        torch.distributed.all_reduce(t)
        return int(t.item())

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows (in rank order); gradients flow to the local rows.

        Ranks may hold different row counts (a global batch that does not divide evenly).
        """
        if not self.active:
            return local
        dist = torch.distributed
        count = torch.tensor([local.shape[0]], dtype=torch.int64)
        counts = [torch.zeros_like(count) for _ in range(self.world)]
        dist.all_gather(counts, count)
        sizes = [int(c.item()) for c in counts]
        width = max(sizes)
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded[: local.shape[0]] = local.detach()
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        rows = [p[:s] for p, s in zip(parts, sizes, strict=True)]
        rows[self.rank] = local  # keep the autograd path for this rank's rows
        return torch.cat(rows)

    def broadcast_object(self, value: Any) -> Any:
        if not self.active:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed(device: str = "auto") -> Dist:
    """Join the torchrun job described by the environment, or return a 1-process Dist."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if world <= 1:
        return Dist(0, 1, _device(device, use_cuda, 0))
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, _device(device, use_cuda, local))


def _device(device: str, use_cuda: bool, local_rank: int) -> str:
    if not use_cuda:
        return "cpu"
    if device.startswith("cuda:"):
        return device
    return f"cuda:{local_rank}"
