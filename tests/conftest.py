"""Shared fixtures: real test files, and the GPU marker that skips without a CUDA GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


def _has_cuda_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("gpu") for item in items) and not _has_cuda_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def cmu_svs() -> Path:
    from hsafast.data import sample_slide_path

    return sample_slide_path()


@pytest.fixture(scope="session")
def tcga_svs() -> Path:
    return DATA / "tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture(scope="session")
def ihc_png() -> Path:
    return DATA / "skimage_ihc.png"


@pytest.fixture(scope="session")
def dicom_jpeg() -> Path:
    return DATA / "multiframe_camelyon_challenge_image.dcm"


@pytest.fixture(scope="session")
def birl_mouse() -> Path:
    return DATA / "paired" / "birl_mouse_lung_lesion"


@pytest.fixture(scope="session")
def birl_kidney() -> Path:
    return DATA / "paired" / "birl_rat_kidney"
