"""Opening real slides and rejecting bad files with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hsafast
from hsafast.errors import InvalidParameterError, MissingPixelSizeError, SlideError


def test_real_svs_metadata(cmu_svs: Path) -> None:
    with hsafast.open_slide(cmu_svs) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.objective_power == 20
        assert "label" in slide.associated_image_names
        region = slide.read_region((1000, 1400), 0, (128, 96))
        assert region.shape == (96, 128, 3) and region.dtype == np.uint8
        assert region.std() > 5  # real tissue, not a blank fill


def test_missing_pixel_size_is_explicit(tcga_svs: Path) -> None:
    slide = hsafast.open_slide(tcga_svs)
    with pytest.raises(MissingPixelSizeError, match="tcga-cr-7395"):
        _ = slide.mpp
    assert hsafast.open_slide(tcga_svs, mpp=0.25).mpp == 0.25


@pytest.mark.parametrize("content", [b"", b"not a slide at all" * 10])
def test_bad_files_name_the_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "broken.svs"
    bad.write_bytes(content)
    with pytest.raises(SlideError, match="broken.svs"):
        hsafast.open_slide(bad)


def test_missing_file_and_bad_level(tmp_path: Path, cmu_svs: Path) -> None:
    with pytest.raises(SlideError, match="no such file"):
        hsafast.open_slide(tmp_path / "absent.svs")
    with pytest.raises(InvalidParameterError, match="level 3"):
        hsafast.open_slide(cmu_svs).read_region((0, 0), 3, (10, 10))


def test_region_outside_slide_is_white(cmu_svs: Path) -> None:
    with hsafast.open_slide(cmu_svs) as slide:
        w, h = slide.dimensions
        region = slide.read_region((w - 16, h - 16), 0, (32, 32))
    assert (region[20:, 20:] == 255).all()
