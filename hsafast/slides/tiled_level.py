"""Batched region reads from one tiled TIFF level, straight from the tile bytes.

A batch of regions is planned as the set of file tiles it overlaps; each tile is
read (``os.pread``) and decoded once, on several threads, and its pixels are
copied into every region that needs them. JPEG tiles (RGB or YCbCr, with
JPEGTables) go to the native libjpeg-turbo decoder when the extension was built
with it, which also decodes at 1/2, 1/4 or 1/8 scale in the DCT domain; every
other compression, and JPEG without the native decoder, goes through tifffile's
decoder (imagecodecs, which releases the GIL) in a thread pool.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsafast.errors import SlideError

JPEG = 7
PHOTOMETRIC_RGB = 2
PHOTOMETRIC_YCBCR = 6
#: Scale factors libjpeg can decode to in the DCT domain.
DCT_REDUCTIONS = (2, 4, 8)


def native_jpeg_version() -> str:
    """The libjpeg-turbo version of the native decoder, or '' when it is not built."""
    try:
        from hsafast._native import core
    except ImportError:
        return ""
    return str(core.jpeg_decoder_version())


_NATIVE = native_jpeg_version() != ""
#: Setting HSAFAST_NO_NATIVE_JPEG=1 forces the imagecodecs path (tests use it).
_FORCE_PYTHON = os.environ.get("HSAFAST_NO_NATIVE_JPEG", "") not in ("", "0")


@dataclass
class TiledLevel:
    """One tiled level of a TIFF file: where its tiles are and how to decode them."""

    path: Path
    fd: int
    page: Any  # tifffile.TiffPage
    width: int
    height: int
    tile_width: int
    tile_height: int
    tiles_across: int
    tiles_down: int
    offsets: np.ndarray  # uint64, row-major
    bytecounts: np.ndarray  # uint64
    jpegtables: bytes | None
    native: bool  # decoded by the native libjpeg-turbo path

    @classmethod
    def from_page(cls, path: Path, fd: int, page: Any) -> TiledLevel:
        height, width = int(page.imagelength), int(page.imagewidth)
        # tiles, or strips (full-width "tiles" of rowsperstrip rows)
        tile_h, tile_w = (int(v) for v in page.chunks[:2])
        tiles_across = -(-width // tile_w)
        tiles_down = -(-height // tile_h)
        offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
        bytecounts = np.asarray(page.databytecounts, dtype=np.uint64)
        if offsets.size != tiles_across * tiles_down or bytecounts.size != offsets.size:
            raise SlideError(
                f"level {width}x{height} lists {offsets.size} tiles, expected "
                f"{tiles_across * tiles_down} (planar or corrupt layout)",
                path,
            )
        native = (
            _NATIVE
            and not _FORCE_PYTHON
            and page.is_tiled
            and page.compression == JPEG
            and page.photometric in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR)
            and page.samplesperpixel == 3
            and page.bitspersample == 8
            and page.planarconfig == 1
        )
        return cls(
            path=path,
            fd=fd,
            page=page,
            width=width,
            height=height,
            tile_width=tile_w,
            tile_height=tile_h,
            tiles_across=tiles_across,
            tiles_down=tiles_down,
            offsets=offsets,
            bytecounts=bytecounts,
            jpegtables=bytes(page.jpegtables) if page.jpegtables is not None else None,
            native=bool(native),
        )

    def can_reduce(self, reduce: int) -> bool:
        """Whether ``reduce`` is decoded in the DCT domain (no full decode and resize)."""
        return (
            self.native
            and reduce in DCT_REDUCTIONS
            and self.tile_width % reduce == 0
            and self.tile_height % reduce == 0
        )

    def read(
        self,
        xy: np.ndarray,
        size: tuple[int, int],
        threads: int = 1,
        reduce: int = 1,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Regions with level-pixel top-left corners ``xy`` (N x 2) as (N, h, w, 3) uint8.

        With ``reduce`` > 1 (only where ``can_reduce``) each region covers
        ``size * reduce`` level pixels and is decoded at 1/reduce scale. ``out``, if
        given, must be a C-contiguous (N, h, w, 3) uint8 array.
        """
        xy = np.ascontiguousarray(xy, dtype=np.int64).reshape(-1, 2)
        w, h = size
        if out is None:
            out = np.empty((len(xy), h, w, 3), dtype=np.uint8)
        if len(xy) == 0:
            return out
        if reduce != 1 and not self.can_reduce(reduce):
            raise ValueError(f"reduce={reduce} is not available for this level")
        if self.native:
            self._read_native(xy, out, threads, reduce)
        else:
            self._read_python(xy, out, threads)
        return out

    # ---- native libjpeg-turbo path ---------------------------------------------------
    def _read_native(self, xy: np.ndarray, out: np.ndarray, threads: int, reduce: int) -> None:
        from hsafast._native import core

        try:
            core.jpeg_read_regions(
                self.fd,
                self.offsets,
                self.bytecounts,
                self.tiles_across,
                self.tiles_down,
                self.tile_width,
                self.tile_height,
                self.width,
                self.height,
                self.jpegtables,
                self.page.photometric == PHOTOMETRIC_RGB,
                xy,
                out,
                reduce,
                max(1, threads),
            )
        except core.TileDecodeError as exc:
            message, col, row = exc.args
            raise SlideError(self._tile_reason(col, row, message), self.path) from None

    # ---- imagecodecs path ------------------------------------------------------------
    def _read_python(self, xy: np.ndarray, out: np.ndarray, threads: int) -> None:
        w, h = out.shape[2], out.shape[1]
        uses: dict[int, list[tuple[int, int, int, int, int, int, int]]] = {}
        for i, (x, y) in enumerate(xy.tolist()):
            x0, x1 = max(x, 0), min(x + w, self.width)
            y0, y1 = max(y, 0), min(y + h, self.height)
            white = (x0, y0, x1, y1) != (x, y, x + w, y + h)
            if x1 > x0 and y1 > y0:
                for ty in range(y0 // self.tile_height, (y1 - 1) // self.tile_height + 1):
                    for tx in range(x0 // self.tile_width, (x1 - 1) // self.tile_width + 1):
                        t = ty * self.tiles_across + tx
                        if self.bytecounts[t] == 0:
                            white = True
                            continue
                        sx0 = max(x0, tx * self.tile_width)
                        sx1 = min(x1, (tx + 1) * self.tile_width)
                        sy0 = max(y0, ty * self.tile_height)
                        sy1 = min(y1, (ty + 1) * self.tile_height)
                        uses.setdefault(t, []).append(
                            (
                                i,
                                sx0 - tx * self.tile_width,
                                sy0 - ty * self.tile_height,
                                sx0 - x,
                                sy0 - y,
                                sx1 - sx0,
                                sy1 - sy0,
                            )
                        )
            if white:
                out[i] = 255

        def run(t: int) -> None:
            tile = self._decode_python(t)
            for i, sx, sy, dx, dy, uw, uh in uses[t]:
                out[i, dy : dy + uh, dx : dx + uw] = tile[sy : sy + uh, sx : sx + uw]

        tiles = sorted(uses)
        if threads <= 1 or len(tiles) <= 1:
            for t in tiles:
                run(t)
        else:
            with ThreadPoolExecutor(min(threads, len(tiles))) as pool:
                for _ in pool.map(run, tiles):
                    pass

    def _decode_python(self, t: int) -> np.ndarray:
        col, row = t % self.tiles_across, t // self.tiles_across
        offset, count = int(self.offsets[t]), int(self.bytecounts[t])
        try:
            data = os.pread(self.fd, count, offset)
        except OSError as exc:
            raise SlideError(self._tile_reason(col, row, f"cannot read: {exc}"), self.path) from exc
        if len(data) != count:
            raise SlideError(
                self._tile_reason(col, row, "file ends inside the tile's data: truncated file"),
                self.path,
            )
        try:
            decoded = self.page.decode(data, t, jpegtables=self.jpegtables)[0]
        except Exception as exc:  # imagecodecs raises its own error types per codec
            raise SlideError(self._tile_reason(col, row, f"{exc}"), self.path) from exc
        if decoded is None:
            raise SlideError(self._tile_reason(col, row, "tile holds no data"), self.path)
        tile = to_rgb(np.asarray(decoded).reshape(decoded.shape[-3:]))
        if tile.shape[0] < self.tile_height or tile.shape[1] < self.tile_width:
            # short last strip, or an edge tile stored cropped
            padded = np.full((self.tile_height, self.tile_width, 3), 255, dtype=np.uint8)
            padded[: tile.shape[0], : tile.shape[1]] = tile[: self.tile_height, : self.tile_width]
            tile = padded
        return tile

    def _tile_reason(self, col: int, row: int, message: str) -> str:
        return (
            f"corrupt or unreadable tile (column {col}, row {row}) of the "
            f"{self.width}x{self.height} level: {message}"
        )


def to_rgb(tile: np.ndarray) -> np.ndarray:
    """Decoded TIFF samples (h, w, s) as uint8 RGB; alpha is composited onto white."""
    from hsafast.slides.base import composite_on_white

    if tile.dtype != np.uint8:
        if tile.dtype == np.uint16:
            tile = (tile >> 8).astype(np.uint8)
        else:
            raise ValueError(f"unsupported sample type {tile.dtype}")
    samples = tile.shape[-1]
    if samples == 1:
        return np.repeat(tile, 3, axis=-1)
    if samples == 4:
        return composite_on_white(tile)
    return tile[..., :3]
