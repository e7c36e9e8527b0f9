"""Plain images (PNG, JPEG, TIFF without pyramid) as single-level slides.

Used for tiles and low-scale section pairs; such files carry no pixel size, so
the caller gives one (``mpp=``) or anything that needs physical units fails.
"""

from __future__ import annotations

import os

import numpy as np

from hsafast.errors import SlideError
from hsafast.slides.base import Slide

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})


class ImageSlide(Slide):
    backend_name = "image"

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        super().__init__(path, mpp)
        from PIL import Image, UnidentifiedImageError

        Image.MAX_IMAGE_PIXELS = None  # whole-section images are large on purpose
        try:
            with Image.open(self.path) as im:
                im.load()
                self._pixels = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise SlideError(f"not a readable image: {exc}", self.path) from exc

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        h, w = self._pixels.shape[:2]
        return ((w, h),)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return (1.0,)

    def _recorded_mpp(self) -> float | None:
        return None

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        x, y = location
        w, h = size
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        img_h, img_w = self._pixels.shape[:2]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, img_w), min(y + h, img_h)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._pixels[y0:y1, x0:x1]
        return out

    @property
    def pixels(self) -> np.ndarray:
        """The whole image (read-only view)."""
        view = self._pixels.view()
        view.flags.writeable = False
        return view
