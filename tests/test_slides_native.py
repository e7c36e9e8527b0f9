"""The native JPEG tile decoder against references on random inputs.

- ``jpeg_decode`` against imagecodecs' libjpeg-turbo decoder on random images
  encoded with every common chroma subsampling, in YCbCr and RGB;
- ``jpeg_read_regions`` (planning, tile splicing, edges, white fill, DCT
  scaling) against the same regions assembled in NumPy from single decoded tiles.
Each comparison names the worst pixel when it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hsafast.slides.tiled_level import native_jpeg_version

imagecodecs = pytest.importorskip("imagecodecs")

pytestmark = pytest.mark.skipif(
    native_jpeg_version() == "", reason="hsafast was built without libjpeg-turbo"
)


def assert_same(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    assert diff.max() == 0, f"{what}: max difference {diff.max()} at {worst}"


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour fields plus fine noise: compressible but not constant."""
    import cv2

    coarse = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3)).astype(np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-20, 21, (h, w, 3), dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("subsampling", ["444", "422", "420", "440", "411"])
@pytest.mark.parametrize("shape", [(256, 256), (240, 240), (37, 91)])
def test_decode_matches_imagecodecs(subsampling: str, shape: tuple[int, int]) -> None:
    from hsafast._native import core

    rng = np.random.default_rng(hash((subsampling, shape)) % 2**32)
    img = random_image(rng, *shape)
    data = imagecodecs.jpeg8_encode(img, level=85, subsampling=subsampling)
    assert_same(core.jpeg_decode(data), imagecodecs.jpeg8_decode(data), f"YCbCr {subsampling}")
    rgb = imagecodecs.jpeg8_encode(img, level=85, colorspace="RGB", outcolorspace="RGB")
    assert_same(
        core.jpeg_decode(rgb, None, True),
        imagecodecs.jpeg8_decode(rgb, colorspace="RGB"),
        "RGB samples",
    )


def test_decode_errors() -> None:
    from hsafast._native import core

    img = random_image(np.random.default_rng(5), 64, 64)
    data = imagecodecs.jpeg8_encode(img, level=90)
    with pytest.raises(core.TileDecodeError):
        core.jpeg_decode(data[: len(data) // 2])
    with pytest.raises(core.TileDecodeError):
        core.jpeg_decode(b"")
    gray = imagecodecs.jpeg8_encode(np.ascontiguousarray(img[..., 0]), level=90)
    with pytest.raises(core.TileDecodeError, match="3-component"):
        core.jpeg_decode(gray)
    with pytest.raises(ValueError, match="reduce"):
        core.jpeg_decode(data, None, False, 3)


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 700 x 1000 random image in 128 x 64 JPEG tiles (edge tiles padded)."""
    rng = np.random.default_rng(9)
    img = random_image(rng, 700, 1000)
    path = tmp_path_factory.mktemp("native") / "random.tif"
    tifffile.imwrite(
        path, img, tile=(64, 128), photometric="rgb", compression="jpeg",
        compressionargs={"level": 88},
    )  # fmt: skip
    return path, img


def reference_regions(page: object, fd: int, xy: np.ndarray, w: int, h: int, reduce: int):
    """Regions assembled in NumPy from tiles decoded one by one with jpeg_decode."""
    from hsafast._native import core

    th, tw = page.tilelength // reduce, page.tilewidth // reduce  # type: ignore[attr-defined]
    across = -(-page.imagewidth // page.tilewidth)  # type: ignore[attr-defined]
    down = -(-page.imagelength // page.tilelength)  # type: ignore[attr-defined]
    big = np.full((down * th, across * tw, 3), 255, dtype=np.uint8)
    for t, (off, cnt) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):  # type: ignore[attr-defined]
        tile = core.jpeg_decode(os.pread(fd, cnt, off), None, False, reduce)
        r, c = divmod(t, across)
        big[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
    W = -(-page.imagewidth // reduce)  # type: ignore[attr-defined]
    H = -(-page.imagelength // reduce)  # type: ignore[attr-defined]
    big[H:] = 255
    big[:, W:] = 255
    out = np.full((len(xy), h, w, 3), 255, dtype=np.uint8)
    for i, (x, y) in enumerate(xy):
        X, Y = x // reduce, y // reduce
        x0, y0 = max(X, 0), max(Y, 0)
        x1, y1 = min(X + w, big.shape[1]), min(Y + h, big.shape[0])
        if x1 > x0 and y1 > y0:
            out[i, y0 - Y : y1 - Y, x0 - X : x1 - X] = big[y0:y1, x0:x1]
    return out


@pytest.mark.parametrize("reduce", [1, 2, 4, 8])
@pytest.mark.parametrize("threads", [1, 3])
def test_read_regions_matches_reference(
    tiled: tuple[Path, np.ndarray], reduce: int, threads: int
) -> None:
    from hsafast._native import core

    path, _ = tiled
    page = tifffile.TiffFile(path).pages[0]
    rng = np.random.default_rng(reduce * 10 + threads)
    n, w, h = 40, 150 // reduce + 3, 90 // reduce + 5
    xy = np.stack([rng.integers(-200, 1100, n), rng.integers(-150, 800, n)], 1).astype(np.int64)
    xy[0] = (0, 0)
    xy[1] = (128 * 3, 64 * 2)  # aligned to the file's tiles
    fd = os.open(path, os.O_RDONLY)
    try:
        out = np.zeros((n, h, w, 3), dtype=np.uint8)
        across, down = -(-1000 // 128), -(-700 // 64)
        core.jpeg_read_regions(
            fd, np.asarray(page.dataoffsets, np.uint64), np.asarray(page.databytecounts, np.uint64),
            across, down, 128, 64, 1000, 700, None, False, xy, out, reduce, threads,
        )  # fmt: skip
        ref = reference_regions(page, fd, xy, w, h, reduce)
    finally:
        os.close(fd)
    for i in range(n):
        assert_same(out[i], ref[i], f"region {i} at {tuple(xy[i])}, reduce {reduce}")


def test_read_regions_rejects_bad_arguments(tiled: tuple[Path, np.ndarray]) -> None:
    from hsafast._native import core

    path, _ = tiled
    page = tifffile.TiffFile(path).pages[0]
    off = np.asarray(page.dataoffsets, np.uint64)
    cnt = np.asarray(page.databytecounts, np.uint64)
    xy = np.zeros((1, 2), np.int64)
    out = np.zeros((1, 8, 8, 3), np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        args = (fd, off, cnt, 8, 11, 128, 64, 1000, 700, None, False)
        with pytest.raises(TypeError, match="offsets"):
            core.jpeg_read_regions(fd, off.astype(np.int64), *args[2:], xy, out)
        with pytest.raises(TypeError, match="out"):
            core.jpeg_read_regions(*args, xy, out.astype(np.int16))
        with pytest.raises(ValueError, match="N x H x W x 3"):
            core.jpeg_read_regions(*args, xy, np.zeros((2, 8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match="reduce"):
            core.jpeg_read_regions(*args, xy, out, 3)
        with pytest.raises(ValueError, match="tiles_across"):
            core.jpeg_read_regions(fd, off, cnt, 7, 11, 128, 64, 1000, 700, None, False, xy, out)
    finally:
        os.close(fd)
