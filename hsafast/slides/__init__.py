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

__all__ = [
    "BACKENDS",
    "Slide",
    "composite_on_white",
    "cucim_available",
    "open_slide",
    "register_backend",
]

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


@register_backend("tifffile")
def _open_tifffile(path: Path, mpp: float | None) -> Slide:
    from hsafast.slides.tiff_backend import TiffSlide

    return TiffSlide(path, mpp)


def _open_cucim(path: Path, mpp: float | None) -> Slide:
    from hsafast.slides.cucim_backend import CuCIMSlide

    return CuCIMSlide(path, mpp)


def cucim_available() -> bool:
    """Whether the optional cucim package is installed (found, not imported)."""
    import importlib.util

    return importlib.util.find_spec("cucim") is not None


if cucim_available():  # a file-system lookup only: cucim is imported on first use
    BACKENDS["cucim"] = _open_cucim


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


#: OpenSlide vendors whose files are plain tiled TIFF pyramids that tifffile reads alike.
_TIFF_VENDORS = frozenset({"aperio", "generic-tiff"})


def _auto_backend(path: Path) -> tuple[str, str]:
    """Pick a backend for ``path``; returns (name, reason).

    Plain images go to the image backend. Aperio SVS and generic tiled TIFF go to
    the tifffile backend, which decodes tiles in batches on several threads (the
    same pixels as OpenSlide). Everything else OpenSlide recognises (NDPI, MRXS,
    SCN, DICOM...) goes to OpenSlide; TIFFs it rejects go to tifffile.
    """
    from hsafast.slides.image_backend import IMAGE_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image", f"plain image ({suffix})"
    import openslide

    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError as exc:
        raise SlideError(f"cannot detect the format: {exc}", path) from exc
    if vendor in _TIFF_VENDORS:
        return "tifffile", f"{vendor} TIFF: batched tile decoding"
    if vendor is not None:
        return "openslide", f"OpenSlide recognises the format ({vendor})"
    magic = _magic(path)
    if magic in _TIFF_MAGIC:
        return "tifffile", "TIFF that OpenSlide does not recognise"
    kind = next((name for sig, name in _KNOWN_MAGIC if magic.startswith(sig)), None)
    detail = f"it is a {kind} file" if kind else f"unrecognised content (starts {magic!r})"
    raise SlideError(f"unsupported format: no backend reads it ({detail})", path)


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_KNOWN_MAGIC = (
    (b"\x89PNG", "PNG image"),
    (b"\xff\xd8", "JPEG image"),
    (b"\x89HDF", "HDF5"),
    (b"PK\x03\x04", "ZIP"),
    (b"%PDF", "PDF"),
)


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


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
        log.info("%s: backend %s (%s)", path, backend, reason)
    if backend not in BACKENDS:
        raise InvalidParameterError(
            f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}", path
        )
    return BACKENDS[backend](path, mpp)
