"""The training loop shared by every mode: AdamW, warm-up + cosine, validation, checkpoints.

``fit`` runs epochs of caller-supplied batches, keeps the weights of the epoch with the
lowest validation loss (the authors' checkpoint choice), writes ``train_log.csv`` and a
resumable checkpoint after every epoch, and reports loss and throughput as it goes.
A checkpoint holds tensors and plain numbers only and is read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import OptimConfig
from .distributed import Dist

log = logging.getLogger("hsafast.trainer")

__all__ = ["FitResult", "StepOutput", "cosine_warmup", "fit", "unwrap"]


@dataclass
class StepOutput:
    """One batch's loss (what is back-propagated), its named parts and its size in items."""

    loss: torch.Tensor
    parts: dict[str, float]
    items: int


@dataclass
class FitResult:
    best_epoch: int
    best_val_loss: float
    epochs: int
    seconds: float
    items_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None


def cosine_warmup(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to ``optim.lr`` over ``warmup_epochs``, then cosine decay to ``min_lr``."""
    total = max(1, optim.epochs * steps_per_epoch)
    warm = min(total - 1, round(optim.warmup_epochs * steps_per_epoch))
    floor = optim.min_lr / optim.lr

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (itself otherwise)."""
    inner = getattr(module, "module", None)
    return inner if isinstance(module, nn.parallel.DistributedDataParallel) and inner else module


def fit(
    model: nn.Module,
    optim: OptimConfig,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any], StepOutput],
    validate: Callable[[], float],
    *,
    steps_per_epoch: int,
    workdir: Path,
    dist: Dist,
    label: str,
    seed: int,
    parameters: Iterable[nn.Parameter] | None = None,
    resume: bool = True,
) -> tuple[FitResult, dict[str, torch.Tensor]]:
    """Train ``model``; returns the result and the state dict of the best epoch.

    ``batches(epoch)`` yields this process's batches of an epoch (a pure function of the
    epoch, so a resumed run sees the same data order); ``step(batch)`` computes the loss;
    ``validate()`` the validation loss (the same on every process; NaN when there is no
    validation data, and then the last epoch is kept). The global RNG (dropout) is seeded
    with ``seed`` at the start and restored from the checkpoint on resume, so a run does not
    depend on what the process did before.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    params = [p for p in (parameters if parameters is not None else model.parameters())]
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = cosine_warmup(optimizer, optim, steps_per_epoch)
    ckpt_path = workdir / "checkpoint.pt"
    log_path = workdir / "train_log.csv"
    inner = unwrap(model)
    start_epoch, best_epoch, best_val = 0, -1, math.inf
    best_state = _state(inner)
    history: list[dict[str, float]] = []
    resumed_from = None
    torch.manual_seed(seed)
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        inner.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
        best_epoch, best_val = int(ckpt["best_epoch"]), float(ckpt["best_val_loss"])
        best_state = ckpt["best_state"]
        history = [dict(h) for h in ckpt["history"]]
        resumed_from = start_epoch
        log.info("%s: resuming after epoch %d", label, start_epoch)
    t_start = time.perf_counter()
    items_total = 0
    for epoch in range(start_epoch, optim.epochs):
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        n_batches, items = 0, 0
        for batch in batches(epoch):
            out = step(batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            scheduler.step()
            for k, v in out.parts.items():
                sums[k] = sums.get(k, 0.0) + v
            n_batches += 1
            items += out.items
        model.eval()
        val = float(validate())
        seconds = time.perf_counter() - t0
        items = dist.sum_int(items)
        items_total += items
        row = {
            "epoch": float(epoch),
            **{k: v / max(1, n_batches) for k, v in sums.items()},
            "val_loss": val,
            "lr": float(scheduler.get_last_lr()[0]),
            "items_per_second": items / seconds if seconds > 0 else 0.0,
            "seconds": seconds,
        }
        history.append(row)
        if math.isnan(val) or val < best_val:  # NaN: no validation cases, keep the last
            best_val, best_epoch, best_state = val, epoch, _state(inner)
        if dist.is_main:
            _write_log(log_path, history)
            ckpt = {
                "model": inner.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "epoch": epoch,
                "best_epoch": best_epoch,
                "best_val_loss": best_val,
                "best_state": best_state,
                "history": history,
            }
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(ckpt, tmp)
            tmp.replace(ckpt_path)
            parts = " ".join(f"{k} {v / max(1, n_batches):.4f}" for k, v in sums.items())
            log.info(
                "%s epoch %d/%d: %s | val %.4f | %.0f items/s",
                label,
                epoch + 1,
                optim.epochs,
                parts,
                val,
                row["items_per_second"],
            )
        dist.barrier()
    elapsed = time.perf_counter() - t_start
    result = FitResult(
        best_epoch=best_epoch,
        best_val_loss=best_val,
        epochs=optim.epochs,
        seconds=elapsed,
        items_per_second=items_total / elapsed if elapsed > 0 else 0.0,
        history=history,
        resumed_from=resumed_from,
    )
    return result, copy.deepcopy(best_state)


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    from hsafast._fileio import atomic_path

    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: f"{v:.6g}" for k, v in row.items()})
