"""tifffile backend: Aperio SVS and pyramidal TIFF, read straight from the tile bytes.

tifffile parses the directory (levels, tile offsets, JPEGTables, metadata);
pixels come from ``TiledLevel``, which decodes each needed tile once on several
threads (libjpeg-turbo natively for JPEG, imagecodecs for JPEG 2000 and the
rest). Geometry and pixels follow OpenSlide's conventions (level downsamples are
the mean of the width and height ratios; areas outside a level are white), so
the same region reads the same here as through the OpenSlide backend.
"""

from __future__ import annotations

import logging
import os
import struct
import weakref
from typing import Any

import numpy as np

from hsafast.errors import SlideError
from hsafast.slides.base import Slide, shrink
from hsafast.slides.tiled_level import TiledLevel, to_rgb

log = logging.getLogger(__name__)

#: ResolutionUnit values of the TIFF standard.
_RESUNIT_INCH = 2
_RESUNIT_CM = 3
#: Screen resolutions that image tools write by default; they say nothing about the scan.
_DEFAULT_DPI = (72.0, 96.0)
#: Non-square pixel tolerance, as in the OpenSlide backend.
_SQUARE_TOLERANCE = 0.05


def parse_aperio_description(description: str) -> dict[str, str]:
    """The ``key = value`` fields of an Aperio ImageDescription (``AppMag``, ``MPP``...)."""
    fields: dict[str, str] = {}
    for part in description.split("|")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _positive_float(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None


class TiffSlide(Slide):
    """A pyramidal TIFF or SVS opened with tifffile, decoded tile by tile."""

    backend_name = "tifffile"

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        super().__init__(path, mpp)
        import tifffile

        try:
            self._tif = tifffile.TiffFile(str(self.path))
        except (tifffile.TiffFileError, ValueError, OSError, EOFError, struct.error) as exc:
            raise SlideError(f"not a readable TIFF: {exc}", self.path) from exc
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            self._tif.close()
            raise SlideError(f"cannot open: {exc.strerror}", self.path) from exc
        # the descriptor is closed by close(), or when the slide is garbage-collected
        self._close_fd = weakref.finalize(self, os.close, self._fd)
        try:
            self._setup()
        except SlideError:
            self.close()
            raise
        except Exception as exc:  # tifffile raises many types on malformed files
            self.close()
            raise SlideError(f"malformed TIFF structure: {exc}", self.path) from exc

    def _setup(self) -> None:
        tif = self._tif
        if not tif.pages or len(tif.series) == 0:
            first = self._first_directory_offset()
            if first >= os.fstat(self._fd).st_size:
                raise SlideError(
                    f"truncated file: the first image directory (byte {first}) lies past "
                    "the end of the file",
                    self.path,
                )
            raise SlideError("the TIFF holds no readable image", self.path)
        self._check_complete()
        self._associated: dict[str, Any] = {}
        pages: list[Any]
        if tif.is_svs:
            pages = [lv.keyframe for lv in tif.series[0].levels]
            for series in tif.series[1:]:
                self._associated[series.name.lower()] = series
        else:
            pages = self._pyramid_pages()
        pages = [p for p in pages if p.imagewidth > 0 and p.imagelength > 0]
        if not pages:
            raise SlideError("the TIFF holds no image", self.path)
        self._levels = [TiledLevel.from_page(self.path, self._fd, p) for p in pages]
        self._pages = pages
        w0, h0 = self._levels[0].width, self._levels[0].height
        self._dims = tuple((lv.width, lv.height) for lv in self._levels)
        self._downsamples = tuple(((w0 / lv.width) + (h0 / lv.height)) / 2.0 for lv in self._levels)
        self._aperio = parse_aperio_description(pages[0].description) if tif.is_svs else {}

    def _first_directory_offset(self) -> int:
        tiff = self._tif.tiff
        start = 8 if tiff.offsetsize == 8 else 4  # BigTIFF header is 16 bytes, classic 8
        raw = os.pread(self._fd, tiff.offsetsize, start)
        return int(struct.unpack(tiff.offsetformat, raw)[0]) if len(raw) == tiff.offsetsize else 0

    def _check_complete(self) -> None:
        """Reject truncated files: every directory and every tile must lie inside the file."""
        tif = self._tif
        size = os.fstat(self._fd).st_size
        pages: list[Any] = list(tif.pages)  # parses the whole directory chain
        # the last directory's next-directory pointer must be 0 (end of chain)
        pos = tif.pages.next_page_offset
        fmt, nbytes = tif.tiff.offsetformat, tif.tiff.offsetsize
        raw = os.pread(self._fd, nbytes, pos) if pos is not None else bytes(nbytes)
        if len(raw) < nbytes or struct.unpack(fmt, raw)[0] != 0:
            raise SlideError(
                "truncated or corrupt: the TIFF directory chain points past the end of the file",
                self.path,
            )
        for page in pages:
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)]
            if ends and max(ends) > size:
                raise SlideError(
                    f"truncated file: image data of directory {page.index} ends at byte "
                    f"{max(ends)}, after the end of the file ({size} bytes)",
                    self.path,
                )

    def _pyramid_pages(self) -> list[Any]:
        """Levels of a generic pyramid: the SubIFD pyramid, or every tiled main-chain page."""
        tif = self._tif
        series = tif.series[0]
        if len(series.levels) > 1:
            return [lv.keyframe for lv in series.levels]
        first: Any = tif.pages[0]
        all_pages: list[Any] = list(tif.pages)
        tiled = [
            p
            for p in all_pages
            if getattr(p, "is_tiled", False) and p.samplesperpixel == first.samplesperpixel
        ]
        if getattr(first, "is_tiled", False) and len(tiled) > 1:
            return sorted(tiled, key=lambda p: -int(p.imagewidth))
        return [first]

    # ---- geometry and metadata ------------------------------------------------------
    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def tile_size(self) -> tuple[int, int]:
        """(width, height) of the file's tiles at level 0."""
        return self._levels[0].tile_width, self._levels[0].tile_height

    @property
    def compression(self) -> str:
        """Compression of level 0 as tifffile names it (``JPEG``, ``APERIO_JP2000_RGB``...)."""
        return str(getattr(self._pages[0].compression, "name", self._pages[0].compression))

    @property
    def native_decoding(self) -> bool:
        """Whether level 0 is decoded by the native libjpeg-turbo path."""
        return self._levels[0].native

    def _recorded_mpp(self) -> float | None:
        if self._aperio:
            return _positive_float(self._aperio.get("MPP"))
        page = self._pages[0]
        unit = int(getattr(page, "resolutionunit", 1) or 1)
        if unit not in (_RESUNIT_INCH, _RESUNIT_CM):
            return None
        try:
            xres, yres = page.get_resolution()
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        if not (xres > 0 and yres > 0):
            return None
        if unit == _RESUNIT_INCH and xres in _DEFAULT_DPI and yres in _DEFAULT_DPI:
            log.debug("%s: resolution %s dpi looks like a tool default; ignored", self.path, xres)
            return None
        per_unit = 25400.0 if unit == _RESUNIT_INCH else 10000.0
        mpp_x, mpp_y = per_unit / xres, per_unit / yres
        if abs(mpp_x - mpp_y) / mpp_x > _SQUARE_TOLERANCE:
            raise SlideError(
                f"non-square pixels ({mpp_x:.4g} x {mpp_y:.4g} um) are not supported", self.path
            )
        return mpp_x

    def _recorded_objective(self) -> float | None:
        return _positive_float(self._aperio.get("AppMag")) if self._aperio else None

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._associated)

    def associated_image(self, name: str) -> np.ndarray:
        series = self._associated.get(name)
        if series is None:
            raise SlideError(f"no associated image named {name!r}", self.path)
        try:
            pixels = series.asarray()
        except Exception as exc:
            raise SlideError(f"cannot decode the {name} image: {exc}", self.path) from exc
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        return np.ascontiguousarray(to_rgb(pixels))

    # ---- pixels -------------------------------------------------------------------
    def decodes_reduced(self, level: int, reduce: int) -> bool:
        return self._levels[self._check_level(level)].can_reduce(reduce)

    def _check_open(self) -> None:
        # a closed descriptor's number may already belong to another file
        if not self._close_fd.alive:
            raise SlideError("the slide is closed", self.path)

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        self._check_open()
        xy = self._level_coords(np.asarray([location], dtype=np.int64), level)
        return self._levels[level].read(xy, size)[0]

    def _read_regions(
        self,
        locations: np.ndarray,
        level: int,
        size: tuple[int, int],
        workers: int,
        reduce: int,
        out: np.ndarray,
    ) -> None:
        self._check_open()
        tiled = self._levels[level]
        xy = self._level_coords(locations, level)
        if reduce == 1 or tiled.can_reduce(reduce):
            tiled.read(xy, size, threads=workers, reduce=reduce, out=out)
            return
        w, h = size
        full = tiled.read(xy, (w * reduce, h * reduce), threads=workers)
        for i, region in enumerate(full):
            out[i] = shrink(region, (w, h))

    def close(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
        close_fd = getattr(self, "_close_fd", None)
        if close_fd is not None:
            close_fd()
