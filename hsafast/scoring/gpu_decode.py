"""Reading a grid's tiles on the GPU: the file's JPEG tile bytes, decoded by nvImageCodec.

For JPEG-compressed tiled TIFF and SVS levels read at their own resolution (the grid's
read size equals its tile size: a 20x scan scored at 0.5 um/px), each batch's file tiles
are read with `os.pread` straight from the file, the level's JPEG tables are spliced into
each tile's stream (tables without their EOI, then the tile without its SOI), and
nvImageCodec decodes the batch on the GPU; regions are cut from the decoded tiles with
device copies, and areas outside the level are white, as on the CPU path. The GPU test
checks the pixels against the CPU reader (libjpeg-turbo), to within 1 grey level (the IDCT
and the chroma upsampling are implemented differently). Only YCbCr JPEG tiles are decoded
here: levels whose JPEG streams hold RGB samples (Aperio SVS) came out with wrong colours
from nvImageCodec 0.9 on an H200, and stay on the CPU reader. Grids read at reduced scale
(DCT-domain on the CPU) and other compressions stay on the CPU reader, since nvImageCodec
has no reduced-scale decode and a full decode then a resize would not give the CPU path's
pixels.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from hsafast.errors import SlideError

log = logging.getLogger("hsafast.scoring")

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"


def available() -> bool:
    """Whether nvImageCodec can be imported."""
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_level(slide: Any, grid: Any) -> tuple[Any, str]:
    """(the TiledLevel to decode on the GPU, "") or (None, why the CPU reader is used)."""
    levels = getattr(slide, "_levels", None)  # the tifffile backend's per-level tile tables
    if levels is None:
        return None, f"the {slide.backend_name} backend does not expose raw tiles"
    level = levels[grid.level]
    page = level.page
    if not (
        page.is_tiled
        and page.compression == 7  # JPEG
        and page.samplesperpixel == 3
        and page.bitspersample == 8
        and page.planarconfig == 1
    ):
        return None, "the level is not 8-bit 3-channel JPEG tiles"
    if page.photometric != 6:
        # TIFF photometric RGB (Aperio SVS): JPEG streams of RGB samples. nvImageCodec 0.9
        # decodes them with a colour transform (measured on an H200: up to 254 grey levels
        # off, 43 on average, against libjpeg-turbo told there is none), so they stay on the
        # CPU reader.
        return None, "the level's JPEG tiles hold RGB samples (decoded right on the CPU only)"
    if grid.read_size != grid.size:
        return None, "the grid reads at reduced scale (decoded in the DCT domain on the CPU)"
    if not available():
        return None, 'nvImageCodec is not installed (pip install "hsafast[gpu]")'
    return level, ""


def splice_tables(tile: bytes, tables: bytes | None) -> bytes:
    """A self-contained JPEG stream: the level's tables inserted after the tile's SOI."""
    if not tables:
        return tile
    head = tables[:-2] if tables.endswith(_EOI) else tables
    return head + tile[2:] if tile.startswith(_SOI) else head + tile


class GpuTileReader:
    """Decodes regions of one TiledLevel on one CUDA device, a batch at a time."""

    def __init__(self, device: str) -> None:
        import torch
        from nvidia import nvimgcodec

        self.device = torch.device(device)
        # fancy upsampling is libjpeg-turbo's default (the CPU path); nvImageCodec's is off
        self._decoder = nvimgcodec.Decoder(
            device_id=self.device.index or 0, options=":fancy_upsampling=1"
        )
        self._nvimgcodec = nvimgcodec

    def read(self, level: Any, xy: np.ndarray, size: int, stream: Any) -> Any:
        """uint8 (N, size, size, 3) on the device for level-pixel corners xy (N x 2)."""
        import torch

        tw, th = level.tile_width, level.tile_height
        spans = []
        needed: dict[int, int] = {}
        for x, y in xy.tolist():
            x0, x1 = max(x, 0), min(x + size, level.width)
            y0, y1 = max(y, 0), min(y + size, level.height)
            parts = []
            if x1 > x0 and y1 > y0:
                for ty in range(y0 // th, (y1 - 1) // th + 1):
                    for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                        t = ty * level.tiles_across + tx
                        if level.bytecounts[t] == 0:
                            continue  # a missing tile reads as white
                        sx0, sx1 = max(x0, tx * tw), min(x1, (tx + 1) * tw)
                        sy0, sy1 = max(y0, ty * th), min(y1, (ty + 1) * th)
                        needed.setdefault(t, len(needed))
                        parts.append(
                            (
                                t,
                                sx0 - tx * tw,
                                sy0 - ty * th,
                                sx0 - x,
                                sy0 - y,
                                sx1 - sx0,
                                sy1 - sy0,
                            )
                        )
            spans.append(parts)
        tiles = self._decode(level, list(needed), stream)
        with torch.cuda.stream(stream):
            out = torch.full((len(xy), size, size, 3), 255, dtype=torch.uint8, device=self.device)
            for i, parts in enumerate(spans):
                for t, sx, sy, dx, dy, w, h in parts:
                    out[i, dy : dy + h, dx : dx + w] = tiles[needed[t]][sy : sy + h, sx : sx + w]
        return out

    def _decode(self, level: Any, indices: list[int], stream: Any) -> list[Any]:
        import torch

        nvimgcodec = self._nvimgcodec
        tables = level.jpegtables
        streams = []
        for t in indices:
            offset, count = int(level.offsets[t]), int(level.bytecounts[t])
            data = os.pread(level.fd, count, offset)
            if len(data) != count:
                raise SlideError(
                    level._tile_reason(
                        t % level.tiles_across,
                        t // level.tiles_across,
                        "file ends inside the tile's data",
                    ),
                    level.path,
                )
            streams.append(splice_tables(data, tables))
        # YCbCr JPEG tiles (gpu_level admits no others), converted to RGB; the enum is
        # SRGB from nvImageCodec 0.9 on, RGB before
        colors = nvimgcodec.ColorSpec
        spec = getattr(colors, "SRGB", None) or colors.RGB
        params = nvimgcodec.DecodeParams(
            apply_exif_orientation=False, color_spec=spec, allow_any_depth=False
        )
        images = self._decoder.decode(streams, params=params, cuda_stream=stream.cuda_stream)
        out = []
        for t, image in zip(indices, images, strict=True):
            if image is None:
                raise SlideError(
                    level._tile_reason(
                        t % level.tiles_across,
                        t // level.tiles_across,
                        "nvImageCodec cannot decode it",
                    ),
                    level.path,
                )
            tile = torch.as_tensor(image, device=self.device)
            if tile.shape[-1] != 3 or tile.shape[0] < level.tile_height:
                raise SlideError(
                    f"nvImageCodec decoded a tile as {tuple(tile.shape)}, expected "
                    f"({level.tile_height}, {level.tile_width}, 3)",
                    level.path,
                )
            out.append(tile)
        return out
