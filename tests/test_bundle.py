"""ModelBundle: a round trip gives the same predictions; every inconsistency is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hsafast.bundle import EncoderSpec, ModelBundle, Preprocessing
from hsafast.encoders import create_encoder
from hsafast.errors import BundleError, FeatureFileError, InvalidParameterError
from hsafast.features import FeatureFile
from hsafast.models import SlideModel, SlideModelConfig


def make_bundle(in_bundle: bool = False, **config) -> ModelBundle:
    # an encoder trained here travels in the bundle; one used as registered is rebuilt by name
    encoder = create_encoder("hsafast-test-tiny", seed=2 if in_bundle else 0)
    torch.manual_seed(0)
    models = {
        "ki67": SlideModel(SlideModelConfig(in_dim=encoder.dim, positivity_outputs=1, **config)),
        "p53": SlideModel(SlideModelConfig(in_dim=encoder.dim, positivity_outputs=1, **config)),
    }
    return ModelBundle(
        mode="patch",
        encoder=EncoderSpec.from_encoder(encoder, in_bundle=in_bundle),
        models=models,
        preprocessing=Preprocessing(target_mpp=0.5, tile_size=256, max_tiles=512),
        tile_encoder=encoder if in_bundle else None,
        training={"seed": 0, "best_epoch": 3},
    )


def edit_config(path, change) -> None:
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("in_bundle", [False, True])
def test_round_trip_gives_identical_predictions(tmp_path, in_bundle):
    bundle = make_bundle(in_bundle)
    bundle.save(tmp_path / "b")
    loaded = ModelBundle.load(tmp_path / "b")
    assert loaded.mode == "patch" and sorted(loaded.models) == ["ki67", "p53"]
    assert loaded.encoder == bundle.encoder and loaded.preprocessing.max_tiles == 512
    assert loaded.training["best_epoch"] == 3
    assert loaded.markers["ki67"].positive_class == "high"
    features = torch.from_numpy(np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32))
    for marker, model in bundle.models.items():
        with torch.no_grad():
            expected = model.eval()(features)
            got = loaded.model(marker)(features)
        assert torch.equal(expected.logits, got.logits) and torch.equal(
            expected.positivity, got.positivity
        )
    assert loaded.pool_params("ki67").fingerprint() == bundle.pool_params("ki67").fingerprint()
    tiles = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    expected = create_encoder("hsafast-test-tiny", seed=2 if in_bundle else 0).embed(tiles)
    assert torch.equal(loaded.tile_encoder().embed(tiles), expected)


def test_the_directory_holds_json_and_safetensors_only(tmp_path):
    make_bundle(True).save(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "config.json",
        "weights.safetensors",
    ]
    names = set(load_file(str(tmp_path / "b" / "weights.safetensors")))
    assert "ki67.pool.V" in names and "p53.head.3.weight" in names
    assert any(n.startswith("encoder.") for n in names)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["format"] == "hsafast.ModelBundle" and config["encoder"]["in_bundle"] is True
    assert config["markers"]["p53"] == {"classes": ["low", "high"], "positive_class": "high"}


def test_saving_again_replaces_the_bundle(tmp_path):
    make_bundle().save(tmp_path / "b")
    make_bundle(aggregator="mean").save(tmp_path / "b")
    assert ModelBundle.load(tmp_path / "b").model_config["aggregator"] == "mean"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging folders left


def test_wrong_encoder_weights_are_refused(tmp_path):
    make_bundle().save(tmp_path / "b")
    other = create_encoder("hsafast-test-tiny", seed=9).weights_state()
    save_file({k: v.contiguous() for k, v in other.items()}, str(tmp_path / "other.safetensors"))
    loaded = ModelBundle.load(tmp_path / "b")
    with pytest.raises(BundleError, match="was trained on weights"):
        loaded.tile_encoder(weights=tmp_path / "other.safetensors")


def test_features_from_another_encoder_are_refused(tmp_path):
    bundle = make_bundle()
    coords = np.arange(20, dtype=np.int64).reshape(10, 2)
    good = FeatureFile(
        coords,
        256,
        256,
        np.ones((10, 16), np.float32),
        encoder="hsafast-test-tiny",
        encoder_hash=bundle.encoder.hash,
    )
    bundle.check_features(good)
    with pytest.raises(FeatureFileError, match="features are 8-d but the model expects 16-d"):
        bundle.check_features(FeatureFile(coords, 256, 256, np.ones((10, 8), np.float32)), "x.h5")
    with pytest.raises(FeatureFileError, match="from encoder 'uni'"):
        bundle.check_features(
            FeatureFile(coords, 256, 256, np.ones((10, 16), np.float32), encoder="uni")
        )
    with pytest.raises(FeatureFileError, match="trained on weights"):
        bundle.check_features(
            FeatureFile(
                coords,
                256,
                256,
                np.ones((10, 16), np.float32),
                encoder="hsafast-test-tiny",
                encoder_hash="0" * 64,
            )
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(format="something"), "is not a hsafast.ModelBundle"),
        (
            lambda c: c.update(format_version=99),
            "format version 99 .* newer than this hsafast reads",
        ),
        (lambda c: c.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda c: c.pop("markers"), r"missing keys \['markers'\]"),
        (lambda c: c.update(mode="magic"), "mode must be one of"),
        (lambda c: c["encoder"].update(colour="blue"), "encoder: unknown key 'colour'"),
        (lambda c: c["preprocessing"].update(tile_size=0), "tile_size must be a positive integer"),
        (
            lambda c: c["model"].update(embed_dim=128),
            "marker 'ki67': weights do not fit .* wrong shape",
        ),
        (
            lambda c: c["model"].update(aggregator="mean"),
            "unexpected tensors .*ki67|ki67.*unexpected",
        ),
        (lambda c: c["markers"].pop("p53"), "tensors of no marker"),
        (
            lambda c: c["markers"]["ki67"].update(positive_class="odd"),
            "markers.ki67: .*positive_class",
        ),
        (lambda c: c["encoder"].update(dim=32), "weights do not fit|takes 16-d features"),
        (lambda c: c.update(weights_sha256="0" * 64), "does not match the weights_sha256"),
    ],
)
def test_inconsistent_bundles_are_refused(tmp_path, change, message):
    make_bundle().save(tmp_path / "b")
    edit_config(tmp_path / "b", change)
    with pytest.raises(BundleError, match=message) as err:
        ModelBundle.load(tmp_path / "b")
    assert str(tmp_path / "b") in str(err.value)


def test_damaged_or_missing_files(tmp_path):
    with pytest.raises(BundleError, match="no such bundle directory"):
        ModelBundle.load(tmp_path / "absent")
    make_bundle().save(tmp_path / "b")
    (tmp_path / "b" / "weights.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(BundleError, match="not a readable safetensors file"):
        ModelBundle.load(tmp_path / "b")
    (tmp_path / "b" / "weights.safetensors").unlink()
    with pytest.raises(BundleError, match="missing weights.safetensors"):
        ModelBundle.load(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not readable JSON"):
        ModelBundle.load(tmp_path / "b")


def test_tampered_tensors_are_caught_by_the_hash(tmp_path):
    make_bundle().save(tmp_path / "b")
    path = tmp_path / "b" / "weights.safetensors"
    tensors = load_file(str(path))
    tensors["ki67.pool.w"] = tensors["ki67.pool.w"] + 0.5
    save_file(tensors, str(path))
    with pytest.raises(BundleError, match="changed or damaged"):
        ModelBundle.load(tmp_path / "b")


def test_construction_checks():
    encoder = create_encoder("hsafast-test-tiny")
    spec = EncoderSpec.from_encoder(encoder)
    with pytest.raises(InvalidParameterError, match="takes 32-d features"):
        ModelBundle(
            mode="slide", encoder=spec, models={"ki67": SlideModel(SlideModelConfig(in_dim=32))}
        )
    with pytest.raises(InvalidParameterError, match="marker name 'Ki.67'"):
        ModelBundle(
            mode="slide", encoder=spec, models={"Ki.67": SlideModel(SlideModelConfig(in_dim=16))}
        )
    with pytest.raises(InvalidParameterError, match="mode must be one of"):
        ModelBundle(
            mode="fancy", encoder=spec, models={"ki67": SlideModel(SlideModelConfig(in_dim=16))}
        )
    with pytest.raises(InvalidParameterError, match="encoder.hash"):
        EncoderSpec("x", "abc", 16, 32, (0, 0, 0), (1, 1, 1))


def test_encoder_spec_of_features_from_files():
    uni = EncoderSpec.from_features("uni", "", 1024)  # TRIDENT features record no hash
    assert (uni.input_size, uni.mean, uni.hash) == (224, (0.485, 0.456, 0.406), "")
    conch = EncoderSpec.from_features("conch-style", "", 512)
    assert conch.input_size == 448 and conch.mean[0] == pytest.approx(0.4815, abs=1e-4)
    other = EncoderSpec.from_features("phikon", "", 768)  # not registered: features only
    assert other.input_size == 0
    with pytest.raises(InvalidParameterError, match="features are 768-d but encoder 'uni'"):
        EncoderSpec.from_features("uni", "", 768)
