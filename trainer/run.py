"""A whole training run: inputs checked, cases prepared, folds trained, the run directory written.

```
RUN_DIR/run.json                      configuration, manifest, folds, cases, versions
        failures.csv                  cases that could not be prepared (and why)
        cache/                        prepared tiles, pairs and targets per case
        models/<mode>/fold<k>/        a ModelBundle + train_log.csv (+ checkpoint.pt)
        predictions/<mode>.csv        held-out predictions pooled over folds
        predictions/patch-tiles.csv   held-out per-tile positivity (patch mode)
        embeddings/<mode>.npz         held-out H&E and IHC slide embeddings
```

Per fold, patch mode runs first when the slide-level modes take its tile features; a fold
whose bundle exists is not trained again (its outputs are recomputed from the bundle), and
an interrupted fold resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import TrainingDataError, check_encoder, check_labels, check_manifest
from .config import TrainConfig
from .data import CLASSES, Bag, TilePairs
from .distributed import Dist, init_distributed
from .features import SlideFeatures, features_from_encoder, features_from_files
from .outputs import HeldOut, write_embeddings, write_predictions, write_tile_predictions
from .prepare import PreparedCase, prepare_cases

log = logging.getLogger("hsafast.trainer")

__all__ = ["RunSummary", "train"]


@dataclass
class RunSummary:
    """What a run did, in numbers (the CLI prints ``line()``)."""

    out: Path
    cases: int
    failed: int
    folds: int
    modes: tuple[str, ...]
    seconds: float = 0.0
    accuracy: dict[str, float] = field(default_factory=dict)
    """Held-out accuracy per mode (pooled over folds) against the training labels."""
    tiles_per_second: float = 0.0
    """Patch mode's training throughput (tile pairs per second, stage 1)."""

    def line(self) -> str:
        acc = ", ".join(f"{m} {a:.2f}" for m, a in self.accuracy.items())
        tput = f", patch {self.tiles_per_second:.0f} pairs/s" if self.tiles_per_second else ""
        return (
            f"trained {len(self.modes)} modes x {self.folds} folds on {self.cases} cases "
            f"({self.failed} failed) in {self.seconds:.0f} s; held-out accuracy: {acc}{tput}; "
            f"run in {self.out}"
        )


def _setup(config: TrainConfig) -> Dist:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS determinism
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return init_distributed(config.device)


def _versions() -> dict[str, str]:
    from hsafast import __version__

    return {
        "hsafast": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _write_failures(path: Path, failures: list[Any]) -> None:
    from hsafast._fileio import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "path", "reason"])
        for fail in failures:
            writer.writerow([fail.case_id, fail.path, fail.reason])


def train(config: TrainConfig) -> RunSummary:
    """Run ``config``: every mode on every fold; returns the summary (rank 0's view)."""
    from hsafast.evaluation import patient_folds
    from hsafast.manifest import read_manifest

    t0 = time.perf_counter()
    dist = _setup(config)
    out = Path(config.out)
    manifest = read_manifest(config.manifest)
    cases = check_manifest(manifest, config)
    if config.slide.features != "files" or "patch" in config.modes:
        check_encoder(config)
    if config.data.pipeline == "dali" and "patch" in config.modes:
        from .dali import dali_unavailable

        reason = dali_unavailable(dist.device)
        if reason:
            raise TrainingDataError(f'data.pipeline = "dali": {reason}')

    # prepare on rank 0, which tells the others where each case is
    paths: dict[str, Path] = {}
    failures: list[Any] = []
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        t_prep = time.perf_counter()

        def progress(done: int, total: int) -> None:
            elapsed = time.perf_counter() - t_prep
            log.info("prepared %d/%d cases (%.0f s)", done, total, elapsed)

        paths, failures = prepare_cases(
            cases, config.data, config.data.labels, config.cache_dir, progress
        )
    paths, failures = dist.broadcast_object((paths, failures))
    if failures and dist.is_main:
        _write_failures(out / "failures.csv", failures)
    prepared = [PreparedCase.load(paths[c.case_id]) for c in cases if c.case_id in paths]
    if not prepared:
        raise TrainingDataError("no case could be prepared (see failures.csv)", out)
    labels = [(p.case_id, p.marker, p.label or "") for p in prepared]
    check_labels(labels, CLASSES, manifest.path)
    plan = patient_folds(
        [p.case_id for p in prepared],
        [p.patient_id for p in prepared],
        [f"{p.marker}:{p.label}" for p in prepared],
        k=config.folds,
        seed=config.seed,
    )
    by_id = {p.case_id: p for p in prepared}
    ordered = [by_id[c] for c in plan.case_ids]
    fingerprint = _fingerprint(config, plan.to_dict())
    if dist.is_main:
        _start_or_resume(out, config, fingerprint)
        _write_run_json(out, config, plan.to_dict(), ordered, failures, fingerprint)
    dist.barrier()

    fixed: SlideFeatures | None = None
    encoder_meta: dict[str, Any] = {}
    slide_modes = [m for m in config.modes if m != "patch"]
    if slide_modes and config.slide.features == "files":
        fixed, file_encoder = features_from_files(
            Path(config.data.features),
            [(c.case_id, c.he_path, c.ihc_path, c.marker) for c in cases if c.case_id in by_id],
            config.data.max_tiles,
        )
        encoder_meta = {"files": file_encoder}
    elif slide_modes and config.slide.features == "encoder":
        from .patch_mode import build_encoder

        frozen = build_encoder(config.encoder, config.seed).to(dist.device)
        fixed = features_from_encoder(frozen, frozen, ordered, dist.device)
        encoder_meta = {"frozen": frozen}

    held = {m: HeldOut() for m in config.modes}
    tiles_per_second: list[float] = []
    from .folds import FoldRunner

    for fold in range(config.folds):
        runner = FoldRunner(config, plan, fold, ordered, dist)
        features = fixed
        if "patch" in config.modes:
            patch_features, tput = runner.patch(held["patch"])
            if tput:
                tiles_per_second.append(tput)
            if config.slide.features == "patch-encoder":
                features = patch_features
        for mode in slide_modes:
            assert features is not None  # config validation guarantees a source
            runner.slide_level(mode, features, held[mode], encoder_meta)

    summary = RunSummary(out, len(prepared), len(failures), config.folds, config.modes)
    if dist.is_main:
        checkpoints = out / "checkpoints"
        if checkpoints.is_dir() and not any(p.is_file() for p in checkpoints.rglob("*")):
            shutil.rmtree(checkpoints)  # every fold finished
        for mode, h in held.items():
            write_predictions(out / "predictions" / f"{mode}.csv", h)
            write_embeddings(out / "embeddings" / f"{mode}.npz", h)
            if mode == "patch":
                write_tile_predictions(out / "predictions" / "patch-tiles.csv", h)
            summary.accuracy[mode] = float(
                np.mean([r["predicted"] == r["label"] for r in h.rows]) if h.rows else np.nan
            )
    dist.barrier()
    summary.seconds = time.perf_counter() - t0
    summary.tiles_per_second = float(np.median(tiles_per_second)) if tiles_per_second else 0.0
    return summary


#: Settings that do not change what a run trains (where it runs, whether it resumes).
_NOT_FINGERPRINTED = ("out", "device", "threads", "resume")


def _fingerprint(config: TrainConfig, folds: dict[str, Any]) -> str:
    """Hash of what the models depend on: the configuration and the fold plan."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _NOT_FINGERPRINTED}
    settings["data"] = {k: v for k, v in settings["data"].items() if k not in ("cache", "workers")}
    text = json.dumps({"config": settings, "folds": folds}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _start_or_resume(out: Path, config: TrainConfig, fingerprint: str) -> None:
    """Resume only a run of the same configuration and folds; ``resume=False`` clears the
    run's models, checkpoints and features (the prepared cases stay)."""
    trained = [out / name for name in ("models", "checkpoints", "features")]
    if not config.resume:
        for folder in trained:
            shutil.rmtree(folder, ignore_errors=True)
        return
    previous = out / "run.json"
    if not previous.is_file() or not any(folder.exists() for folder in trained):
        return
    try:
        recorded = json.loads(previous.read_text()).get("fingerprint")
    except (OSError, ValueError):
        recorded = None
    if recorded != fingerprint:
        raise TrainingDataError(
            "this run directory holds models of another configuration or fold plan; "
            "resuming would mix them (use another --out, or --no-resume to start afresh)",
            previous,
        )


def _write_run_json(
    out: Path,
    config: TrainConfig,
    folds: dict[str, Any],
    prepared: list[PreparedCase],
    failures: list[Any],
    fingerprint: str,
) -> None:
    from hsafast._fileio import atomic_write_text

    doc = {
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "manifest": str(config.manifest),
        "versions": _versions(),
        "folds": folds,
        "cases": [
            {
                "case_id": p.case_id,
                "patient_id": p.patient_id,
                "marker": p.marker,
                "label": p.label,
                "stain_class": p.stain_class,
                "stain_score": None if not np.isfinite(p.stain_score) else p.stain_score,
                "he_tiles": len(p.he_tiles),
                "ihc_tiles": len(p.ihc_tiles),
                "pairs": len(p.pair_tiles),
                "targets": int((p.target_weight > 0).sum()),
                "registration": p.registration,
            }
            for p in prepared
        ],
        "failures": [f.__dict__ for f in failures],
    }
    atomic_write_text(out / "run.json", json.dumps(doc, indent=2) + "\n")


def bags_of(cases: list[PreparedCase], features: SlideFeatures) -> list[Bag]:
    """Slide bags of ``cases`` with the given features and integer labels."""
    return [
        Bag(
            c.case_id,
            c.patient_id,
            c.marker,
            CLASSES.index(c.label or ""),
            features[c.case_id][0],
            features[c.case_id][1],
        )
        for c in cases
    ]


def pairs_by_marker(cases: list[PreparedCase]) -> dict[str, TilePairs]:
    markers = sorted({c.marker for c in cases})
    return {m: TilePairs([c for c in cases if c.marker == m]) for m in markers}
