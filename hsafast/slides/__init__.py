"""Opening slides: one ``open_slide`` over several reader backends.

Backends are registered by name in ``BACKENDS``; ``backend="auto"`` picks one
from the file's kind and logs the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from hsafast.errors import InvalidParameterError, SlideError
from hsafast.slides.base import Slide, composite_on_white

__all__ = ["BACKENDS", "Slide", "composite_on_white", "open_slide", "register_backend"]

log = logging.getLogger(__name__)

#: name -> factory(path, mpp) for every reader backend.
BACKENDS: dict[str, Callable[[Path, float | None], Slide]] = {}


def register_backend(
    name: str,
) -> Callable[[Callable[[Path, float | None], Slide]], Callable[[Path, float | None], Slide]]:
    def decorate(
        factory: Callable[[Path, float | None], Slide],
    ) -> Callable[[Path, float | None], Slide]:
        BACKENDS[name] = factory
        return factory

    return decorate


@register_backend("openslide")
def _open_openslide(path: Path, mpp: float | None) -> Slide:
    from hsafast.slides.openslide_backend import OpenSlideSlide

    return OpenSlideSlide(path, mpp)


@register_backend("image")
def _open_image(path: Path, mpp: float | None) -> Slide:
    from hsafast.slides.image_backend import ImageSlide

    return ImageSlide(path, mpp)


def _check_path(path: Path) -> None:
    if not path.exists():
        raise SlideError("no such file", path)
    if path.is_dir():
        raise SlideError("is a directory, not a slide file", path)
    if not os.access(path, os.R_OK):
        raise SlideError("file is not readable (permission denied)", path)
    if path.stat().st_size == 0:
        raise SlideError("file is empty", path)


def _auto_backend(path: Path) -> tuple[str, str]:
    from hsafast.slides.image_backend import IMAGE_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image", f"plain image ({suffix})"
    import openslide

    vendor = openslide.OpenSlide.detect_format(str(path))
    if vendor is not None:
        return "openslide", f"OpenSlide recognises the format ({vendor})"
    if "tifffile" in BACKENDS and suffix in {".tif", ".tiff", ".svs", ".ome.tif"}:
        return "tifffile", "TIFF that OpenSlide does not recognise"
    raise SlideError("unsupported format: no backend recognises this file", path)


def open_slide(
    path: str | os.PathLike[str], backend: str = "auto", mpp: float | None = None
) -> Slide:
    """Open a slide with the named backend (or the best one for the file).

    ``mpp`` (micrometres per pixel at level 0) overrides the file's pixel size and
    is required for files that record none.
    """
    path = Path(path)
    _check_path(path)
    if mpp is not None and not (mpp > 0):
        raise InvalidParameterError(f"mpp must be positive, got {mpp}", path)
    if backend == "auto":
        backend, reason = _auto_backend(path)
        log.debug("%s: backend %s (%s)", path, backend, reason)
    if backend not in BACKENDS:
        raise InvalidParameterError(
            f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}", path
        )
    return BACKENDS[backend](path, mpp)
