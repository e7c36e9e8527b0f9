"""Reading a bundle: every section, key, tensor name, shape and hash is checked."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsafast._config import config_from_mapping
from hsafast.bundle.model_bundle import (
    _TOP_KEYS,
    CONFIG_NAME,
    ENCODER_PREFIX,
    FORMAT,
    FORMAT_VERSION,
    MODES,
    WEIGHTS_NAME,
    ModelBundle,
)
from hsafast.bundle.specs import EncoderSpec, MarkerSpec, Preprocessing
from hsafast.errors import BundleError, EncoderError, HsafastError

if TYPE_CHECKING:
    import torch

    from hsafast.encoders.base import TileEncoder
    from hsafast.models import SlideModel

__all__ = ["read_bundle"]


def read_bundle(path: Path) -> ModelBundle:
    """Parse and check config.json and weights.safetensors; build the models."""
    from hsafast.models import SlideModel, SlideModelConfig

    config = _read_config(path)
    tensors = _read_weights(path, config["weights_sha256"])
    with _as_bundle_error(path, "config.json: encoder"):
        encoder = config_from_mapping(EncoderSpec, config["encoder"])
    with _as_bundle_error(path, "config.json: preprocessing"):
        preprocessing = config_from_mapping(Preprocessing, config["preprocessing"])
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
            spec = config_from_mapping(MarkerSpec, markers_section[marker])
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
