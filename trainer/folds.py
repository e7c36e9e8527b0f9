"""One cross-validation fold: train each mode, save its bundle, collect held-out outputs.

Checkpoints live in ``RUN_DIR/checkpoints/<mode>/fold<k>/`` while a fold trains and are
removed once its bundle is in ``RUN_DIR/models/<mode>/fold<k>/``; a fold with a bundle is
not trained again. Patch mode's tile features of every case (from the fold's encoders) are
kept in ``RUN_DIR/features/fold<k>.npz`` for the slide-level modes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from hsafast.bundle import EncoderSpec, ModelBundle, Preprocessing
from hsafast.errors import InvalidParameterError
from hsafast.models import SlideModel

from .config import TrainConfig
from .data import CLASSES, Bag
from .distributed import Dist
from .features import SlideFeatures, features_from_encoder, load_features, save_features
from .outputs import HeldOut
from .prepare import PreparedCase
from .slide_mode import evaluate_bags, train_slide_level

log = logging.getLogger("hsafast.trainer")

__all__ = ["FoldRunner"]


class FoldRunner:
    """Fold ``fold`` of ``plan``: its training, validation and test cases, and its modes."""

    def __init__(
        self, config: TrainConfig, plan: Any, fold: int, ordered: list[PreparedCase], dist: Dist
    ) -> None:
        from hsafast.evaluation import holdout_split

        self.config, self.fold, self.dist = config, fold, dist
        self.out = Path(config.out)
        try:
            train_idx, val_idx = holdout_split(plan, fold, fraction=config.val_fraction)
        except (InvalidParameterError, ValueError) as exc:  # too few patients: keep the last epoch
            log.warning("fold %d: no validation split (%s); the last epoch is kept", fold, exc)
            train_idx, val_idx = plan.folds[fold].train, np.zeros(0, np.int64)
        self.train = [ordered[i] for i in train_idx]
        self.val = [ordered[i] for i in val_idx]
        self.test = [ordered[i] for i in plan.folds[fold].test]
        self.all = ordered
        self.markers = sorted({c.marker for c in ordered})
        self.seed = config.seed * 1000 + fold

    # ---- places ---------------------------------------------------------------------------
    def bundle_dir(self, mode: str) -> Path:
        return self.out / "models" / mode / f"fold{self.fold}"

    def work_dir(self, mode: str) -> Path:
        return self.out / "checkpoints" / mode / f"fold{self.fold}"

    @property
    def features_path(self) -> Path:
        return self.out / "features" / f"fold{self.fold}.npz"

    def _done(self, mode: str) -> bool:
        return (self.bundle_dir(mode) / "config.json").is_file()

    def _finish(self, bundle: ModelBundle, mode: str) -> None:
        """Save the bundle, keep the training logs beside it, drop the checkpoints."""
        if not self.dist.is_main:
            return
        target = bundle.save(self.bundle_dir(mode))
        work = self.work_dir(mode)
        for log_file in sorted(work.rglob("train_log.csv")):
            rel = log_file.parent.relative_to(work)
            name = "train_log.csv" if rel == Path(".") else f"train_log-{'-'.join(rel.parts)}.csv"
            shutil.copyfile(log_file, target / name)
        shutil.rmtree(work, ignore_errors=True)

    def _preprocessing(self) -> Preprocessing:
        d = self.config.data
        return Preprocessing(target_mpp=d.target_mpp, tile_size=d.tile_size, max_tiles=d.max_tiles)

    def _bags(self, cases: list[PreparedCase], features: SlideFeatures, marker: str) -> list[Bag]:
        from .run import bags_of

        return bags_of([c for c in cases if c.marker == marker], features)

    def _collect(
        self, model_of: dict[str, SlideModel], features: SlideFeatures, held: HeldOut
    ) -> None:
        test = {c.case_id for c in self.test}
        for marker, model in model_of.items():
            bags = self._bags(self.all, features, marker)
            if not bags:
                continue
            outputs = evaluate_bags(model, bags, self.dist.device)
            for i, bag in enumerate(bags):
                held.add(
                    (bag.case_id, bag.patient_id, bag.marker, CLASSES[bag.label]),
                    self.fold,
                    "test" if bag.case_id in test else "train",
                    outputs.probabilities[i],
                    outputs.he[i],
                    outputs.ihc[i],
                )

    # ---- patch mode -----------------------------------------------------------------------
    def patch(self, held: HeldOut) -> tuple[SlideFeatures, float]:
        """Train (or load) patch mode; returns every case's tile features and pairs/s."""
        from .patch_mode import tile_positivity

        tput = 0.0
        if self._done("patch") and self.features_path.is_file():
            bundle = ModelBundle.load(self.bundle_dir("patch"), self.dist.device)
            models = dict(bundle.models)
            features = load_features(self.features_path)
        else:
            models, features, tput = self._train_patch()
        self._collect(models, features, held)
        size0 = {c.case_id: c.patch_size_level0 for c in self.all}
        for case in self.test:
            prob = tile_positivity(models[case.marker], features[case.case_id][0], self.dist.device)
            for j in range(len(prob)):
                held.tiles.append(
                    {
                        "case_id": case.case_id,
                        "marker": case.marker,
                        "fold": self.fold,
                        "x": int(case.he_coords[j, 0]),
                        "y": int(case.he_coords[j, 1]),
                        "size_level0": size0[case.case_id],
                        "positivity": f"{prob[j]:.5f}",
                        "stain_target": f"{case.targets[j]:.5f}",
                        "target_weight": f"{case.target_weight[j]:.0f}",
                    }
                )
        return features, tput

    def _train_patch(self) -> tuple[dict[str, SlideModel], SlideFeatures, float]:
        from .patch_mode import PatchObjective, build_encoder, patch_model_config, train_tile_stage
        from .run import pairs_by_marker

        cfg = self.config
        he_enc = build_encoder(cfg.encoder, self.seed)
        ihc_enc = build_encoder(cfg.encoder, self.seed + 1)
        dim = he_enc.dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            models = nn.ModuleDict(
                {m: SlideModel(patch_model_config(dim, cfg.patch, cfg.slide)) for m in self.markers}
            )
        objective = PatchObjective(he_enc, ihc_enc, models)
        work = self.work_dir("patch")
        result = train_tile_stage(
            objective,
            pairs_by_marker(self.train),
            pairs_by_marker(self.val),
            cfg.patch,
            seed=self.seed,
            dist=self.dist,
            workdir=work / "tiles",
            resume=cfg.resume,
            label=f"patch fold {self.fold} tiles",
            pipeline=cfg.data.pipeline,
        )
        features = features_from_encoder(he_enc, ihc_enc, self.all, self.dist.device)
        trained: dict[str, SlideModel] = {}
        best: dict[str, Any] = {
            "tiles": {"best_epoch": result.best_epoch, "val_loss": result.best_val_loss}
        }
        for marker in self.markers:
            model = models[marker]
            assert isinstance(model, SlideModel)
            head = [*model.pool.parameters(), *model.head.parameters()]
            model, fit = train_slide_level(
                "patch",
                self._bags(self.train, features, marker),
                self._bags(self.val, features, marker),
                cfg.slide,
                ihc_branch="separate",
                seed=self.seed,
                dist=self.dist,
                workdir=work / f"head-{marker}",
                resume=cfg.resume,
                label=f"patch fold {self.fold} {marker} slide head",
                model=model,
                trainable=head,
                optim=cfg.patch.slide_optim,
            )
            trained[marker] = model
            best[marker] = {"best_epoch": fit.best_epoch, "val_loss": fit.best_val_loss}
        bundle = ModelBundle(
            mode="patch",
            encoder=EncoderSpec.from_encoder(he_enc, in_bundle=True),
            models=trained,
            preprocessing=self._preprocessing(),
            tile_encoder=he_enc,
            training=self._training_info("patch", best),
        )
        if self.dist.is_main:
            save_features(self.features_path, features)
        self._finish(bundle, "patch")
        self.dist.barrier()
        return trained, features, result.items_per_second

    # ---- slide-level modes ----------------------------------------------------------------
    def slide_level(
        self, mode: str, features: SlideFeatures, held: HeldOut, meta: dict[str, Any]
    ) -> None:
        """Train (or load) ``mode`` ("slide", "classification-only", "mean-pool")."""
        if self._done(mode):
            bundle = ModelBundle.load(self.bundle_dir(mode), self.dist.device)
            self._collect(dict(bundle.models), features, held)
            return
        cfg = self.config
        source = cfg.slide.features
        ihc_branch = "separate" if source == "patch-encoder" else "shared"
        trained: dict[str, SlideModel] = {}
        best: dict[str, Any] = {}
        for marker in self.markers:
            model, fit = train_slide_level(
                mode,
                self._bags(self.train, features, marker),
                self._bags(self.val, features, marker),
                cfg.slide,
                ihc_branch=ihc_branch,
                seed=self.seed,
                dist=self.dist,
                workdir=self.work_dir(mode) / marker,
                resume=cfg.resume,
                label=f"{mode} fold {self.fold} {marker}",
            )
            trained[marker] = model
            best[marker] = {"best_epoch": fit.best_epoch, "val_loss": fit.best_val_loss}
        spec, tile_encoder = self._encoder_for(source, meta)
        bundle = ModelBundle(
            mode=mode,
            encoder=spec,
            models=trained,
            preprocessing=self._preprocessing(),
            tile_encoder=tile_encoder,
            training=self._training_info(mode, best),
        )
        self._finish(bundle, mode)
        self.dist.barrier()
        self._collect(trained, features, held)

    def _encoder_for(self, source: str, meta: dict[str, Any]) -> tuple[EncoderSpec, Any]:
        """The tile encoder a slide-level bundle scores with, and its weights when stored."""
        if source == "patch-encoder":
            encoder = ModelBundle.load(self.bundle_dir("patch")).tile_encoder()
            return EncoderSpec.from_encoder(encoder, in_bundle=True), encoder
        if source == "encoder":
            frozen = meta["frozen"]
            # a random initialisation cannot be rebuilt from a name: store it
            in_bundle = frozen.weights_source is None
            return EncoderSpec.from_encoder(frozen, in_bundle), frozen if in_bundle else None
        files = meta["files"]  # a registered name brings its input size and normalisation
        return EncoderSpec.from_features(files["name"], files["hash"], int(files["dim"])), None

    def _training_info(self, mode: str, best: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        info = {
            "mode": mode,
            "fold": self.fold,
            "folds": cfg.folds,
            "seed": cfg.seed,
            "fold_seed": self.seed,
            "train_cases": [c.case_id for c in self.train],
            "val_cases": [c.case_id for c in self.val],
            "test_cases": [c.case_id for c in self.test],
            "best": best,
            "slide": _plain(cfg.slide),
            "patch": _plain(cfg.patch) if mode == "patch" else None,
            "labels": cfg.data.labels,
            "features": cfg.slide.features if mode != "patch" else "trained here",
        }
        return dict(json_safe(info))


def _plain(obj: Any) -> Any:
    import dataclasses

    return json_safe(dataclasses.asdict(obj))


def json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
