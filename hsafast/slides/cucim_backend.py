"""cuCIM backend (CPU reader): TIFF and SVS through cuCIM's batched ``read_region``.

Only available when the optional ``cucim`` package imports (extra ``gpu``); it
is imported when a slide is opened with ``backend="cucim"``, never at package
import. cuCIM reads regions of many locations in one call on its own worker
threads, which is what ``read_regions`` uses.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hsafast.errors import SlideError
from hsafast.slides.base import Slide, shrink
from hsafast.slides.tiff_backend import parse_aperio_description


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _whiten_outside(region: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
    """Set the pixels of a region at level corner (x, y) that lie outside the level to white."""
    h, w = region.shape[:2]
    x0, y0 = min(max(-x, 0), w), min(max(-y, 0), h)
    x1, y1 = max(min(width - x, w), 0), max(min(height - y, h), 0)
    if (x0, y0, x1, y1) != (0, 0, w, h):
        inside = region[y0:y1, x0:x1].copy()
        region[:] = 255
        region[y0:y1, x0:x1] = inside
    return region


class CuCIMSlide(Slide):
    """A slide read by cuCIM's ``CuImage`` on the CPU."""

    backend_name = "cucim"

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        super().__init__(path, mpp)
        try:
            from cucim import CuImage
        except ImportError as exc:
            raise SlideError(f"the cucim package is not importable ({exc})", self.path) from exc
        try:
            self._img = CuImage(str(self.path))
        except Exception as exc:  # cuCIM raises RuntimeError/ValueError on bad files
            raise SlideError(f"cuCIM cannot open it: {exc}", self.path) from exc
        res = self._img.resolutions
        self._dims = tuple((int(w), int(h)) for w, h in res["level_dimensions"])
        w0, h0 = self._dims[0]
        # OpenSlide's convention (mean of the two ratios), for identical level coordinates
        self._downsamples = tuple(((w0 / w) + (h0 / h)) / 2.0 for w, h in self._dims)
        metadata = self._img.metadata
        self._aperio = metadata.get("aperio", {}) if isinstance(metadata, dict) else {}
        if not self._aperio:
            description = str(metadata.get("tiff", {}).get("image_description", ""))
            if description.startswith("Aperio"):
                self._aperio = parse_aperio_description(description)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    def _recorded_mpp(self) -> float | None:
        if self._aperio:
            return _positive_float(self._aperio.get("MPP"))
        # generic TIFF: cuCIM converts the resolution tags to a spacing (y, x, colour)
        units = list(self._img.spacing_units())
        spacing = list(self._img.spacing())
        if len(units) < 2 or units[0] != "micrometer" or units[1] != "micrometer":
            return None
        mpp_y, mpp_x = _positive_float(spacing[0]), _positive_float(spacing[1])
        if mpp_x is None or mpp_y is None:
            return None
        if abs(mpp_x - mpp_y) / mpp_x > 0.05:
            raise SlideError(
                f"non-square pixels ({mpp_x:.4g} x {mpp_y:.4g} um) are not supported", self.path
            )
        return mpp_x

    def _recorded_objective(self) -> float | None:
        return _positive_float(self._aperio.get("AppMag"))

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._img.associated_images))

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self._img.associated_images:
            raise SlideError(f"no associated image named {name!r}", self.path)
        return np.ascontiguousarray(np.asarray(self._img.associated_image(name))[..., :3])

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        out = np.empty((1, size[1], size[0], 3), dtype=np.uint8)
        self._read_regions(np.asarray([location], dtype=np.int64), level, size, 1, 1, out)
        return out[0]

    def _read_regions(
        self,
        locations: np.ndarray,
        level: int,
        size: tuple[int, int],
        workers: int,
        reduce: int,
        out: np.ndarray,
    ) -> None:
        w, h = size
        rw, rh = w * reduce, h * reduce
        n = len(locations)
        if n == 0:
            return
        # cuCIM maps level-0 corners to the level itself; pass corners that land on
        # the same level pixels as the other backends.
        ds = self._downsamples[level]
        level_xy = self._level_coords(locations, level)
        level0 = np.rint(level_xy * ds).astype(np.int64)
        lw, lh = self._dims[level]
        try:
            if n == 1:
                x, y = (int(v) for v in level0[0])
                batches: Any = [self._img.read_region((x, y), (rw, rh), level)]
            else:
                batches = self._img.read_region(
                    [tuple(int(v) for v in loc) for loc in level0],
                    (rw, rh),
                    level,
                    num_workers=max(1, workers),
                    batch_size=n,
                )
            start = 0
            for batch in batches:
                pixels = np.asarray(batch)
                if pixels.ndim == 3:
                    pixels = pixels[None]
                for region in pixels[..., :3]:
                    # cuCIM fills outside generic TIFFs with black; the convention is white
                    x, y = (int(v) for v in level_xy[start])
                    region = _whiten_outside(np.array(region), x, y, lw, lh)
                    out[start] = region if reduce == 1 else shrink(region, (w, h))
                    start += 1
        except Exception as exc:
            raise SlideError(f"cuCIM cannot read level {level}: {exc}", self.path) from exc
        if start != n:
            raise SlideError(f"cuCIM returned {start} of {n} regions", self.path)

    def close(self) -> None:
        img = getattr(self, "_img", None)
        if img is not None and hasattr(img, "close"):
            img.close()
