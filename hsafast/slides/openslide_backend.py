"""OpenSlide backend: SVS, NDPI, MRXS, SCN, generic tiled TIFF, DICOM and more."""

from __future__ import annotations

import os

import numpy as np

from hsafast.errors import SlideError
from hsafast.slides.base import Slide, composite_on_white


def _float_property(props: dict[str, str], key: str) -> float | None:
    try:
        return float(props[key])
    except (KeyError, ValueError):
        return None


class OpenSlideSlide(Slide):
    backend_name = "openslide"

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        super().__init__(path, mpp)
        import openslide

        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            vendor = openslide.OpenSlide.detect_format(str(self.path))
            reason = (
                f"OpenSlide recognises a {vendor} file but cannot open it (truncated or corrupt)"
                if vendor
                else "not a slide format OpenSlide supports"
            )
            raise SlideError(reason, self.path) from exc
        except openslide.OpenSlideError as exc:
            raise SlideError(f"OpenSlide cannot open it: {exc}", self.path) from exc
        self._props = dict(self._osr.properties)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(w), int(h)) for w, h in self._osr.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._osr.level_downsamples)

    @property
    def properties(self) -> dict[str, str]:
        return self._props

    def _recorded_mpp(self) -> float | None:
        import openslide

        mpp_x = _float_property(self._props, openslide.PROPERTY_NAME_MPP_X)
        mpp_y = _float_property(self._props, openslide.PROPERTY_NAME_MPP_Y)
        if mpp_x is None or mpp_x <= 0:
            return None
        if mpp_y is not None and mpp_y > 0 and abs(mpp_x - mpp_y) / mpp_x > 0.05:
            raise SlideError(
                f"non-square pixels ({mpp_x} x {mpp_y} um) are not supported", self.path
            )
        return mpp_x

    def _recorded_objective(self) -> float | None:
        import openslide

        return _float_property(self._props, openslide.PROPERTY_NAME_OBJECTIVE_POWER)

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        import openslide

        try:
            region = self._osr.read_region(location, level, size)
        except openslide.OpenSlideError as exc:
            raise SlideError(
                f"cannot read region at {location} level {level}: {exc}", self.path
            ) from exc
        return composite_on_white(np.asarray(region))

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._osr.associated_images.keys())

    def associated_image(self, name: str) -> np.ndarray:
        images = self._osr.associated_images
        if name not in images:
            raise SlideError(f"no associated image named {name!r}", self.path)
        return composite_on_white(np.asarray(images[name].convert("RGBA")))

    def close(self) -> None:
        self._osr.close()
