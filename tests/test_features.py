"""FeatureFile: hsafast files round-trip; TRIDENT and CLAM files load; bad files are named."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import hsafast
from hsafast import FeatureFile, TileGrid, read_feature_file, write_feature_file
from hsafast.errors import FeatureFileError


def sample_file(n: int = 50, dim: int = 32, seed: int = 0) -> FeatureFile:
    rng = np.random.default_rng(seed)
    coords = np.stack(np.meshgrid(np.arange(10) * 512, np.arange(n // 10) * 512), -1)
    coords = coords.reshape(-1, 2).astype(np.int64)
    return FeatureFile(
        coords=coords,
        patch_size=256,
        patch_size_level0=512,
        features=rng.standard_normal((n, dim)).astype(np.float32),
        target_mpp=0.5,
        level=0,
        encoder="test-encoder",
        encoder_hash="sha256:" + "ab" * 32,
        stain="HE",
        slide_id="case-001_HE",
        coords_pair=coords + rng.integers(-30, 30, coords.shape),
        targets=rng.uniform(0, 1, (n, 3)).astype(np.float32),
    )


def test_round_trip(tmp_path: Path) -> None:
    data = sample_file()
    path = write_feature_file(tmp_path / "out" / "case.h5", data)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    back = read_feature_file(path)
    assert back.layout == "hsafast" and len(back) == 50
    for name in ("coords", "features", "coords_pair", "targets"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    for name in ("patch_size", "patch_size_level0", "target_mpp", "level", "encoder",
                 "encoder_hash", "stain", "slide_id"):  # fmt: skip
        assert getattr(back, name) == getattr(data, name), name
    assert back.coords.dtype == np.int64
    with h5py.File(path) as f:  # TRIDENT readers look on the coords dataset
        assert f["coords"].attrs["patch_size_level0"] == 512
        assert f["coords"].attrs["patch_size"] == 256
        assert f.attrs["slide_id"] == "case-001_HE"


def test_coordinates_only_file_from_grid(tmp_path: Path) -> None:
    coords = np.array([[0, 0], [512, 0], [1024, 512]], dtype=np.int64)
    grid = TileGrid(
        slide_path=tmp_path / "s.svs", coords=coords, tissue_fraction=np.array([1.0, 0.5, 0.3]),
        level=0, read_size=512, size=256, patch_size_level0=512, target_mpp=0.5,
    )  # fmt: skip
    ff = FeatureFile.from_grid(grid, slide_id="s", stain="HE")
    assert not ff.has_features
    ff.write(tmp_path / "s.h5")
    back = read_feature_file(tmp_path / "s.h5")
    assert back.features is None and back.patch_size_level0 == 512 and back.target_mpp == 0.5
    with_feats = back.with_features(np.ones((3, 4), np.float32), "enc", "h")
    assert with_feats.encoder == "enc" and with_feats.features is not None


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "case.h5"
    sample_file(seed=1).write(path)
    second = sample_file(seed=2)
    second.write(path)
    np.testing.assert_array_equal(read_feature_file(path).features, second.features)


def test_trident_files_load(tmp_path: Path) -> None:
    """TRIDENT: a patches file (coords only) and a features file, attributes on coords."""
    rng = np.random.default_rng(4)
    coords = rng.integers(0, 40000, (30, 2))
    coords_attrs = {
        "patch_size": 256,
        "patch_size_level0": 512,
        "level0_magnification": 40,
        "target_magnification": 20,
        "overlap": 0,
        "name": "TCGA-XX",
        "savetodir": "/job/20x_256px_0px_overlap",
    }
    patches = tmp_path / "TCGA-XX_patches.h5"
    with h5py.File(patches, "w") as f:
        ds = f.create_dataset("coords", data=coords)
        ds.attrs.update(coords_attrs)
    feats = tmp_path / "TCGA-XX.h5"
    with h5py.File(feats, "w") as f:
        f.create_dataset("features", data=rng.standard_normal((30, 1024)).astype(np.float32))
        f["features"].attrs.update({"name": "TCGA-XX", "savetodir": "/job/features_uni_v1"})
        f.create_dataset("coords", data=coords).attrs.update(coords_attrs)
    for path, has_features in ((patches, False), (feats, True)):
        ff = read_feature_file(path)
        assert ff.layout == "trident"
        assert ff.patch_size == 256 and ff.patch_size_level0 == 512
        assert ff.attrs["target_magnification"] == 20
        assert ff.has_features is has_features
        np.testing.assert_array_equal(ff.coords, coords)
    assert read_feature_file(feats).features.shape == (30, 1024)  # type: ignore[union-attr]


def test_clam_files_load(tmp_path: Path) -> None:
    """CLAM: coords with patch_level/downsample on the dataset; feature files carry no attrs."""
    rng = np.random.default_rng(6)
    coords = rng.integers(0, 30000, (20, 2)).astype(np.int64)
    patches = tmp_path / "slide_1.h5"
    with h5py.File(patches, "w") as f:
        ds = f.create_dataset("coords", data=coords)
        ds.attrs.update({
            "patch_size": 256,
            "patch_level": 1,
            "downsample": np.array([4.0, 4.0]),
            "downsampled_level_dim": np.array([12000, 9000]),
            "level_dim": np.array([12000, 9000]),
            "name": "slide_1",
            "save_path": "/results/patches",
        })  # fmt: skip
    ff = read_feature_file(patches)
    assert ff.layout == "clam" and ff.level == 1
    assert ff.patch_size == 256 and ff.patch_size_level0 == 1024
    features = tmp_path / "slide_1_features.h5"
    with h5py.File(features, "w") as f:
        f.create_dataset("features", data=rng.standard_normal((20, 1024)).astype(np.float32))
        f.create_dataset("coords", data=coords)
    ff = read_feature_file(features)
    assert ff.layout == "clam" and ff.patch_size is None and ff.features is not None


def write_raw(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
        if "coords" in datasets:
            f["coords"].attrs["patch_size"] = 256
            f["coords"].attrs["patch_size_level0"] = 256
    return path


def test_bad_files_name_the_file_and_reason(tmp_path: Path) -> None:
    good = np.zeros((4, 2), np.int64) + np.arange(4)[:, None]
    feats = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    nan = feats.copy()
    nan[2, 5] = np.nan
    cases = {
        "nocoords.h5": ({"features": feats}, "missing dataset 'coords'"),
        "shape.h5": ({"coords": np.zeros((4, 3), np.int64)}, "N x 2"),
        "rows.h5": ({"coords": good, "features": feats[:3]}, "N x D with N = 4"),
        "nan.h5": ({"coords": good, "features": nan}, "NaN/inf values in 1 tiles .first at tile 2"),
        "fraction.h5": ({"coords": good + 0.5}, "non-integer"),
        "pair.h5": ({"coords": good, "coords_pair": good[:2]}, "coords_pair must be 4 x 2"),
        "targets.h5": ({"coords": good, "targets": np.zeros(3)}, "one row per tile"),
    }
    for name, (datasets, reason) in cases.items():
        path = write_raw(tmp_path / name, **datasets)
        with pytest.raises(FeatureFileError, match=rf"{name}.*{reason}"):
            read_feature_file(path)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(FeatureFileError, match=r"text\.h5: not a readable HDF5 file"):
        read_feature_file(text)
    with pytest.raises(FeatureFileError, match="no such file"):
        read_feature_file(tmp_path / "missing.h5")
    no_attrs = tmp_path / "noattrs.h5"
    with h5py.File(no_attrs, "w") as f:
        f["coords"] = good
        f.attrs["something"] = 1
    with pytest.raises(FeatureFileError, match="no 'patch_size' attribute"):
        read_feature_file(no_attrs)


def test_invalid_objects_are_rejected() -> None:
    coords = np.zeros((3, 2), np.int64)
    with pytest.raises(FeatureFileError, match="int64"):
        FeatureFile(coords=coords.astype(np.int32), patch_size=256, patch_size_level0=256)
    with pytest.raises(FeatureFileError, match="NaN"):
        FeatureFile(coords=coords, patch_size=256, patch_size_level0=256,
                    features=np.full((3, 2), np.inf))  # fmt: skip
    with pytest.raises(FeatureFileError, match="patch_size must be positive"):
        FeatureFile(coords=coords, patch_size=0, patch_size_level0=256)
    assert hsafast.FeatureFile is FeatureFile
