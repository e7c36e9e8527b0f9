"""The backend-independent view of a whole-slide image.

Every backend returns RGB uint8 pixels in (height, width, 3) arrays, with
transparent areas (outside the scanned region) composited onto white, so that
the same region reads the same from any backend.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from hsafast.errors import InvalidParameterError, MissingPixelSizeError, SlideError

#: Pixel sizes outside this range (micrometres per pixel) are treated as not recorded.
#: Scanners write 0.1-1 um/px at 20x-80x; low-magnification previews reach tens of um/px.
PLAUSIBLE_MPP = (0.01, 1000.0)


class Slide(ABC):
    """A multi-resolution slide image opened by one backend.

    Coordinates are level-0 pixel top-left corners ``(x, y)``; sizes are
    ``(width, height)`` in pixels of the level being read, as in OpenSlide.
    """

    backend_name: str = "abstract"

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        self.path = Path(path)
        self._mpp_override = mpp

    # ---- what each backend provides -------------------------------------------------
    @property
    @abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level, finest first."""

    @property
    @abstractmethod
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of every level relative to level 0."""

    @abstractmethod
    def _recorded_mpp(self) -> float | None:
        """Pixel size at level 0 as recorded in the file, if any."""

    def _recorded_objective(self) -> float | None:
        """Objective magnification as recorded in the file, if any."""
        return None

    @abstractmethod
    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read one region; arguments are already validated."""

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        """Names of the associated images (label, macro, thumbnail) the file holds."""
        return ()

    def associated_image(self, name: str) -> np.ndarray:
        raise SlideError(f"no associated image named {name!r}", self.path)

    def close(self) -> None:  # noqa: B027 - backends without handles need nothing
        """Release file handles."""

    # ---- derived, shared by all backends --------------------------------------------
    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def mpp(self) -> float:
        """Micrometres per pixel at level 0 (the caller's value wins over the file's)."""
        value = self._mpp_override if self._mpp_override is not None else self._recorded_mpp()
        if value is None or not math.isfinite(value):
            raise MissingPixelSizeError(
                "the file records no pixel size; pass mpp=... (micrometres per pixel at level 0)",
                self.path,
            )
        if not PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1]:
            raise MissingPixelSizeError(
                f"pixel size {value} um/px is implausible (expected {PLAUSIBLE_MPP[0]}-"
                f"{PLAUSIBLE_MPP[1]}); pass mpp=... to override",
                self.path,
            )
        return float(value)

    @property
    def objective_power(self) -> float | None:
        """Objective magnification; recorded, or derived from the pixel size (10 / mpp)."""
        recorded = self._recorded_objective()
        if recorded is not None and recorded > 0:
            return float(recorded)
        try:
            return round(10.0 / self.mpp, 2)
        except MissingPixelSizeError:
            return None

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[self._check_level(level)]

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample``."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = i
        return best

    def read_region(self, location: Sequence[int], level: int, size: Sequence[int]) -> np.ndarray:
        """Read a (height, width, 3) uint8 RGB region whose top-left is level-0 ``location``."""
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise InvalidParameterError(f"region size must be positive, got {w}x{h}", self.path)
        return self._read((x, y), self._check_level(level), (w, h))

    def read_regions(
        self,
        locations: np.ndarray,
        level: int,
        size: Sequence[int],
        *,
        workers: int | None = None,
        reduce: int = 1,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read N same-sized regions into one (N, height, width, 3) uint8 array.

        ``locations`` are level-0 top-left corners (N x 2, x then y). With ``reduce``
        > 1 each region covers ``size * reduce`` pixels of ``level`` and comes back
        shrunk to ``size``: decoded at reduced scale in the DCT domain where the
        backend can (see ``decodes_reduced``), else read in full and resized with
        area averaging. ``workers`` threads read in parallel (default: all cores).
        ``out`` (C-contiguous, (N, height, width, 3) uint8) receives the pixels
        instead of a new array.
        """
        locations = np.asarray(locations)
        if locations.size % 2 or (locations.ndim == 2 and locations.shape[1] != 2):
            raise InvalidParameterError(
                f"locations must be N x 2, got shape {locations.shape}", self.path
            )
        locations = locations.astype(np.int64, copy=False).reshape(-1, 2)
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise InvalidParameterError(f"region size must be positive, got {w}x{h}", self.path)
        if not (isinstance(reduce, int | np.integer) and reduce >= 1):
            raise InvalidParameterError(
                f"reduce must be a positive integer, got {reduce}", self.path
            )
        level = self._check_level(level)
        shape = (len(locations), h, w, 3)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise InvalidParameterError(
                f"out must be a C-contiguous uint8 array of shape {shape}, got "
                f"{out.dtype} {out.shape}",
                self.path,
            )
        self._read_regions(locations, level, (w, h), _resolve_workers(workers), int(reduce), out)
        return out

    def decodes_reduced(self, level: int, reduce: int) -> bool:
        """Whether ``read_regions(..., reduce=reduce)`` decodes at reduced scale natively."""
        return False

    def _read_regions(
        self,
        locations: np.ndarray,
        level: int,
        size: tuple[int, int],
        workers: int,
        reduce: int,
        out: np.ndarray,
    ) -> None:
        """Backend hook for batched reads into ``out``; the default reads region by region."""
        w, h = size

        def one(i: int) -> None:
            x, y = (int(v) for v in locations[i])
            region = self._read((x, y), level, (w * reduce, h * reduce))
            out[i] = region if reduce == 1 else shrink(region, (w, h))

        if workers <= 1 or len(locations) <= 1:
            for i in range(len(locations)):
                one(i)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(workers, len(locations))) as pool:
                for _ in pool.map(one, range(len(locations))):
                    pass

    def _level_coords(self, locations: np.ndarray, level: int) -> np.ndarray:
        """Level-0 corners as pixel corners of ``level`` (rounded to the nearest pixel)."""
        ds = self.level_downsamples[level]
        if ds == 1.0:
            return np.ascontiguousarray(locations, dtype=np.int64)
        return np.rint(locations / ds).astype(np.int64)

    def read_level(self, level: int) -> np.ndarray:
        """Read a whole level (use only for low-resolution levels)."""
        level = self._check_level(level)
        return self.read_region((0, 0), level, self.level_dimensions[level])

    def thumbnail(self, max_size: int = 2048) -> tuple[np.ndarray, float]:
        """A thumbnail whose longer side is at most ``max_size``, and its downsample.

        Reads the coarsest level at least as large as needed and resizes with area
        averaging, so large slides never decode level 0.
        """
        import cv2

        width, height = self.dimensions
        target_ds = max(width, height) / max_size
        level = self.best_level_for_downsample(max(target_ds, 1.0))
        image = self.read_level(level)
        scale = min(1.0, max_size / max(image.shape[:2]))
        if scale < 1.0:
            new_size = (
                max(1, round(image.shape[1] * scale)),
                max(1, round(image.shape[0] * scale)),
            )
            image = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
        return image, width / image.shape[1]

    def _check_level(self, level: int) -> int:
        if not 0 <= level < self.level_count:
            raise InvalidParameterError(
                f"level {level} does not exist (the slide has {self.level_count})", self.path
            )
        return level

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, levels={self.level_count}, "
            f"dimensions={self.dimensions})"
        )


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (h, w, 3) uint8 to ``size`` = (width, height) with area averaging."""
    import cv2

    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def default_workers() -> int:
    """CPUs this process may run on (its affinity mask), the default thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without sched_getaffinity
        return os.cpu_count() or 1


def _resolve_workers(workers: int | None) -> int:
    return default_workers() if workers is None else max(1, int(workers))


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend straight (non-premultiplied) RGBA onto a white background, as uint8 RGB."""
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha.astype(np.uint16)
    rgb = (rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return rgb.astype(np.uint8)
