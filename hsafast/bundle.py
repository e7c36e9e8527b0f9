"""ModelBundle: a trained model as a directory of JSON and safetensors (never a pickle).

```
bundle/
  config.json          format, versions, mode, encoder, preprocessing, markers, model,
                       training, weights_sha256
  weights.safetensors  <marker>.proj.* / .pool.* / .head.* / .positivity.* / .align.* /
                       .ihc.*, and encoder.* when the tile encoder was trained here
  engines/             exported engines cached by the scorer (keyed by what they depend on)
```

It is the contract between the trainer, which writes it, and the scorer, which reads nothing
else. Loading checks the format and its version, every section and key, every tensor's name
and shape, the weights' hash, and the tile encoder's name and weight hash, and raises a
``BundleError`` naming the bundle and the reason. See docs/models.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsafast.errors import (
    BundleError,
    EncoderError,
    FeatureFileError,
    HsafastError,
    InvalidParameterError,
)

if TYPE_CHECKING:
    import torch

    from hsafast.encoders.base import TileEncoder
    from hsafast.features import FeatureFile
    from hsafast.models import SlideModel
    from hsafast.pooling import GatedAttentionParams

log = logging.getLogger(__name__)

#: ImageNet's channel statistics, the normalisation assumed for unregistered encoders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["MODES", "EncoderSpec", "MarkerSpec", "ModelBundle", "Preprocessing"]

FORMAT = "hsafast.ModelBundle"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
ENGINES_DIR = "engines"
ENCODER_PREFIX = "encoder."
#: How the model was trained: the two alignment modes and the two baselines.
MODES = ("slide", "patch", "classification-only", "mean-pool")
_MARKER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TOP_KEYS = (
    "format",
    "format_version",
    "hsafast_version",
    "mode",
    "encoder",
    "preprocessing",
    "markers",
    "model",
    "training",
    "weights_sha256",
)


@dataclass(frozen=True)
class EncoderSpec:
    """The tile encoder a bundle was trained on: features from any other encoder are refused."""

    name: str
    """Registry name (``hsafast.encoders``) or the name a FeatureFile records."""
    hash: str
    """SHA-256 of the encoder's weights; empty when the features' files did not record it."""
    dim: int
    """Embedding width D, the slide model's input."""
    input_size: int
    """Edge of the encoder's square input in pixels (0 when known only from features)."""
    mean: tuple[float, float, float]
    """Per-channel normalisation mean (RGB, 0-1 scale)."""
    std: tuple[float, float, float]
    """Per-channel normalisation standard deviation (RGB, 0-1 scale)."""
    in_bundle: bool = False
    """True when the encoder's weights are stored in the bundle (``encoder.*``), because
    they were trained here; False when the registered encoder is used as published."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not (isinstance(self.name, str) and self.name):
            raise InvalidParameterError("encoder.name must be a non-empty string")
        if not (isinstance(self.hash, str) and re.fullmatch(r"([0-9a-f]{64})?", self.hash)):
            raise InvalidParameterError(
                f"encoder.hash must be a SHA-256 hex digest, got {self.hash!r}"
            )
        if not (isinstance(self.dim, int) and self.dim >= 1):
            raise InvalidParameterError(f"encoder.dim must be a positive integer, got {self.dim!r}")
        if not (isinstance(self.input_size, int) and self.input_size >= 0):
            raise InvalidParameterError(
                f"encoder.input_size must be a non-negative integer, got {self.input_size!r}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise InvalidParameterError(f"encoder.{name} must be three finite numbers")
        if min(self.std) <= 0:
            raise InvalidParameterError(f"encoder.std must be positive, got {list(self.std)}")
        if self.in_bundle and not self.hash:
            raise InvalidParameterError("encoder.hash is required when in_bundle is true")

    @classmethod
    def from_encoder(cls, encoder: TileEncoder, in_bundle: bool = False) -> EncoderSpec:
        """The spec of a built encoder (its current weights' hash)."""
        return cls(**encoder.describe(), in_bundle=in_bundle)

    @classmethod
    def from_features(cls, name: str, hash: str, dim: int) -> EncoderSpec:
        """The spec of features read from files (``FeatureBag.encoder``, ``encoder_hash``).

        A registered encoder contributes its input size and normalisation, so that slides can
        be scored with it; other names get input size 0 (features only) and ImageNet's.
        """
        from hsafast.encoders import encoder_info

        try:
            info = encoder_info(name)
        except HsafastError:
            return cls(name, hash, dim, 0, IMAGENET_MEAN, IMAGENET_STD)
        if info.dim != dim:
            raise InvalidParameterError(
                f"features are {dim}-d but encoder {name!r} gives {info.dim}-d embeddings"
            )
        return cls(name, hash, dim, info.input_size, info.mean, info.std)


@dataclass(frozen=True)
class Preprocessing:
    """How tiles are cut for this model (scoring must cut them the same way)."""

    target_mpp: float = 0.5
    """Tile pixel size in micrometres (0.5 um/px is "20x", the paper's and Prov-GigaPath's)."""
    tile_size: int = 256
    """Tile edge in pixels at ``target_mpp`` (256 px as in the paper)."""
    max_tiles: int = 4096
    """Most tiles per slide given to the slide model (4,096 in the authors' code)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.target_mpp, int | float) and 0 < self.target_mpp < 1000):
            raise InvalidParameterError(
                "preprocessing.target_mpp must be a pixel size in (0, 1000) um, "
                f"got {self.target_mpp!r}"
            )
        for name in ("tile_size", "max_tiles"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InvalidParameterError(
                    f"preprocessing.{name} must be a positive integer, got {value!r}"
                )


@dataclass(frozen=True)
class MarkerSpec:
    """One marker's output classes."""

    classes: tuple[str, ...] = ("low", "high")
    """Class names in logit order."""
    positive_class: str = "high"
    """The class counted as positive in binary metrics (the paper's intermediate/high)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise InvalidParameterError(
                f"markers.classes needs at least two distinct names, got {list(self.classes)}"
            )
        if self.positive_class not in self.classes:
            raise InvalidParameterError(
                f"markers.positive_class {self.positive_class!r} is not one of {list(self.classes)}"
            )


class ModelBundle:
    """Slide models (one per marker) with everything needed to score slides with them."""

    def __init__(
        self,
        *,
        mode: str,
        encoder: EncoderSpec,
        models: Mapping[str, SlideModel],
        preprocessing: Preprocessing | None = None,
        positive_classes: Mapping[str, str] | None = None,
        tile_encoder: TileEncoder | None = None,
        training: Mapping[str, Any] | None = None,
        hsafast_version: str | None = None,
        path: Path | None = None,
    ) -> None:
        from hsafast import __version__

        if mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {MODES}, got {mode!r}")
        if not models:
            raise InvalidParameterError("a bundle needs at least one marker model")
        for marker in models:
            if not _MARKER_NAME.fullmatch(marker) or marker == "encoder":
                raise InvalidParameterError(
                    f"marker name {marker!r} must be lower-case letters, digits, '-' or '_' "
                    "(and not 'encoder')"
                )
        architectures = {m: _architecture(model.config) for m, model in models.items()}
        first = next(iter(architectures.values()))
        for marker, arch in architectures.items():
            if arch != first:
                raise InvalidParameterError(
                    f"marker {marker!r} has a different architecture from the others; "
                    "one bundle holds one architecture"
                )
            if models[marker].config.in_dim != encoder.dim:
                raise InvalidParameterError(
                    f"marker {marker!r} takes {models[marker].config.in_dim}-d features but the "
                    f"encoder {encoder.name!r} gives {encoder.dim}"
                )
        if encoder.in_bundle != (tile_encoder is not None):
            raise InvalidParameterError(
                "encoder.in_bundle must be true exactly when the tile encoder's weights are given"
            )
        positive = dict(positive_classes or {})
        self.mode = mode
        self.encoder = encoder
        self.models: dict[str, SlideModel] = dict(models)
        self.preprocessing = preprocessing or Preprocessing()
        self.markers = {
            m: MarkerSpec(model.config.classes, positive.get(m, model.config.classes[-1]))
            for m, model in models.items()
        }
        self.training: dict[str, Any] = dict(training or {})
        self.hsafast_version = hsafast_version or __version__
        self.path = path
        self._tile_encoder = tile_encoder

    # ---- use ------------------------------------------------------------------------------
    @property
    def model_config(self) -> dict[str, Any]:
        """The architecture shared by the markers (SlideModelConfig less in_dim and classes)."""
        return _architecture(next(iter(self.models.values())).config)

    @property
    def engine_dir(self) -> Path:
        """Where exported engines of this bundle are cached."""
        if self.path is None:
            raise BundleError("the bundle has not been saved, so it has no engine cache")
        return self.path / ENGINES_DIR

    def model(self, marker: str) -> SlideModel:
        """The slide model of ``marker``; a BundleError names the markers it has."""
        if marker not in self.models:
            raise BundleError(
                f"no model for marker {marker!r}; this bundle has {sorted(self.models)}", self.path
            )
        return self.models[marker]

    def pool_params(self, marker: str) -> GatedAttentionParams:
        """The marker's gated-attention head, for the native, CUDA and Triton kernels."""
        return self.model(marker).pool_params()

    def tile_encoder(self, weights: str | os.PathLike[str] | None = None) -> TileEncoder:
        """The tile encoder, checked against the bundle's name, width and weight hash.

        An encoder trained here comes from the bundle; a registered one is built from its
        weights file (``weights``, else its default location) and must hash the same.
        """
        if self._tile_encoder is not None:
            return self._tile_encoder
        from hsafast.encoders import create_encoder

        try:
            encoder = create_encoder(self.encoder.name, weights=weights)
        except EncoderError as exc:
            raise BundleError(f"cannot build its tile encoder: {exc}", self.path) from exc
        self._check_encoder(encoder, weights)
        self._tile_encoder = encoder
        return encoder

    def check_features(
        self, features: FeatureFile, path: str | os.PathLike[str] | None = None
    ) -> None:
        """Refuse tile features from another encoder (by width, name or weight hash)."""
        where = path if path is not None else None
        if features.features is None:
            raise FeatureFileError("holds coordinates only, no features", where)
        dim = int(features.features.shape[1])
        if dim != self.encoder.dim:
            raise FeatureFileError(
                f"features are {dim}-d but the model expects {self.encoder.dim}-d features "
                f"from encoder {self.encoder.name!r}",
                where,
            )
        if features.encoder and features.encoder != self.encoder.name:
            raise FeatureFileError(
                f"features come from encoder {features.encoder!r} but the model was trained "
                f"on {self.encoder.name!r}",
                where,
            )
        if (
            features.encoder_hash
            and self.encoder.hash
            and features.encoder_hash != self.encoder.hash
        ):
            raise FeatureFileError(
                f"features come from {self.encoder.name!r} weights {features.encoder_hash[:12]} "
                f"but the model was trained on weights {self.encoder.hash[:12]}",
                where,
            )

    def to(self, device: str | torch.device) -> ModelBundle:
        """Move every model (and the tile encoder, when built) to ``device``."""
        for model in self.models.values():
            model.to(device)
        if self._tile_encoder is not None:
            self._tile_encoder.to(device)
        return self

    # ---- files ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the bundle under its file name (``<marker>.*``, ``encoder.*``)."""
        tensors: dict[str, torch.Tensor] = {}
        for marker, model in self.models.items():
            for key, value in model.state_dict().items():
                tensors[f"{marker}.{key}"] = value
        if self._tile_encoder is not None and self.encoder.in_bundle:
            for key, value in self._tile_encoder.weights_state().items():
                tensors[ENCODER_PREFIX + key] = value
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    def config_dict(self, weights_sha256: str) -> dict[str, Any]:
        """config.json's content."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hsafast_version": self.hsafast_version,
            "mode": self.mode,
            "encoder": {
                **asdict(self.encoder),
                "mean": list(self.encoder.mean),
                "std": list(self.encoder.std),
            },
            "preprocessing": asdict(self.preprocessing),
            "markers": {
                m: {"classes": list(s.classes), "positive_class": s.positive_class}
                for m, s in self.markers.items()
            },
            "model": self.model_config,
            "training": self.training,
            "weights_sha256": weights_sha256,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bundle to directory ``path`` (built aside, then renamed into place)."""
        from safetensors.torch import save_file

        from hsafast.encoders.weights import weights_hash

        target = Path(path)
        if self._tile_encoder is not None and self._tile_encoder.weights_hash != self.encoder.hash:
            raise BundleError(
                "the tile encoder's weights changed after the bundle was made; "
                "rebuild its EncoderSpec with EncoderSpec.from_encoder",
                target,
            )
        tensors = self.state_dict()
        digest = weights_hash(tensors)
        config = json.dumps(self.config_dict(digest), indent=2, sort_keys=False)
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            save_file(tensors, str(staging / WEIGHTS_NAME), metadata={"format": FORMAT})
            (staging / CONFIG_NAME).write_text(config + "\n", encoding="utf-8")
            if target.exists():
                target.rename(old)
            staging.rename(target)
        except OSError as exc:
            raise BundleError(f"cannot write the bundle: {exc}", target) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> ModelBundle:
        """Read and check a bundle; models come back in eval mode on ``device``."""
        bundle = _read(Path(path))
        from hsafast import __version__

        if bundle.hsafast_version != __version__:
            log.info(
                "%s was written by hsafast %s (this is %s)",
                path,
                bundle.hsafast_version,
                __version__,
            )
        for model in bundle.models.values():
            model.eval()
        return bundle.to(device)

    # ---- checks -----------------------------------------------------------------------------
    def _check_encoder(self, encoder: TileEncoder, source: Any) -> None:
        spec = self.encoder
        where = f" (weights {source})" if source is not None else ""
        if encoder.dim != spec.dim or (spec.input_size and encoder.input_size != spec.input_size):
            raise BundleError(
                f"encoder {spec.name!r}{where} gives {encoder.dim}-d embeddings of "
                f"{encoder.input_size}-px tiles; the bundle expects {spec.dim}-d of "
                f"{spec.input_size}-px tiles",
                self.path,
            )
        if spec.hash and encoder.weights_hash != spec.hash:
            raise BundleError(
                f"encoder {spec.name!r}{where} has weights {encoder.weights_hash[:12]}, but the "
                f"bundle was trained on weights {spec.hash[:12]}",
                self.path,
            )

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return (
            f"ModelBundle(mode={self.mode!r}, encoder={self.encoder.name!r}, "
            f"markers={sorted(self.models)}{where})"
        )


def _architecture(config: Any) -> dict[str, Any]:
    values = config.to_dict()
    values.pop("in_dim")
    values.pop("classes")
    return values


def _read(path: Path) -> ModelBundle:
    """Parse and check config.json and weights.safetensors; build the models."""
    from hsafast.models import SlideModel, SlideModelConfig

    config = _read_config(path)
    tensors = _read_weights(path, config["weights_sha256"])
    with _as_bundle_error(path, "config.json: encoder"):
        encoder = EncoderSpec(
            **_section(config, "encoder", EncoderSpec, required=("name", "hash", "dim"))
        )
    with _as_bundle_error(path, "config.json: preprocessing"):
        preprocessing = Preprocessing(**_section(config, "preprocessing", Preprocessing))
    markers_section = config["markers"]
    if not isinstance(markers_section, dict) or not markers_section:
        raise BundleError("config.json: markers must be a non-empty mapping", path)
    architecture = config["model"]
    if not isinstance(architecture, dict):
        raise BundleError("config.json: model must be a mapping", path)
    models: dict[str, SlideModel] = {}
    positive: dict[str, str] = {}
    for marker in markers_section:
        with _as_bundle_error(path, f"config.json: markers.{marker}"):
            spec = MarkerSpec(**_section(markers_section, marker, MarkerSpec))
            model_config = SlideModelConfig.from_dict(
                {**architecture, "in_dim": encoder.dim, "classes": spec.classes}
            )
        models[marker] = SlideModel(model_config)
        positive[marker] = spec.positive_class
    tile_encoder = _encoder_from_tensors(path, encoder, tensors) if encoder.in_bundle else None
    _load_models(path, models, tensors)
    with _as_bundle_error(path, "config.json"):
        bundle = ModelBundle(
            mode=config["mode"],
            encoder=encoder,
            models=models,
            preprocessing=preprocessing,
            positive_classes=positive,
            tile_encoder=tile_encoder,
            training=config["training"] if isinstance(config["training"], dict) else {},
            hsafast_version=str(config["hsafast_version"]),
            path=path,
        )
    return bundle


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise BundleError("no such bundle directory", path)
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise BundleError(f"missing {CONFIG_NAME}", path)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{CONFIG_NAME} is not readable JSON: {exc}", path) from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BundleError(
            f"{CONFIG_NAME} is not a {FORMAT} (format {config.get('format')!r})"
            if isinstance(config, dict)
            else f"{CONFIG_NAME} is not a JSON object",
            path,
        )
    version = config.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"{CONFIG_NAME}: format_version must be a positive integer", path)
    if version > FORMAT_VERSION:
        raise BundleError(
            f"format version {version} (written by hsafast {config.get('hsafast_version')}) is "
            f"newer than this hsafast reads ({FORMAT_VERSION}); upgrade hsafast",
            path,
        )
    unknown = sorted(set(config) - set(_TOP_KEYS))
    if unknown:
        raise BundleError(f"{CONFIG_NAME}: unknown keys {unknown}", path)
    config.setdefault("training", {})
    missing = [k for k in _TOP_KEYS if k not in config]
    if missing:
        raise BundleError(f"{CONFIG_NAME}: missing keys {missing}", path)
    if config["mode"] not in MODES:
        raise BundleError(
            f"{CONFIG_NAME}: mode must be one of {MODES}, got {config['mode']!r}", path
        )
    return config


def _read_weights(path: Path, expected_hash: Any) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from hsafast.encoders.weights import weights_hash

    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise BundleError(f"missing {WEIGHTS_NAME}", path)
    try:
        tensors = dict(load_file(str(weights_path), device="cpu"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(
            f"{WEIGHTS_NAME} is not a readable safetensors file: {exc}", path
        ) from exc
    if weights_hash(tensors) != expected_hash:
        raise BundleError(
            f"{WEIGHTS_NAME} does not match the weights_sha256 of {CONFIG_NAME} "
            "(the file was changed or damaged)",
            path,
        )
    return tensors


def _section(
    parent: Mapping[str, Any], key: str, cls: Any, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    values = parent[key]
    if not isinstance(values, dict):
        raise InvalidParameterError("must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidParameterError(f"unknown keys {unknown} (known: {sorted(known)})")
    missing = [k for k in required if k not in values]
    if missing:
        raise InvalidParameterError(f"missing keys {missing}")
    return dict(values)


def _encoder_from_tensors(
    path: Path, spec: EncoderSpec, tensors: Mapping[str, torch.Tensor]
) -> TileEncoder:
    from hsafast.encoders import encoder_info

    state = {
        k[len(ENCODER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(ENCODER_PREFIX)
    }
    if not state:
        raise BundleError(
            f"encoder.in_bundle is true but {WEIGHTS_NAME} holds no encoder.* tensors", path
        )
    try:
        encoder = encoder_info(spec.name).build()
        encoder.load_weights(state)
    except EncoderError as exc:
        raise BundleError(f"its tile encoder {spec.name!r}: {exc.reason}", path) from exc
    if encoder.weights_hash != spec.hash:
        raise BundleError(
            f"the encoder.* weights hash to {encoder.weights_hash[:12]}, config.json records "
            f"{spec.hash[:12]}",
            path,
        )
    return encoder


def _load_models(
    path: Path, models: Mapping[str, SlideModel], tensors: Mapping[str, torch.Tensor]
) -> None:
    import torch

    from hsafast.encoders.weights import describe_mismatch

    for marker, model in models.items():
        prefix = f"{marker}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        problem = describe_mismatch(model.state_dict(), state, "the architecture in config.json")
        if problem:
            raise BundleError(f"marker {marker!r}: {problem}", path)
        for name, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise BundleError(f"tensor {prefix}{name} holds NaN or Inf values", path)
        model.load_state_dict(state, strict=True)
    owned = (*(f"{m}." for m in models), ENCODER_PREFIX)
    stray = sorted(k for k in tensors if not k.startswith(owned))
    if stray:
        raise BundleError(
            f"{WEIGHTS_NAME} holds tensors of no marker in config.json: {stray[:4]}", path
        )


@contextlib.contextmanager
def _as_bundle_error(path: Path, what: str) -> Iterator[None]:
    """Parameter errors inside become BundleErrors naming the bundle and ``what``."""
    try:
        yield
    except BundleError:
        raise
    except (HsafastError, TypeError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, HsafastError) else str(exc)
        raise BundleError(f"{what}: {reason}", path) from exc
