"""Precomputed features as inputs: hsafast, TRIDENT and CLAM files; mixed sets are refused."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hsafast.encoders import feature_bags, read_feature_bag
from hsafast.errors import FeatureFileError
from hsafast.features import FeatureFile

TRIDENT_COORDS_ATTRS = {
    "patch_size": 256,
    "patch_size_level0": 512,
    "level0_magnification": 40,
    "target_magnification": 20,
    "overlap": 0,
}


def hsafast_file(
    path: Path,
    n: int,
    dim: int,
    encoder: str = "hsafast-cnn-s",
    digest: str = "a" * 64,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    coords = rng.integers(0, 10000, (n, 2)).astype(np.int64)
    features = rng.standard_normal((n, dim)).astype(np.float32)
    FeatureFile(coords, 256, 256, features, 0.5, 0, encoder, digest, "he", path.stem).write(path)
    return path


def trident_file(folder: Path, name: str, n: int, dim: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = folder / f"{name}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rng.standard_normal((n, dim)).astype(np.float32))
        f["features"].attrs.update({"name": name, "savetodir": str(folder)})
        f.create_dataset("coords", data=rng.integers(0, 9000, (n, 2))).attrs.update(
            TRIDENT_COORDS_ATTRS
        )
    return path


def clam_files(root: Path, name: str, n: int, dim: int) -> Path:
    rng = np.random.default_rng(1)
    (root / "h5_files").mkdir(parents=True)
    (root / "pt_files").mkdir()
    coords = rng.integers(0, 9000, (n, 2)).astype(np.int64)
    features = rng.standard_normal((n, dim)).astype(np.float32)
    with h5py.File(root / "h5_files" / f"{name}.h5", "w") as f:
        f.create_dataset("features", data=features)
        f.create_dataset("coords", data=coords)
    torch.save(torch.from_numpy(features), root / "pt_files" / f"{name}.pt")
    return root


def test_hsafast_file(tmp_path):
    bag = read_feature_bag(hsafast_file(tmp_path / "s1.h5", 40, 256))
    assert (len(bag), bag.dim, bag.encoder, bag.encoder_hash, bag.layout) == (
        40,
        256,
        "hsafast-cnn-s",
        "a" * 64,
        "hsafast",
    )
    assert bag.file is not None and bag.file.stain == "he"


def test_trident_encoder_name_comes_from_its_folder(tmp_path):
    bag = read_feature_bag(
        trident_file(tmp_path / "20x_256px_0px_overlap" / "features_uni_v1", "TCGA-1", 30, 1024)
    )
    assert (bag.layout, bag.encoder, bag.encoder_hash, bag.dim) == ("trident", "uni", "", 1024)
    assert bag.coords is not None and bag.coords.shape == (30, 2)
    other = read_feature_bag(trident_file(tmp_path / "features_gigapath", "TCGA-2", 10, 1536))
    assert other.encoder == "gigapath"


def test_clam_h5_and_pt_files(tmp_path):
    root = clam_files(tmp_path / "FEATURES", "slide_1", 25, 1024)
    h5 = read_feature_bag(root / "h5_files" / "slide_1.h5", encoder="uni")
    pt = read_feature_bag(root / "pt_files" / "slide_1.pt", encoder="uni")
    assert h5.layout == "clam" and pt.layout == "clam-pt" and pt.encoder == "uni"
    np.testing.assert_array_equal(h5.features, pt.features)
    assert pt.coords is not None
    np.testing.assert_array_equal(h5.coords, pt.coords)
    alone = tmp_path / "alone.pt"
    torch.save(torch.randn(5, 8), alone)
    assert read_feature_bag(alone).coords is None


def test_bad_inputs_are_named(tmp_path):
    coords_only = tmp_path / "coords.h5"
    FeatureFile(np.zeros((3, 2), np.int64), 256, 256).write(coords_only)
    with pytest.raises(FeatureFileError, match="coordinates only"):
        read_feature_bag(coords_only)
    nan = torch.randn(6, 4)
    nan[2, 1] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(FeatureFileError, match="NaN/inf values in 1 tiles \\(first at tile 2\\)"):
        read_feature_bag(tmp_path / "nan.pt")
    torch.save({"features": torch.randn(3, 3)}, tmp_path / "dict.pt")
    with pytest.raises(FeatureFileError, match="one N x D tensor"):
        read_feature_bag(tmp_path / "dict.pt")
    with pytest.raises(FeatureFileError, match="not 'uni' as asked"):
        read_feature_bag(hsafast_file(tmp_path / "x.h5", 4, 8), encoder="uni")


def test_mixed_sets_are_refused_before_training(tmp_path):
    a = hsafast_file(tmp_path / "a.h5", 10, 256, seed=1)
    b = hsafast_file(tmp_path / "b.h5", 12, 256, seed=2)
    assert [len(x) for x in feature_bags([a, b])] == [10, 12]
    narrow = hsafast_file(tmp_path / "narrow.h5", 10, 128)
    with pytest.raises(FeatureFileError, match="128-d but a.h5 has 256-d") as err:
        feature_bags([a, narrow])
    assert "narrow.h5" in str(err.value)
    other = hsafast_file(tmp_path / "other.h5", 10, 256, encoder="hsafast-vit-t")
    with pytest.raises(
        FeatureFileError, match="encoder 'hsafast-vit-t' but a.h5 from 'hsafast-cnn-s'"
    ):
        feature_bags([a, other])
    retrained = hsafast_file(tmp_path / "retrained.h5", 10, 256, digest="b" * 64)
    with pytest.raises(
        FeatureFileError, match="weights bbbbbbbbbbbb but a.h5 from weights aaaaaaaaaaaa"
    ):
        feature_bags([a, retrained])
