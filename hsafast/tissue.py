"""Tissue detection on a low-resolution image of a slide, for H&E and IHC alike.

Saturation-based detectors (CLAM's HSV threshold) miss faint and DAB-heavy IHC,
whose brown and grey-blue tissue is barely saturated. The mask here comes from
optical density instead: OD = log10(background / intensity) per channel, relative
to the glass colour estimated from the image, and the most absorbing channel
decides. The threshold is Otsu's on log OD, clamped to a safe band, or fixed.
Then closing, opening, hole filling and small-component removal, all in the
native core (``hsafast._core``) with the GIL released. See docs/tissue.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsafast._fileio import atomic_write_png
from hsafast.errors import InvalidParameterError, MissingPixelSizeError, NoTissueError
from hsafast.slides import Slide, open_slide

log = logging.getLogger(__name__)

__all__ = ["TissueConfig", "TissueMask", "detect_tissue", "detect_tissue_image"]

#: OD values are quantised in steps of 1 / OD_SCALE in the native core.
OD_SCALE = 100


@dataclass(frozen=True)
class TissueConfig:
    """Parameters of tissue detection; sizes are physical (micrometres, mm^2)."""

    mpp: float = 8.0
    """Working pixel size of the mask (um/px). Slides coarser than this are used as
    they are. Without a recorded pixel size, mask pixels are taken to be this size
    when converting the physical sizes below (pixel units; the mask says so)."""

    max_side: int = 2048
    """Cap on the mask's longer side (pixels), whatever the pixel size."""

    threshold: float | None = None
    """Fixed OD threshold (tissue where OD > threshold); None chooses it per slide
    with Otsu's method on log OD, clamped to [min_threshold, max_threshold]."""

    min_threshold: float = 0.03
    """Lowest automatic threshold (OD): glass and JPEG noise stay below it."""

    max_threshold: float = 0.06
    """Highest automatic threshold (OD): keeps faint tissue (fat, lung, pale IHC
    counterstain) when Otsu splits tissue classes on a slide covered with tissue."""

    exclude_artefacts: bool = True
    """Treat black pixels (every channel below ``black_level``) and green ink
    (green above red and blue by ``green_margin``) as background."""

    black_level: int = 50
    """Intensity under which a pixel counts as black (pen, dirt, scanner edge)."""

    green_margin: int = 20
    """How much greener than red and blue a pixel must be to count as green ink."""

    closing_um: float = 24.0
    """Radius of the disk that closes gaps inside tissue (um); 0 disables."""

    opening_um: float = 8.0
    """Radius of the disk that removes specks (um); 0 disables."""

    max_hole_mm2: float = 0.1
    """Holes up to this area are filled (mm^2); larger ones (lumens, tears) stay
    open. ``math.inf`` fills every hole, 0 none."""

    min_area_mm2: float = 0.02
    """Pieces of tissue smaller than this (mm^2) are dropped; 0.02 mm^2 is about
    one 256-px tile at 0.5 um/px."""

    keep_largest: int | None = None
    """Keep only the k largest pieces (e.g. 1 to drop on-slide control tissue)."""

    def __post_init__(self) -> None:
        def bad(reason: str) -> InvalidParameterError:
            return InvalidParameterError(f"TissueConfig: {reason}")

        if not (math.isfinite(self.mpp) and self.mpp > 0):
            raise bad(f"mpp must be a positive pixel size, got {self.mpp}")
        if not (isinstance(self.max_side, int) and self.max_side >= 16):
            raise bad(f"max_side must be an integer >= 16, got {self.max_side}")
        for name in ("min_threshold", "max_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 2.5):
                raise bad(f"{name} must be an OD in [0, 2.5], got {value}")
        if self.min_threshold > self.max_threshold:
            raise bad(
                f"min_threshold ({self.min_threshold}) exceeds max_threshold ({self.max_threshold})"
            )
        if self.threshold is not None and not (
            math.isfinite(self.threshold) and 0 <= self.threshold <= 2.5
        ):
            raise bad(f"threshold must be an OD in [0, 2.5] or None, got {self.threshold}")
        if not 0 <= self.black_level <= 256:
            raise bad(f"black_level must be in [0, 256], got {self.black_level}")
        if not 0 <= self.green_margin <= 255:
            raise bad(f"green_margin must be in [0, 255], got {self.green_margin}")
        for name in ("closing_um", "opening_um", "min_area_mm2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(f"{name} must be finite and >= 0, got {value}")
        if math.isnan(self.max_hole_mm2) or self.max_hole_mm2 < 0:
            raise bad(f"max_hole_mm2 must be >= 0 (inf fills every hole), got {self.max_hole_mm2}")
        if self.keep_largest is not None and not (
            isinstance(self.keep_largest, int) and self.keep_largest >= 1
        ):
            raise bad(f"keep_largest must be a positive integer or None, got {self.keep_largest}")


@dataclass(eq=False)
class TissueMask:
    """A tissue mask and where it sits on its slide.

    ``mask[y, x]`` covers level-0 pixels ``[x * dx, (x + 1) * dx) x [y * dy, (y + 1) * dy)``
    with ``(dx, dy) = downsample``.
    """

    mask: np.ndarray
    """Height x width bool array, True on tissue."""
    downsample: tuple[float, float]
    """Level-0 pixels per mask pixel along x and y."""
    slide_path: Path | None
    threshold: float
    """OD threshold used (tissue where OD > threshold)."""
    mpp: float | None = None
    """Level-0 pixel size of the slide (um/px); None when the slide records none."""
    level0_size: tuple[int, int] = (0, 0)
    """Level-0 (width, height) of the slide."""
    otsu: float | None = None
    """Otsu's threshold before clamping (None when fixed or undefined)."""
    background: tuple[int, int, int] = (255, 255, 255)
    """Glass RGB the OD was measured against."""
    image: np.ndarray | None = field(default=None, repr=False)
    """The RGB image the mask was computed from (for overlays)."""

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def mask_mpp(self) -> float | None:
        """Pixel size of the mask (um/px), None in pixel units."""
        return None if self.mpp is None else self.mpp * self.downsample[0]

    def area_px(self) -> int:
        """Tissue area in mask pixels."""
        return int(np.count_nonzero(self.mask))

    def area_mm2(self) -> float:
        """Tissue area in mm^2 (needs the slide's pixel size)."""
        if self.mpp is None:
            raise MissingPixelSizeError(
                "tissue area in mm^2 needs a pixel size; the slide records none", self.slide_path
            )
        dx, dy = self.downsample
        return self.area_px() * dx * dy * self.mpp**2 * 1e-6

    def contours(self) -> list[list[np.ndarray]]:
        """Polygons of the tissue in level-0 pixels: ``[exterior, hole, ...]`` each.

        Rings are closed float64 (N x 2, x then y) arrays through the centres of
        the boundary mask pixels; exteriors wind counter-clockwise and holes
        clockwise (RFC 7946), in pixel coordinates.
        """
        import cv2

        found, hierarchy = cv2.findContours(
            self.mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
        )
        if hierarchy is None:
            return []
        links = hierarchy[0]
        scale = np.array(self.downsample, dtype=np.float64)
        polygons: list[list[np.ndarray]] = []
        for i, contour in enumerate(found):
            if links[i][3] != -1:
                continue  # a hole: emitted with its parent
            exterior = _ring(contour, scale, counter_clockwise=True)
            if exterior is None:
                continue
            rings = [exterior]
            child = links[i][2]
            while child != -1:
                hole = _ring(found[child], scale, counter_clockwise=False)
                if hole is not None:
                    rings.append(hole)
                child = links[child][0]
            polygons.append(rings)
        return polygons

    def to_geojson(self) -> dict[str, Any]:
        """A GeoJSON FeatureCollection of tissue polygons that QuPath imports.

        Coordinates are level-0 pixels; each feature is a QuPath annotation
        classified as "Tissue".
        """
        import uuid

        # QuPath reads "id" as the object's UUID: derive it from the slide name and
        # polygon index so that a rerun writes the same file.
        stem = self.slide_path.name if self.slide_path is not None else ""
        features = []
        for i, rings in enumerate(self.contours()):
            features.append(
                {
                    "type": "Feature",
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"hsafast/tissue/{stem}/{i}")),
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [
                            [[round(float(x), 2), round(float(y), 2)] for x, y in ring]
                            for ring in rings
                        ],
                    },
                    "properties": {
                        "objectType": "annotation",
                        "name": f"Tissue {i + 1}",
                        "classification": {"name": "Tissue", "color": [0, 170, 0]},
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features}

    def save_geojson(self, path: str | os.PathLike[str]) -> Path:
        from hsafast._fileio import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_geojson()))
        return Path(path)

    def to_png(self, path: str | os.PathLike[str]) -> Path:
        """Write the mask as an 8-bit PNG (255 on tissue), atomically."""
        atomic_write_png(path, self.mask.astype(np.uint8) * 255)
        return Path(path)

    def overlay(self, max_side: int = 1024) -> np.ndarray:
        """The source image with glass dimmed and the tissue outline drawn (RGB)."""
        import cv2

        if self.image is None:
            raise InvalidParameterError("this mask keeps no image to draw on", self.slide_path)
        image = self.image
        scale = min(1.0, max_side / max(image.shape[:2]))
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
        mask = cv2.resize(self.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        out = image.copy()
        out[mask == 0] = (out[mask == 0] * 0.45 + 255 * 0.2).astype(np.uint8)
        found, _ = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, found, -1, (0, 170, 0), max(1, round(max(size) / 400)))
        return out

    def save_overlay(self, path: str | os.PathLike[str], max_side: int = 1024) -> Path:
        atomic_write_png(path, self.overlay(max_side))
        return Path(path)


def _ring(contour: np.ndarray, scale: np.ndarray, counter_clockwise: bool) -> np.ndarray | None:
    points = contour.reshape(-1, 2).astype(np.float64)
    if len(points) < 3:
        return None
    x, y = points[:, 0], points[:, 1]
    signed = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    if signed == 0:
        return None  # a one-pixel-wide sliver has no interior
    if (signed > 0) != counter_clockwise:
        points = points[::-1]
    points = (points + 0.5) * scale
    return np.vstack([points, points[:1]])


def _radius(um: float, mask_mpp: float, path: Path | None) -> int:
    """A disk radius in mask pixels: at least one pixel unless disabled (0 um)."""
    if um <= 0:
        return 0
    radius = max(1, round(um / mask_mpp))
    if radius > 254:
        raise InvalidParameterError(
            f"a {um} um disk is {radius} mask pixels wide at {mask_mpp:.3g} um/px; "
            "use a coarser working resolution (TissueConfig.mpp)",
            path,
        )
    return radius


def _native_params(
    config: TissueConfig, mask_mpp: float, path: Path | None = None
) -> dict[str, Any]:
    """Convert the physical parameters to mask pixels for the native core."""
    px_area_mm2 = (mask_mpp * 1e-3) ** 2
    max_hole = config.max_hole_mm2
    return {
        "threshold": -1 if config.threshold is None else round(config.threshold * OD_SCALE),
        "min_threshold": round(config.min_threshold * OD_SCALE),
        "max_threshold": round(config.max_threshold * OD_SCALE),
        "exclude_artefacts": config.exclude_artefacts,
        "black_level": config.black_level,
        "green_margin": config.green_margin,
        "closing_radius": _radius(config.closing_um, mask_mpp, path),
        "opening_radius": _radius(config.opening_um, mask_mpp, path),
        "max_hole_area": -1 if math.isinf(max_hole) else math.floor(max_hole / px_area_mm2),
        "min_area": math.ceil(config.min_area_mm2 / px_area_mm2),
        "keep_largest": config.keep_largest or 0,
    }


def detect_tissue_image(
    rgb: np.ndarray,
    mask_mpp: float | None = None,
    config: TissueConfig | None = None,
    *,
    slide_path: str | os.PathLike[str] | None = None,
    level0_size: tuple[int, int] | None = None,
    slide_mpp: float | None = None,
) -> TissueMask:
    """Detect tissue on an RGB image whose pixels are ``mask_mpp`` um wide.

    With ``mask_mpp=None`` the sizes in ``config`` are read as if one pixel were
    ``config.mpp`` um (pixel units). ``level0_size`` and ``slide_mpp`` place the
    mask on its slide (default: the image is level 0).
    """
    from hsafast._native import core

    config = config or TissueConfig()
    path = None if slide_path is None else Path(slide_path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidParameterError(
            f"expected an (height, width, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}", path
        )
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidParameterError("the image is empty", path)
    rgb = np.ascontiguousarray(rgb)
    if mask_mpp is not None and not (math.isfinite(mask_mpp) and mask_mpp > 0):
        raise InvalidParameterError(f"mask_mpp must be positive, got {mask_mpp}", path)
    h, w = rgb.shape[:2]
    mask_u8, info = core.tissue_mask(rgb, **_native_params(config, mask_mpp or config.mpp, path))
    size0 = level0_size or (w, h)
    threshold = info["threshold"] / OD_SCALE
    if info["components"] == 0:
        raise NoTissueError(
            f"no tissue found: nothing absorbs above OD {threshold:.2f} relative to the glass "
            f"(background RGB {tuple(info['background'])}); blank or empty image?",
            path,
        )
    if slide_mpp is None and level0_size is None and mask_mpp is not None:
        slide_mpp = mask_mpp
    return TissueMask(
        mask=mask_u8.view(np.bool_),
        downsample=(size0[0] / w, size0[1] / h),
        slide_path=path,
        threshold=threshold,
        mpp=slide_mpp,
        level0_size=(int(size0[0]), int(size0[1])),
        otsu=None if info["otsu"] < 0 else info["otsu"] / OD_SCALE,
        background=tuple(int(v) for v in info["background"]),  # type: ignore[arg-type]
        image=rgb,
    )


def detect_tissue(
    slide: Slide | str | os.PathLike[str], config: TissueConfig | None = None
) -> TissueMask:
    """Find the tissue of a slide on a low-resolution image of it.

    The image is read at ``config.mpp`` um/px (never level 0 of a large slide;
    at most ``config.max_side`` pixels on its longer side). Raises
    ``NoTissueError`` naming the slide when nothing is found.
    """
    if not isinstance(slide, Slide):
        with open_slide(slide) as opened:
            return detect_tissue(opened, config)
    config = config or TissueConfig()
    rgb, mask_mpp, mpp0 = working_image(slide, config)
    if mpp0 is None:
        log.warning(
            "%s: no pixel size recorded; tissue sizes are in pixel units (a mask pixel is "
            "taken as %g um)",
            slide.path,
            config.mpp,
        )
    return detect_tissue_image(
        rgb,
        mask_mpp,
        config,
        slide_path=slide.path,
        level0_size=slide.dimensions,
        slide_mpp=mpp0,
    )


def working_image(
    slide: Slide, config: TissueConfig
) -> tuple[np.ndarray, float | None, float | None]:
    """The low-resolution image tissue is detected on: (RGB, its um/px, level-0 um/px).

    Read at ``config.mpp`` um/px, at most ``config.max_side`` pixels on the longer
    side; both pixel sizes are None when the slide records none.
    """
    width, height = slide.dimensions
    try:
        mpp0: float | None = slide.mpp
    except MissingPixelSizeError:
        mpp0 = None
    longest = max(width, height)
    side = min(config.max_side, longest)
    if mpp0 is not None:
        side = min(side, math.ceil(longest * mpp0 / config.mpp))
    rgb, _ = slide.thumbnail(max(side, 1))
    return rgb, None if mpp0 is None else mpp0 * width / rgb.shape[1], mpp0
