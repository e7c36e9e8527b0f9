"""Writing a pyramidal, tiled, JPEG-compressed TIFF from a block renderer, strip by strip.

Layout of the file (what OpenSlide's Aperio driver, tifffile and cuCIM read), as
in Aperio SVS: level 0, then a small stripped thumbnail page, then one tiled page per
further pyramid level (downsamples 4, 16, ...); 256x256 JPEG tiles
(YCbCr 4:2:0, as scanners write them), an Aperio-style ``ImageDescription`` on
the first page carrying ``AppMag`` and ``MPP`` (OpenSlide reports them as
``openslide.objective-power`` and ``openslide.mpp-x/y``), and the same pixel size
as TIFF resolution in pixels per centimetre for readers that use the tags.

Level 0 is rendered in strips of whole tile rows and encoded as it comes; each
strip is shrunk 4x into the next level, which waits in a disk-backed array when
large, so memory stays bounded by one strip whatever the slide size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile

from hsafast._fileio import atomic_path

TILE = 256
#: Each pyramid level is this many times smaller than the one before.
LEVEL_FACTOR = 4
#: Levels are added while the coarsest is larger than this (pixels, longer side).
MIN_LEVEL_SIZE = 512
#: Longer side of the thumbnail page, roughly (pixels).
THUMBNAIL_SIZE = 1024
#: Above this many bytes an intermediate level is kept on disk instead of in memory.
_IN_MEMORY_LIMIT = 64 << 20

BlockRenderer = Callable[[int, int, int, int], np.ndarray]


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    sizes = [(width, height)]
    while max(sizes[-1]) > MIN_LEVEL_SIZE * LEVEL_FACTOR // 2 and min(sizes[-1]) >= LEVEL_FACTOR:
        w, h = sizes[-1]
        sizes.append((max(1, w // LEVEL_FACTOR), max(1, h // LEVEL_FACTOR)))
    return sizes


def _tiles(strip: np.ndarray, width: int) -> Iterator[np.ndarray]:
    """Cut a strip (rows multiple of TILE, any width) into padded TILE x TILE tiles."""
    h = strip.shape[0]
    for y in range(0, h, TILE):
        for x in range(0, width, TILE):
            tile = strip[y : y + TILE, x : x + TILE]
            if tile.shape[:2] != (TILE, TILE):
                padded = np.full((TILE, TILE, 3), 255, np.uint8)
                padded[: tile.shape[0], : tile.shape[1]] = tile
                tile = padded
            yield np.ascontiguousarray(tile)


def _scratch(shape: tuple[int, int, int], folder: Path) -> np.ndarray:
    if int(np.prod(shape)) <= _IN_MEMORY_LIMIT:
        return np.full(shape, 255, np.uint8)
    handle = tempfile.TemporaryFile(dir=folder)
    return np.memmap(handle, dtype=np.uint8, mode="w+", shape=shape)


def aperio_description(
    width: int, height: int, mpp: float, magnification: float, quality: int, extra: dict[str, str]
) -> str:
    fields = {"AppMag": f"{magnification:g}", "MPP": f"{mpp:.6g}", **extra}
    head = (
        f"Aperio Image Library (hsafast.synth simulated slide)\r\n"
        f"{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) JPEG/RGB Q={quality}"
    )
    return head + "".join(f"|{k} = {v}" for k, v in fields.items())


def write_pyramid(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    render: BlockRenderer,
    mpp: float,
    quality: int = 85,
    block: int = 1000,
    strip_rows: int = 512,
    extra: dict[str, str] | None = None,
    on_strip: Callable[[int], None] | None = None,
) -> int:
    """Render and write a slide; returns the file size in bytes.

    ``render(x, y, w, h)`` returns the (h, w, 3) uint8 RGB pixels of level 0 at
    (x, y); it is called with ``w <= block`` and ``h <= strip_rows``.
    """
    if strip_rows % (TILE * 1) or strip_rows % LEVEL_FACTOR:
        raise ValueError("strip_rows must be a multiple of the tile size")
    path = Path(path)
    sizes = level_sizes(width, height)
    magnification = round(10.0 / mpp, 2)
    description = aperio_description(width, height, mpp, magnification, quality, extra or {})
    resolution = (1e4 / mpp, 1e4 / mpp)
    common: dict[str, Any] = {
        "dtype": np.uint8,
        "tile": (TILE, TILE),
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": quality},
        "metadata": None,
    }
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=width * height > 2**31) as tw:
        next_w, next_h = sizes[1] if len(sizes) > 1 else (0, 0)
        scratch = _scratch((next_h, next_w, 3), path.parent) if next_w else None
        # the thumbnail page (second in the file, as in SVS) is shrunk strip by strip
        t = 1
        while max(width, height) / (LEVEL_FACTOR * t) > THUMBNAIL_SIZE and t < strip_rows // 8:
            t *= 2
        thumb_w = max(1, width // (LEVEL_FACTOR * t))
        thumb_h = max(1, height // (LEVEL_FACTOR * t))
        thumbnail = np.full((thumb_h, thumb_w, 3), 255, np.uint8)

        def level0() -> Iterator[np.ndarray]:
            for y0 in range(0, height, strip_rows):
                rows = min(strip_rows, height - y0)
                strip = np.full((strip_rows, width, 3), 255, np.uint8)
                for x0 in range(0, width, block):
                    cols = min(block, width - x0)
                    strip[:rows, x0 : x0 + cols] = render(x0, y0, cols, rows)
                _shrink_into(
                    thumbnail, strip[:rows], y0 // (LEVEL_FACTOR * t), thumb_w, LEVEL_FACTOR * t
                )
                if scratch is not None:
                    _shrink_into(scratch, strip[:rows], y0 // LEVEL_FACTOR, next_w)
                yield from _tiles(strip, width)
                if on_strip:
                    on_strip(rows)

        tw.write(
            level0(),
            shape=(height, width, 3),
            description=description,
            resolution=resolution,
            resolutionunit="CENTIMETER",
            **common,
        )
        tw.write(
            thumbnail,
            description=f"Aperio Image Library (hsafast.synth)\r\n{width}x{height} -> "
            f"{thumb_w}x{thumb_h} - thumbnail",
            photometric="rgb",
            compression="jpeg",
            compressionargs={"level": 90},
            rowsperstrip=16,
            metadata=None,
        )
        current = scratch
        for level in range(1, len(sizes)):
            w, h = sizes[level]
            assert current is not None
            nxt = None
            if level + 1 < len(sizes):
                nw, nh = sizes[level + 1]
                nxt = _scratch((nh, nw, 3), path.parent)
                for y0 in range(0, h, strip_rows):
                    _shrink_into(nxt, current[y0 : y0 + strip_rows], y0 // LEVEL_FACTOR, nw)
            level_data = current

            def level_tiles(
                data: np.ndarray = level_data, w: int = w, h: int = h
            ) -> Iterator[np.ndarray]:
                for y0 in range(0, h, TILE):
                    strip = np.full((TILE, w, 3), 255, np.uint8)
                    part = data[y0 : y0 + TILE]
                    strip[: part.shape[0]] = part
                    yield from _tiles(strip, w)

            tw.write(
                level_tiles(),
                shape=(h, w, 3),
                description=f"Aperio Image Library (hsafast.synth)\r\n{width}x{height} -> {w}x{h}",
                **common,
            )
            current = nxt
    return path.stat().st_size


def write_array_pyramid(
    path: str | os.PathLike[str], rgb: np.ndarray, mpp: float, quality: int = 85
) -> int:
    """Write an in-memory (H, W, 3) uint8 RGB image as a pyramidal slide file."""
    height, width = rgb.shape[:2]
    return write_pyramid(
        path, width, height, lambda x, y, w, h: rgb[y : y + h, x : x + w], mpp, quality
    )


def _shrink_into(
    target: np.ndarray, strip: np.ndarray, row: int, width: int, f: int = LEVEL_FACTOR
) -> None:
    """Average ``f`` x ``f`` blocks of ``strip`` into ``target`` at ``row``."""
    h = strip.shape[0] // f
    if h == 0 or row >= target.shape[0]:
        return
    src = strip[: h * f, : width * f]
    small = cv2.resize(src, (width, h), interpolation=cv2.INTER_AREA)
    h = min(h, target.shape[0] - row)
    target[row : row + h] = small[:h]
