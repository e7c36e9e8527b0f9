"""Each slide's pixel size in a batch: recorded by the file, given for files without
one, or forced for every file (and then said so in the journal).

A value given for "files that record none" must never replace a recorded one: on a
mixed cohort that would silently rescale every scanned slide (CMU-1's 0.499 um/px
read as 0.25 gives 14 tiles instead of 50).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hsafast.errors import InvalidParameterError, MissingPixelSizeError

if TYPE_CHECKING:
    from hsafast.cohort.task import ItemContext
    from hsafast.slides import Slide


@dataclass(frozen=True)
class PixelSize:
    """How a step learns each slide's level-0 pixel size."""

    slide_mpp: float | None = None
    """Micrometres per pixel at level 0 for files that record no (plausible) pixel
    size; None makes such files fail with a clear reason."""

    force: bool = False
    """Use ``slide_mpp`` for every file, replacing recorded pixel sizes."""

    def __post_init__(self) -> None:
        if self.slide_mpp is not None and not (
            isinstance(self.slide_mpp, (int, float))
            and math.isfinite(self.slide_mpp)
            and self.slide_mpp > 0
        ):
            raise InvalidParameterError(
                f"PixelSize: slide_mpp must be a positive pixel size, got {self.slide_mpp!r}"
            )
        if self.force and self.slide_mpp is None:
            raise InvalidParameterError("PixelSize: force needs slide_mpp")

    def params(self) -> dict[str, Any]:
        """For the fingerprint: a forced size changes every item."""
        return {"force_slide_mpp": self.slide_mpp if self.force else None}

    def fallbacks(self) -> dict[str, Any]:
        """A size for files without one changes only the items that use it."""
        return {"slide_mpp": None if self.force else self.slide_mpp}


def open_item_slide(
    path: str | os.PathLike[str],
    pixel: PixelSize,
    ctx: ItemContext | None = None,
    backend: str = "auto",
) -> Slide:
    """Open a slide with its pixel size settled by ``pixel``; record where it came from."""
    from hsafast.slides import open_slide

    if pixel.force:
        slide = open_slide(path, backend, mpp=pixel.slide_mpp)
        _note(ctx, path, slide.mpp, "forced")
        return slide
    slide = open_slide(path, backend)
    try:
        _note(ctx, path, slide.mpp, "file")
        return slide
    except MissingPixelSizeError as exc:
        slide.close()
        if pixel.slide_mpp is None:
            what = exc.reason.partition("; pass ")[0]
            raise MissingPixelSizeError(
                f"{what}; give it with slide_mpp=... (um/px at level 0)", path
            ) from None
    value = ctx.used("slide_mpp") if ctx is not None else pixel.slide_mpp
    slide = open_slide(path, backend, mpp=value)
    _note(ctx, path, slide.mpp, "slide_mpp")
    return slide


def _note(ctx: ItemContext | None, path: str | os.PathLike[str], mpp: float, source: str) -> None:
    if ctx is not None:
        pixel_sizes = ctx.facts.setdefault("pixel_size", {})
        pixel_sizes[os.fspath(path)] = {"mpp": mpp, "source": source}
