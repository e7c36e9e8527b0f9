"""Broken and unsupported files raise an hsafast error naming the file and the reason.

The broken files are made here from the real CMU-1 SVS: truncated at several
points, with bytes overwritten inside tile data, or replaced by other content.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

import hsafast
from hsafast.errors import HsafastError, InvalidParameterError, SlideError

BACKENDS = ["auto", "openslide", "tifffile"]


def read_everything(path: Path, backend: str) -> None:
    """Open, read metadata and every pixel of every level; must raise SlideError or succeed."""
    with hsafast.open_slide(path, backend=backend) as slide:
        for level in range(slide.level_count):
            w, h = slide.level_dimensions[level]
            ds = slide.level_downsamples[level]
            coords = [
                (round(x * ds), round(y * ds)) for y in range(0, h, 512) for x in range(0, w, 512)
            ]
            slide.read_regions(np.asarray(coords), level, (512, 512), workers=2)
        for name in slide.associated_image_names:
            slide.associated_image(name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fraction", [0.001, 0.05, 0.5, 0.97])
def test_truncated_svs(cmu_svs: Path, tmp_path: Path, backend: str, fraction: float) -> None:
    data = cmu_svs.read_bytes()
    bad = tmp_path / "truncated.svs"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideError, match="truncated.svs") as info:
        read_everything(bad, backend)
    assert info.value.reason  # a reason, not just the name


def tile_span(path: Path, index: int) -> tuple[int, int]:
    page = tifffile.TiffFile(path).pages[0]
    return int(page.dataoffsets[index]), int(page.databytecounts[index])


@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_overwritten_tile_data(cmu_svs: Path, tmp_path: Path, backend: str) -> None:
    data = bytearray(cmu_svs.read_bytes())
    offset, count = tile_span(cmu_svs, 2 * 10 + 7)  # column 7, row 2 (10 tiles across)
    data[offset + count // 2 : offset + count // 2 + 48] = b"\xff" * 48
    bad = tmp_path / "damaged.svs"
    bad.write_bytes(bytes(data))
    slide = hsafast.open_slide(bad, backend=backend)
    # regions away from the damaged tile still read, and read the same as before
    good = hsafast.open_slide(cmu_svs, backend=backend).read_region((0, 0), 0, (480, 240))
    np.testing.assert_array_equal(slide.read_region((0, 0), 0, (480, 240)), good)
    with pytest.raises(SlideError, match="damaged.svs") as info:
        slide.read_regions(np.array([[0, 0], [7 * 240 + 100, 2 * 240 + 50]]), 0, (200, 200))
    if backend == "tifffile":
        assert "column 7, row 2" in str(info.value)


def test_flipped_bits_in_tile_data(cmu_svs: Path, tmp_path: Path) -> None:
    """Bits flipped at random through a tile's entropy-coded data."""
    rng = np.random.default_rng(11)
    offset, count = tile_span(cmu_svs, 5 * 10 + 3)
    data = bytearray(cmu_svs.read_bytes())
    for pos in rng.integers(offset + 40, offset + count - 8, size=40):
        data[pos] ^= 0x5A
    bad = tmp_path / "bitflips.svs"
    bad.write_bytes(bytes(data))
    ref = hsafast.open_slide(bad, backend="openslide")
    slide = hsafast.open_slide(bad, backend="tifffile")
    if not slide.native_decoding:  # type: ignore[attr-defined]
        pytest.skip("imagecodecs ignores libjpeg's corrupt-data warnings; needs the native decoder")
    loc = (3 * 240 + 10, 5 * 240 + 10)
    try:
        expected = ref.read_region(loc, 0, (200, 200))
    except SlideError:
        expected = None
    if expected is None:  # OpenSlide detects the damage: so must we
        with pytest.raises(SlideError, match=r"bitflips\.svs.*column 3, row 5"):
            slide.read_region(loc, 0, (200, 200))
    else:  # the damage decodes to valid (wrong) pixels: the same wrong pixels
        np.testing.assert_array_equal(slide.read_region(loc, 0, (200, 200)), expected)


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.svs", b""),
        ("text.svs", b"this is a text file, not a slide\n" * 40),
        ("zeros.tif", bytes(4096)),
        ("badheader.tif", b"II*\x00" + b"\xff\xff\xff\x7f" + bytes(100)),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_not_a_slide(tmp_path: Path, name: str, content: bytes, backend: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(SlideError, match=name.replace(".", r"\.")):
        read_everything(bad, backend)


def test_image_renamed_as_svs(ihc_png: Path, tmp_path: Path) -> None:
    bad = tmp_path / "renamed.svs"
    bad.write_bytes(ihc_png.read_bytes())
    with pytest.raises(SlideError, match=r"renamed\.svs: unsupported format"):
        hsafast.open_slide(bad)


def test_unsupported_format(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "table.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(10)
    with pytest.raises(SlideError, match=r"table\.h5: unsupported format"):
        hsafast.open_slide(path)


def test_unreadable_paths(tmp_path: Path, cmu_svs: Path) -> None:
    with pytest.raises(SlideError, match="is a directory"):
        hsafast.open_slide(tmp_path)
    with pytest.raises(SlideError, match="no such file"):
        hsafast.open_slide(tmp_path / "missing.svs")
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop reads")
    locked = tmp_path / "locked.svs"
    locked.write_bytes(cmu_svs.read_bytes())
    locked.chmod(0)
    with pytest.raises(SlideError, match="permission denied"):
        hsafast.open_slide(locked)


def test_bad_backend_and_parameters(cmu_svs: Path) -> None:
    with pytest.raises(InvalidParameterError, match="unknown backend 'nope'"):
        hsafast.open_slide(cmu_svs, backend="nope")
    slide = hsafast.open_slide(cmu_svs)
    with pytest.raises(InvalidParameterError, match="N x 2"):
        slide.read_regions(np.zeros((3, 3)), 0, (10, 10))
    with pytest.raises(InvalidParameterError, match="reduce"):
        slide.read_regions(np.zeros((1, 2)), 0, (10, 10), reduce=0)
    with pytest.raises(InvalidParameterError, match="out must be"):
        slide.read_regions(np.zeros((2, 2)), 0, (10, 10), out=np.zeros((2, 10, 10, 3)))
    with pytest.raises(HsafastError):
        hsafast.open_slide(cmu_svs, mpp=-1)
