"""Training configuration: one dataclass per concern, read from TOML or a mapping.

``hsafast train --config run.toml`` reads a file like::

    manifest = "cohort/manifest.csv"
    out = "runs/demo"
    modes = ["slide", "patch", "classification-only", "mean-pool"]
    folds = 5

    [data]
    target_mpp = 1.0
    tile_size = 128

    [patch]
    epochs = 8

Every field is documented where it is declared, checked in ``__post_init__`` (errors
name the field) and unknown keys are rejected with their name.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsafast._config import config_from_mapping
from hsafast.errors import ConfigError

__all__ = [
    "MODES",
    "DataConfig",
    "EncoderConfig",
    "OptimConfig",
    "PatchConfig",
    "SlideConfig",
    "TrainConfig",
    "config_from_mapping",
    "load_config",
]

#: Training modes: the method (slide, patch) and the paper's baselines.
MODES = ("slide", "patch", "classification-only", "mean-pool")
#: Where slide mode takes its tile features from.
FEATURE_SOURCES = ("patch-encoder", "encoder", "files")


def _bad(section: str, name: str, reason: str) -> ConfigError:
    return ConfigError(f"{section}.{name}: {reason}" if section else f"{name}: {reason}")


def _positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(section, name, f"must be a number, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise _bad(section, name, f"must be positive, got {value}")


def _non_negative(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(section, name, f"must be a number, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise _bad(section, name, f"must be >= 0, got {value}")


def _integers(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(section, name, f"must be an integer, got {value!r}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a linear warm-up and a cosine decay, as the authors train."""

    epochs: int = 30
    """Passes over the training cases (slide mode) or tile pairs (patch mode)."""
    batch_size: int = 8
    """Cases (slide mode: the in-batch negatives of InfoNCE) or tiles (patch mode) per step."""
    lr: float = 5e-4
    """Peak learning rate after the warm-up."""
    weight_decay: float = 1e-2
    """AdamW decoupled weight decay (PyTorch's default)."""
    warmup_epochs: float = 2.0
    """Linear warm-up from 0 to ``lr``, in epochs; then a cosine decay to ``min_lr``."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine schedule."""

    def check(self, section: str) -> None:
        _integers(section, self, "epochs", "batch_size")
        _positive(section, self, "epochs", "batch_size", "lr")
        _non_negative(section, self, "weight_decay", "warmup_epochs", "min_lr")
        if self.min_lr > self.lr:
            raise _bad(section, "min_lr", f"exceeds lr ({self.min_lr} > {self.lr})")


@dataclass(frozen=True)
class DataConfig:
    """How slides become tiles, tile pairs and targets."""

    target_mpp: float = 1.0
    """Pixel size of the tiles (um/px). 1.0 keeps nuclei 5-12 px wide, enough for
    their size and darkness, at a quarter of the pixels of 20x (0.5 um/px)."""
    tile_size: int = 128
    """Tile side in pixels at ``target_mpp`` (128 um here); the encoder resizes it to
    its own input size."""
    min_tissue: float = 0.5
    """Share of a tile that the tissue mask must cover for the tile to be used."""
    max_tiles: int = 4096
    """Tiles per slide at most (the authors' cap); a seeded random subset beyond it."""
    min_cells: int = 5
    """IHC tiles with fewer scored cells give no patch target (weight 0): with 5 cells
    a positive fraction is already uncertain by up to +-0.22 (binomial sd at 0.5)."""
    labels: str = "stain"
    """Where slide labels come from: "stain" (read from the IHC slide with
    ``hsafast.quantify`` / ``slide_label``) or "manifest" (the manifest's label column)."""
    features: str = ""
    """Folder of FeatureFiles (``<slide file stem>.h5``, hsafast, TRIDENT or CLAM) for
    slide mode when ``slide.features = "files"``."""
    cache: str = ""
    """Folder for prepared tiles, pairs and targets; default ``<out>/cache``. Prepared
    cases are reused when their inputs and these settings are unchanged."""
    register: bool = True
    """Register H&E to IHC (needed for patch mode's pairs and targets)."""
    pipeline: str = "torch"
    """Tile input pipeline of patch mode: "torch" (CPU tensors) or "dali" (NVIDIA DALI
    on a GPU, the ``dali`` extra)."""
    workers: int = 0
    """Processes preparing cases in parallel (0: one per core, at most the case count)."""

    def __post_init__(self) -> None:
        s = "data"
        _positive(s, self, "target_mpp")
        _integers(s, self, "tile_size", "max_tiles", "min_cells", "workers")
        if self.tile_size < 16:
            raise _bad(s, "tile_size", f"must be at least 16 pixels, got {self.tile_size}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise _bad(s, "min_tissue", f"must be in [0, 1], got {self.min_tissue}")
        _positive(s, self, "max_tiles")
        _non_negative(s, self, "min_cells", "workers")
        if self.labels not in ("stain", "manifest"):
            raise _bad(s, "labels", f"must be 'stain' or 'manifest', got {self.labels!r}")
        if self.pipeline not in ("torch", "dali"):
            raise _bad(s, "pipeline", f"must be 'torch' or 'dali', got {self.pipeline!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """The tile encoder (``hsafast.encoders``)."""

    name: str = "hsafast-cnn-s"
    """Registered encoder name (``hsafast.encoders.list_encoders()``); the default is the
    small CNN that trains from scratch on a CPU."""
    weights: str = ""
    """Local weights file (safetensors, or a state dict read with ``weights_only=True``);
    empty: the encoder's own default (random initialisation for the small models)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _bad("encoder", "name", "must be a non-empty encoder name")


@dataclass(frozen=True)
class SlideConfig:
    """Slide mode (HistoStainAlign as its authors train it) and the slide-level baselines."""

    features: str = "patch-encoder"
    """Tile features: "patch-encoder" (the H&E and IHC encoders patch mode trained on the
    same fold's training cases), "encoder" (``encoder`` as configured, frozen) or "files"
    (``data.features``)."""
    aggregator: str = "gated"
    """Slide encoder over tile embeddings: "gated" (ABMIL gated attention; pools with
    hsafast's native kernels) or "transformer" (self-attention blocks, then gated attention).
    The mean-pool baseline always uses "mean"."""
    embed_dim: int = 128
    """Width of the projected tile embeddings and of the slide embedding."""
    attention_hidden: int = 64
    """Hidden width of the gated attention (V and U are attention_hidden x embed_dim)."""
    temperature: float = 0.01
    """InfoNCE temperature (the authors' 0.01)."""
    mask_fraction: float = 0.5
    """Share of a slide's tile embeddings set to zero for the masking loss (authors: 50%)."""
    contrastive_weight: float = 1.0
    """Weight of the symmetric InfoNCE term."""
    mse_weight: float = 1.0
    """Weight of the MSE between the masked and unmasked H&E slide embeddings."""
    ce_weight: float = 1.0
    """Weight of the classification cross-entropy."""
    proj_dropout: float = 0.25
    """Dropout after the tile projection (CLAM's ABMIL uses 0.25)."""
    head_dropout: float = 0.5
    """Dropout inside the classification head (the authors' 0.5)."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=40, batch_size=8))
    """Optimiser and schedule."""

    def __post_init__(self) -> None:
        s = "slide"
        if self.features not in FEATURE_SOURCES:
            raise _bad(s, "features", f"must be one of {FEATURE_SOURCES}, got {self.features!r}")
        if self.aggregator not in ("gated", "transformer"):
            raise _bad(
                s, "aggregator", f"must be 'gated' or 'transformer', got {self.aggregator!r}"
            )
        _integers(s, self, "embed_dim", "attention_hidden")
        _positive(s, self, "embed_dim", "attention_hidden", "temperature")
        if not 0.0 <= self.mask_fraction < 1.0:
            raise _bad(s, "mask_fraction", f"must be in [0, 1), got {self.mask_fraction}")
        _non_negative(s, self, "contrastive_weight", "mse_weight", "ce_weight")
        for name in ("proj_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise _bad(s, name, f"must be in [0, 1), got {getattr(self, name)}")
        self.optim.check("slide.optim")
        if self.optim.batch_size < 2:
            raise _bad("slide.optim", "batch_size", "InfoNCE needs at least 2 cases per batch")


@dataclass(frozen=True)
class PatchConfig:
    """Patch mode: registered H&E/IHC tile pairs, stain-derived targets, spatial maps."""

    projection_dim: int = 64
    """Width of the projection heads in which H&E and IHC tile embeddings are compared."""
    temperature: float = 0.1
    """InfoNCE temperature between tile pairs (SimCLR's 0.1: tile batches are larger and
    noisier than slide batches, where the authors use 0.01)."""
    contrastive_weight: float = 1.0
    """Weight of the tile-pair InfoNCE."""
    regression_weight: float = 1.0
    """Weight of the regression of each tile's stain-derived positive fraction from H&E."""
    freeze_encoder: bool = False
    """Keep the tile encoders fixed (only projection and positivity heads learn)."""
    augment: bool = True
    """Random flips and 90-degree rotations, the same for both tiles of a pair."""
    stain_jitter: float = 0.05
    """Random scale (1 +- x) and shift (+- x) of each stain's optical density per tile,
    with ``augment`` (Tellez et al. 2018's "HED-light" 0.05; 0: off). Slides differ in
    stain colour: without it the H&E head learns slide colours, which fit the training
    slides and say nothing about held-out ones (bench/results/train.md)."""
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(epochs=8, batch_size=64, lr=2e-3, warmup_epochs=1)
    )
    """Optimiser and schedule of the tile encoders and heads."""
    slide_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(epochs=40, batch_size=8, lr=1e-3)
    )
    """Optimiser of the slide head (gated attention + classifier) over the frozen H&E tile
    embeddings, trained after the tile stage."""

    def __post_init__(self) -> None:
        s = "patch"
        _integers(s, self, "projection_dim")
        _positive(s, self, "projection_dim", "temperature")
        _non_negative(s, self, "contrastive_weight", "regression_weight", "stain_jitter")
        if self.stain_jitter >= 0.5:
            raise _bad(s, "stain_jitter", f"must be below 0.5, got {self.stain_jitter}")
        self.optim.check("patch.optim")
        self.slide_optim.check("patch.slide_optim")
        if self.optim.batch_size < 2:
            raise _bad("patch.optim", "batch_size", "InfoNCE needs at least 2 tiles per batch")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: data, folds, modes and their settings."""

    manifest: str
    """Cohort manifest CSV (case_id, patient_id, he_path, ihc_path, marker[, label])."""
    out: str
    """Run directory (models/, predictions/, embeddings/, run.json)."""
    modes: tuple[str, ...] = MODES
    """Modes to train, each on every fold."""
    markers: tuple[str, ...] = ()
    """Markers to train (one model per marker); empty: every marker of the manifest."""
    folds: int = 5
    """Patient-level cross-validation folds (the paper's 5)."""
    val_fraction: float = 0.2
    """Share of each fold's training patients held out to choose the checkpoint (lowest
    validation loss); never the fold's test patients."""
    seed: int = 0
    """Seed of folds, initialisation, tile subsets, masks and batches."""
    deterministic: bool = False
    """Deterministic kernels (``torch.use_deterministic_algorithms``) and one data order:
    a rerun gives identical weights on the same machine and thread count."""
    device: str = "auto"
    """"cpu", "cuda", "cuda:N" or "auto" (CUDA when available)."""
    threads: int = 0
    """PyTorch CPU threads (0: leave PyTorch's default)."""
    resume: bool = True
    """Continue an interrupted run of the same configuration and folds from its checkpoints
    (finished folds are skipped); False removes the run's models and checkpoints first."""
    data: DataConfig = field(default_factory=DataConfig)
    """Tiles, pairs, labels and targets."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The tile encoder."""
    slide: SlideConfig = field(default_factory=SlideConfig)
    """Slide mode and the slide-level baselines."""
    patch: PatchConfig = field(default_factory=PatchConfig)
    """Patch mode."""

    def __post_init__(self) -> None:
        for name in ("manifest", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise _bad("", name, "must be a non-empty path")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise _bad("", "modes", f"unknown modes {bad}; choose from {MODES}")
        if len(set(self.modes)) != len(self.modes):
            raise _bad("", "modes", f"lists a mode twice: {list(self.modes)}")
        _integers("", self, "folds", "seed", "threads")
        if self.folds < 2:
            raise _bad("", "folds", f"must be at least 2, got {self.folds}")
        if not 0.0 < self.val_fraction <= 0.5:
            raise _bad("", "val_fraction", f"must be in (0, 0.5], got {self.val_fraction}")
        _non_negative("", self, "threads")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise _bad(
                "", "device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        slide_level = [m for m in self.modes if m != "patch"]
        if slide_level and self.slide.features == "patch-encoder" and "patch" not in self.modes:
            raise _bad(
                "slide",
                "features",
                f'"patch-encoder" needs "patch" among the modes '
                f"(modes {slide_level} take the tile features patch mode learns)",
            )
        if "patch" in self.modes and not self.data.register:
            raise _bad("data", "register", "patch mode needs registered H&E/IHC pairs")
        if self.slide.features == "files" and not self.data.features:
            raise _bad("data", "features", 'slide.features = "files" needs a folder here')

    @property
    def cache_dir(self) -> Path:
        return Path(self.data.cache) if self.data.cache else Path(self.out) / "cache"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """Read a TOML run configuration; relative paths are resolved against its folder.

    ``overrides`` replace top-level keys (the command line's ``--out``, for instance).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc}", p) from exc
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError("reading TOML on Python 3.10 needs tomli", p) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", p) from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("manifest", "out"):
        if isinstance(data.get(key), str) and key not in overrides:
            data[key] = str((p.parent / data[key]).resolve())
    sub = data.get("data")
    if isinstance(sub, dict):
        for key in ("features", "cache"):
            if isinstance(sub.get(key), str) and sub[key]:
                sub[key] = str((p.parent / sub[key]).resolve())
    return config_from_mapping(TrainConfig, data, p)
