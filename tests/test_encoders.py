"""The encoder registry, weight files and hashes, and preprocessing of uint8 tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hsafast.encoders import (
    create_encoder,
    encoder_info,
    list_encoders,
    load_weights_file,
    weights_hash,
)
from hsafast.encoders.base import resize_tiles
from hsafast.errors import EncoderError, EncoderWeightsError


def random_tiles(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_registry_lists_the_small_encoders():
    names = list_encoders()
    assert {"hsafast-cnn-s", "hsafast-vit-t", "hsafast-test-tiny"} <= set(names)
    assert list_encoders("small") == ["hsafast-cnn-s", "hsafast-vit-t"]
    with pytest.raises(EncoderError, match="unknown encoder 'nope'"):
        encoder_info("nope")


@pytest.mark.parametrize("name", ["hsafast-cnn-s", "hsafast-vit-t", "hsafast-test-tiny"])
def test_small_encoders_embed_tiles(name):
    encoder = create_encoder(name)
    info = encoder_info(name)
    assert (encoder.dim, encoder.input_size) == (info.dim, info.input_size)
    out = encoder.embed(random_tiles(3, 256))
    assert out.shape == (3, info.dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.std(dim=0).max() > 0  # different tiles give different embeddings


def test_same_seed_same_weights_and_rng_left_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_encoder("hsafast-cnn-s")
    after = torch.rand(1)
    assert torch.equal(before, after)  # building did not consume the caller's random state
    assert a.weights_hash == create_encoder("hsafast-cnn-s").weights_hash
    assert a.weights_hash != create_encoder("hsafast-cnn-s", seed=1).weights_hash


def test_hash_is_the_same_from_file_and_state_dict(tmp_path):
    encoder = create_encoder("hsafast-test-tiny", seed=3)
    state = encoder.weights_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")
    numpy_state = {k: v.numpy() for k, v in state.items()}
    expected = encoder.weights_hash
    assert weights_hash(load_weights_file(tmp_path / "w.safetensors")) == expected
    assert weights_hash(load_weights_file(tmp_path / "w.pth")) == expected
    assert weights_hash(numpy_state) == expected
    assert len(expected) == 64


def test_hash_follows_weight_updates():
    encoder = create_encoder("hsafast-test-tiny")
    before = encoder.weights_hash
    with torch.no_grad():
        next(encoder.parameters()).add_(0.01)
    assert encoder.weights_hash != before


def test_weights_load_from_wrapped_and_prefixed_checkpoints(tmp_path):
    source = create_encoder("hsafast-test-tiny", seed=5)
    wrapped = {
        "epoch": 3,
        "state_dict": {f"module.{k}": v for k, v in source.weights_state().items()},
    }
    torch.save(wrapped, tmp_path / "ckpt.pth")
    encoder = create_encoder("hsafast-test-tiny", weights=tmp_path / "ckpt.pth")
    assert encoder.weights_hash == source.weights_hash
    tiles = random_tiles(2, 64)
    assert torch.equal(encoder.embed(tiles), source.embed(tiles))


def test_weights_of_the_wrong_shape_are_named(tmp_path):
    other = create_encoder("hsafast-cnn-s").weights_state()
    save_file({k: v.contiguous() for k, v in other.items()}, str(tmp_path / "cnn.safetensors"))
    with pytest.raises(EncoderWeightsError) as err:
        create_encoder("hsafast-test-tiny", weights=tmp_path / "cnn.safetensors")
    message = str(err.value)
    assert "cnn.safetensors" in message and "wrong shape" in message
    assert (
        "features.0.0.weight: file (24, 3, 3, 3), encoder 'hsafast-test-tiny' (8, 3, 3, 3)"
        in message
    )


def test_missing_unreadable_and_non_finite_weights(tmp_path):
    with pytest.raises(EncoderWeightsError, match="weights file not found"):
        create_encoder("hsafast-test-tiny", weights=tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderWeightsError, match="not a readable PyTorch weights file"):
        create_encoder("hsafast-test-tiny", weights=tmp_path / "junk.pth")
    state = create_encoder("hsafast-test-tiny").weights_state()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].contiguous().clone()
    state[first].view(-1)[0] = float("nan")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(EncoderWeightsError, match=f"tensor {first} holds NaN"):
        create_encoder("hsafast-test-tiny", weights=tmp_path / "nan.safetensors")


def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(EncoderWeightsError, match="weights_only=True"):
        load_weights_file(tmp_path / "evil.pth")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_preprocess_matches_a_float64_reference(kind):
    encoder = create_encoder("hsafast-cnn-s")
    tiles = random_tiles(2, 256, seed=1)
    given = tiles if kind == "numpy" else torch.from_numpy(tiles)  # NumPy and torch paths
    out = encoder.preprocess(given)
    assert out.is_contiguous(memory_format=torch.channels_last)
    got = out.numpy()
    # reference: 2x2 box average, /255, ImageNet normalisation, channels first
    box = tiles.astype(np.float64).reshape(2, 128, 2, 128, 2, 3).mean(axis=(2, 4)) / 255.0
    ref = ((box - np.array(encoder.mean)) / np.array(encoder.std)).transpose(0, 3, 1, 2)
    worst = np.unravel_index(np.argmax(np.abs(got - ref)), ref.shape)
    assert np.abs(got - ref).max() < 1e-5, f"worst element {worst}: {got[worst]} vs {ref[worst]}"


@pytest.mark.parametrize("tile_size", [128, 256, 512])
def test_numpy_and_torch_paths_agree_bit_for_bit(tile_size):
    encoder = create_encoder("hsafast-cnn-s")
    tiles = random_tiles(3, tile_size, seed=tile_size)
    fast, reference = encoder.preprocess(tiles), encoder.preprocess(torch.from_numpy(tiles))
    diff = (fast - reference).abs()
    worst = np.unravel_index(int(diff.argmax()), tuple(diff.shape))
    assert torch.equal(fast, reference), f"worst element {worst}: {float(diff.max())}"


def test_resize_to_non_integer_factors_is_antialiased():
    x = torch.from_numpy(random_tiles(1, 256).transpose(0, 3, 1, 2).astype(np.float32))
    out = resize_tiles(x, 224)
    assert out.shape == (1, 3, 224, 224)
    assert abs(float(out.mean()) - float(x.mean())) < 1.0  # brightness is kept


def test_preprocess_rejects_float_or_grey_tiles():
    encoder = create_encoder("hsafast-test-tiny")
    with pytest.raises(EncoderError, match="uint8 N x H x W x 3"):
        encoder.preprocess(np.random.default_rng(0).random((2, 32, 32, 3)))
    with pytest.raises(EncoderError, match="uint8 N x H x W x 3"):
        encoder.preprocess(random_tiles(2, 32)[..., 0])
