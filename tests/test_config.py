"""One rule for configuration dataclasses built from mappings (hsafast._config): unknown
keys and wrong types are one ConfigError naming the file and the key, for every config
class that is read from TOML, JSON or the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from hsafast._config import config_from_assignments, config_from_mapping
from hsafast.errors import ConfigError


def config_classes() -> list[tuple[type, dict[str, Any], str, Any]]:
    """(class, a valid mapping, a field, a value of the wrong type for it)."""
    from hsafast.bundle.specs import EncoderSpec, MarkerSpec, Preprocessing
    from hsafast.embedding import EmbedConfig
    from hsafast.evaluation import EvaluationConfig
    from hsafast.models import SlideModelConfig
    from hsafast.scoring import ScoringOptions
    from hsafast.trainer.config import DataConfig, OptimConfig, PatchConfig, SlideConfig

    encoder = {"name": "e", "hash": "", "dim": 8, "input_size": 0}
    return [
        (EmbedConfig, {"target_mpp": 1, "tile_size": 128, "precision": "bf16"}, "tile_size", "x"),
        (ScoringOptions, {"batch_size": 8, "min_tissue": 0.5}, "min_tissue", "half"),
        (SlideModelConfig, {"in_dim": 8, "classes": ["a", "b"]}, "embed_dim", 1.5),
        (EvaluationConfig, {"n_resamples": 100, "resample": "cases"}, "seed", "0"),
        (EncoderSpec, {**encoder, "mean": [0, 0, 0], "std": [1, 1, 1]}, "dim", True),
        (Preprocessing, {"target_mpp": 1, "tile_size": 64}, "max_tiles", [1]),
        (MarkerSpec, {"classes": ["neg", "pos"], "positive_class": "pos"}, "classes", "neg"),
        (DataConfig, {"target_mpp": 0.5, "labels": "manifest"}, "register", "yes"),
        (OptimConfig, {"epochs": 2, "lr": 1}, "epochs", 2.5),
        (SlideConfig, {"optim": {"epochs": 1, "batch_size": 4}}, "temperature", None),
        (PatchConfig, {"augment": False, "slide_optim": {"lr": 0.01}}, "augment", 1),
    ]


@pytest.mark.parametrize(
    ("cls", "good", "field", "bad"), config_classes(), ids=lambda v: getattr(v, "__name__", "")
)
def test_every_config_class_follows_the_rule(
    cls: type, good: dict[str, Any], field: str, bad: Any, tmp_path: Path
) -> None:
    source = tmp_path / "settings.toml"
    config = config_from_mapping(cls, good, source)
    assert isinstance(config, cls)
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(good) <= names and field in names
    # what was given is what is set, with JSON's ints as floats and lists as tuples
    for key, value in good.items():
        got = getattr(config, key)
        if not dataclasses.is_dataclass(got):
            assert got == (tuple(value) if isinstance(value, list) else value)

    with pytest.raises(ConfigError, match="unknown key 'colour'") as info:
        config_from_mapping(cls, {**good, "colour": "blue"}, source)
    assert info.value.path == source and field in info.value.reason  # lists the allowed keys

    with pytest.raises(ConfigError, match=f"{field}: expected") as info:
        config_from_mapping(cls, {**good, field: bad}, source)
    assert info.value.path == source and repr(bad) in info.value.reason


def test_nested_sections_are_named_and_checks_of_the_class_become_config_errors(
    tmp_path: Path,
) -> None:
    from hsafast.embedding import EmbedConfig
    from hsafast.trainer.config import SlideConfig

    with pytest.raises(ConfigError, match="optim: unknown key 'epochz'") as info:
        config_from_mapping(SlideConfig, {"optim": {"epochz": 3}}, tmp_path / "a.json")
    assert info.value.path == tmp_path / "a.json"
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got 'fast'"):
        config_from_mapping(SlideConfig, {"optim": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="EmbedConfig.batch_size: must be a positive") as info:
        config_from_mapping(EmbedConfig, {"batch_size": 0}, tmp_path / "b.json")
    assert info.value.path == tmp_path / "b.json"
    with pytest.raises(ConfigError, match="expected a table of settings, got 3"):
        config_from_mapping(EmbedConfig, 3)


def test_missing_required_keys_are_named() -> None:
    from hsafast.bundle.specs import EncoderSpec

    with pytest.raises(ConfigError, match=r"missing key\(s\) \['mean', 'std'\]"):
        config_from_mapping(EncoderSpec, {"name": "e", "hash": "", "dim": 8, "input_size": 0})


def test_assignments_are_read_as_their_fields_types() -> None:
    from hsafast.embedding import EmbedConfig
    from hsafast.scoring import ScoringOptions

    config = config_from_assignments(
        EmbedConfig, ["target-mpp=1", "tile_size=64", "precision=bf16"], "--embed"
    )
    assert (config.target_mpp, config.tile_size, config.precision) == (1.0, 64, "bf16")
    assert config_from_assignments(ScoringOptions, ["batch_size=none"], "--x").batch_size is None
    with pytest.raises(ConfigError, match="--embed: tile_size='big' is not an integer"):
        config_from_assignments(EmbedConfig, ["tile_size=big"], "--embed")
    with pytest.raises(ConfigError, match="--embed: unknown key 'size'; allowed: target_mpp"):
        config_from_assignments(EmbedConfig, ["size=3"], "--embed")
    with pytest.raises(ConfigError, match="--embed takes KEY=VALUE"):
        config_from_assignments(EmbedConfig, ["tile_size"], "--embed")
    with pytest.raises(ConfigError, match="--embed: EmbedConfig.batch_size"):
        config_from_assignments(EmbedConfig, ["batch_size=0"], "--embed")
