"""Bad training input fails before training starts, with the file and the reason named."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from trainer_helpers import data_config, make_cohort, run_config

from hsafast.errors import FeatureFileError, HsafastError
from hsafast.features import FeatureFile
from hsafast.manifest import read_manifest
from hsafast.trainer.checks import TrainingDataError
from hsafast.trainer.config import EncoderConfig
from hsafast.trainer.run import train


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    make_cohort(tmp_path, n_cases=8, tiles=4)
    return tmp_path


def _edit_manifest(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = root / "manifest.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows = edit(rows)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _no_training(out: Path) -> None:
    assert not (out / "models").exists()


def test_missing_slide_files_are_listed(cohort: Path) -> None:
    (cohort / "slides" / "case003_IHC.tif").unlink()
    with pytest.raises(
        TrainingDataError, match=r"1 slide files are missing: case003: .*case003_IHC"
    ):
        train(run_config(cohort, cohort / "out"))
    _no_training(cohort / "out")


def test_a_case_without_its_ihc_pair(cohort: Path) -> None:
    def same(rows):  # type: ignore[no-untyped-def]
        rows[2]["ihc_path"] = rows[2]["he_path"]
        return rows

    _edit_manifest(cohort, same)
    with pytest.raises(TrainingDataError, match="case002: the H&E and the IHC slide are the same"):
        train(run_config(cohort, cohort / "out"))


def test_markers_unknown_to_the_configuration(cohort: Path) -> None:
    with pytest.raises(TrainingDataError, match=r"markers \['p53'\].*no case"):
        train(run_config(cohort, cohort / "out", markers=("p53",)))

    def other(rows):  # type: ignore[no-untyped-def]
        rows[0]["marker"] = "her2"
        return rows

    _edit_manifest(cohort, other)
    with pytest.raises(TrainingDataError, match="her2.*does not train"):
        train(run_config(cohort, cohort / "out", markers=("ki67",)))
    with pytest.raises(TrainingDataError, match="'her2' has no stain definition"):
        train(run_config(cohort, cohort / "out"))


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    make_cohort(tmp_path, n_cases=8, tiles=4, high_every=0)
    with pytest.raises(TrainingDataError, match="ki67.*all 8 cases are 'low'"):
        train(run_config(tmp_path, tmp_path / "out"))
    _no_training(tmp_path / "out")


def test_too_few_patients_for_the_folds(cohort: Path) -> None:
    with pytest.raises(TrainingDataError, match="7 folds need at least 7 patients"):
        train(run_config(cohort, cohort / "out", folds=7))


def test_encoder_weights_of_the_wrong_shape(cohort: Path) -> None:
    from safetensors.torch import save_file

    from hsafast.encoders import create_encoder

    state = create_encoder("hsafast-test-tiny").state_dict()
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = state[key][:, :2].contiguous()  # a conv that takes 2 channels, not 3
    weights = cohort / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    config = replace(
        run_config(cohort, cohort / "out"),
        encoder=EncoderConfig(name="hsafast-test-tiny", weights=str(weights)),
    )
    with pytest.raises(TrainingDataError, match=f"hsafast-test-tiny.*{key}") as info:
        train(config)
    assert "bad.safetensors" in str(info.value)
    _no_training(cohort / "out")


# ---- feature files ------------------------------------------------------------------------
def _write_features(root: Path, dim: int = 16, encoder: str = "lab-encoder") -> Path:
    folder = root / "features"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for case in read_manifest(root / "manifest.csv").cases:
        for slide in (case.he_path, case.ihc_path):
            n = 6
            FeatureFile(
                coords=np.stack([np.arange(n) * 256, np.zeros(n)], 1).astype(np.int64),
                patch_size=256,
                patch_size_level0=256,
                features=rng.normal(size=(n, dim)).astype(np.float32),
                encoder=encoder,
                encoder_hash="ab" * 32,
            ).write(folder / f"{slide.stem}.h5")
    return folder


def _files_config(root: Path):  # type: ignore[no-untyped-def]
    config = run_config(
        root,
        root / "out",
        modes=("slide", "classification-only"),
        slide={"features": "files"},
        data=data_config(cache=str(root / "cache"), features=str(root / "features")),
    )
    return config


def test_feature_files_train_slide_mode(cohort: Path) -> None:
    _write_features(cohort)
    summary = train(_files_config(cohort))
    assert summary.cases == 8
    from hsafast.bundle import ModelBundle

    bundle = ModelBundle.load(cohort / "out" / "models" / "slide" / "fold0")
    assert bundle.encoder.name == "lab-encoder" and bundle.encoder.dim == 16
    assert not bundle.encoder.in_bundle


def test_feature_files_with_nan(cohort: Path) -> None:
    folder = _write_features(cohort)
    path = folder / "case004_HE.h5"
    with h5py.File(path, "r+") as f:
        data = f["features"][()]
        data[2, 5] = np.nan
        f["features"][...] = data
    with pytest.raises(FeatureFileError, match="NaN") as info:
        train(_files_config(cohort))
    assert info.value.path == path
    _no_training(cohort / "out")


def test_feature_files_of_other_widths_or_encoders(cohort: Path) -> None:
    folder = _write_features(cohort)
    odd = read_manifest(cohort / "manifest.csv").cases[5]
    FeatureFile(
        coords=np.zeros((3, 2), np.int64),
        patch_size=256,
        patch_size_level0=256,
        features=np.ones((3, 24), np.float32) * np.arange(24, dtype=np.float32),
        encoder="lab-encoder",
    ).write(folder / f"{odd.ihc_path.stem}.h5")
    with pytest.raises(FeatureFileError, match="24-d but .* 16-d"):
        train(_files_config(cohort))
    FeatureFile(
        coords=np.zeros((3, 2), np.int64),
        patch_size=256,
        patch_size_level0=256,
        features=np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32),
        encoder="conch",
    ).write(folder / f"{odd.ihc_path.stem}.h5")
    with pytest.raises(FeatureFileError, match="encoder 'conch'"):
        train(_files_config(cohort))
    _write_features(cohort, encoder="uni")  # registered: UNI gives 1024-d features
    with pytest.raises(FeatureFileError, match="16-d but encoder 'uni' gives 1024-d"):
        train(_files_config(cohort))
    (folder / f"{odd.he_path.stem}.h5").unlink()
    with pytest.raises(HsafastError, match="no feature file"):
        train(_files_config(cohort))
