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

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsafast.bundle.specs import EncoderSpec, MarkerSpec, Preprocessing
from hsafast.errors import BundleError, EncoderError, FeatureFileError, InvalidParameterError

if TYPE_CHECKING:
    import torch

    from hsafast.encoders.base import TileEncoder
    from hsafast.features import FeatureFile
    from hsafast.models import SlideModel
    from hsafast.pooling import GatedAttentionParams

log = logging.getLogger("hsafast.bundle")

__all__ = ["MODES", "ModelBundle"]

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
        from hsafast.bundle.reading import read_bundle

        bundle = read_bundle(Path(path))
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
