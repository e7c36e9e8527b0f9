"""timm architectures and the registered pathology encoders: local weights only, strict loading,
the published architectures' sizes, and errors that say where the weights must go."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hsafast.encoders import create_encoder, encoder_info, list_encoders, weights_hash
from hsafast.encoders import registry as registry_module
from hsafast.encoders.registry import EncoderInfo
from hsafast.encoders.timm_family import build_timm
from hsafast.errors import EncoderError, EncoderWeightsError


def save_state(state: dict[str, torch.Tensor], path) -> None:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def tiles(n: int = 2, size: int = 256) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_any_timm_architecture_with_local_weights(tmp_path):
    source = create_encoder("timm:resnet18", seed=4)
    assert (source.dim, source.input_size) == (512, 224)
    assert encoder_info("timm:resnet18").dim == 512
    save_state(source.weights_state(), tmp_path / "resnet18.safetensors")
    torch.save(source.weights_state(), tmp_path / "resnet18.pth")
    for file in ("resnet18.safetensors", "resnet18.pth"):
        loaded = create_encoder("timm:resnet18", weights=tmp_path / file)
        assert loaded.weights_hash == source.weights_hash
        assert torch.equal(loaded.embed(tiles()), source.embed(tiles()))
    # the hash covers timm's own tensor names, with no wrapper prefix
    assert weights_hash(source.model.state_dict()) == source.weights_hash


def test_timm_weights_of_another_architecture_are_refused(tmp_path):
    save_state(create_encoder("timm:resnet34").weights_state(), tmp_path / "r34.safetensors")
    with pytest.raises(EncoderWeightsError, match="r34.safetensors.*unexpected tensors"):
        create_encoder("timm:resnet18", weights=tmp_path / "r34.safetensors")
    wider = build_timm("x", "resnet18").weights_state()
    wider["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    save_state(wider, tmp_path / "wider.safetensors")
    with pytest.raises(EncoderWeightsError, match=r"conv1.weight: file \(32, 3, 7, 7\)"):
        create_encoder("timm:resnet18", weights=tmp_path / "wider.safetensors")


def test_timm_names_and_downloads():
    with pytest.raises(EncoderError, match="timm has no architecture 'not_a_net'"):
        create_encoder("timm:not_a_net")
    with pytest.raises(EncoderError, match="never downloads"):
        create_encoder("timm:resnet18", pretrained=True)
    with pytest.raises(EncoderError, match="cannot be built with"):
        create_encoder("hsafast-cnn-s", width=3)


def test_missing_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(EncoderError, match=r"'timm' extra \(pip install 'hsafast\[timm\]'\)"):
        create_encoder("timm:resnet18")


@pytest.mark.parametrize(
    ("name", "dim", "size", "millions"),
    [
        ("uni", 1024, 224, 303.35),  # UNI model card: ViT-L/16, 303M parameters
        ("gigapath", 1536, 224, 1134.95),  # Prov-GigaPath tile encoder: 1.13B
        ("virchow2", 2560, 224, 631.24),  # Virchow 2: ViT-H/14, 632M
        ("conch-style", 512, 448, 87.57),  # CONCH's ViT-B/16 trunk (86M) + pooler
    ],
)
def test_published_architectures(name, dim, size, millions):
    info = encoder_info(name)
    assert (info.family, info.weights, info.dim, info.input_size) == (
        "pathology",
        "required",
        dim,
        size,
    )
    with torch.device("meta"):  # no memory, no initialisation
        encoder = info.build()
        out = encoder(torch.empty(2, 3, size, size))
    assert tuple(out.shape) == (2, dim)
    params = sum(p.numel() for p in encoder.weights_module.parameters()) / 1e6
    assert abs(params - millions) < 0.01


def test_missing_pathology_weights_say_where_they_go(tmp_path, monkeypatch):
    monkeypatch.setenv("HSAFAST_WEIGHTS", str(tmp_path))
    with pytest.raises(EncoderError) as err:
        create_encoder("virchow2")
    message = str(err.value)
    assert str(tmp_path / "virchow2" / "pytorch_model.bin") in message
    assert "huggingface.co/paige-ai/Virchow2" in message and "never downloads" in message
    assert set(list_encoders("pathology")) == {"uni", "gigapath", "virchow2", "conch-style"}


@pytest.fixture
def small_required_encoder(monkeypatch):
    """A 'required' encoder as small as timm's ViT-Ti, registered for one test."""
    info = EncoderInfo(
        name="test-vit-ti",
        family="pathology",
        dim=192,
        input_size=224,
        description="test",
        build=lambda: build_timm("test-vit-ti", "vit_tiny_patch16_224"),
        weights="required",
        weights_file="pytorch_model.bin",
    )
    monkeypatch.setitem(registry_module._REGISTRY, info.name, info)
    return info


def test_required_weights_load_from_their_folder(tmp_path, monkeypatch, small_required_encoder):
    reference = build_timm("test-vit-ti", "vit_tiny_patch16_224", seed=7)
    (tmp_path / "test-vit-ti").mkdir()
    torch.save(reference.weights_state(), tmp_path / "test-vit-ti" / "pytorch_model.bin")
    monkeypatch.setenv("HSAFAST_WEIGHTS", str(tmp_path))
    encoder = create_encoder("test-vit-ti")  # built on the meta device, then the file adopted
    assert not any(p.is_meta for p in encoder.parameters())
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    assert encoder.weights_hash == reference.weights_hash
    assert torch.allclose(encoder.embed(tiles()), reference.embed(tiles()), atol=1e-6)


def test_required_weights_half_precision_file(tmp_path, small_required_encoder):
    reference = build_timm("test-vit-ti", "vit_tiny_patch16_224", seed=7)
    half = {k: v.half() for k, v in reference.weights_state().items()}
    save_state(half, tmp_path / "half.safetensors")
    encoder = create_encoder("test-vit-ti", weights=tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    assert torch.allclose(encoder.embed(tiles()), reference.embed(tiles()), atol=0.05, rtol=0.05)


@pytest.mark.slow
def test_conch_style_takes_the_image_tower_of_a_checkpoint(tmp_path):
    tower = encoder_info("conch-style").build()
    state = {f"visual.{k}": v for k, v in tower.weights_state().items()}
    state["visual.proj_contrast"] = torch.zeros(512, 512)
    state["text.token_embedding.weight"] = torch.zeros(10, 4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = create_encoder("conch-style", weights=tmp_path / "pytorch_model.bin")
    assert loaded.weights_hash == tower.weights_hash
    x = tiles(1, 448)
    assert torch.allclose(loaded.embed(x), tower.embed(x), atol=1e-5)
