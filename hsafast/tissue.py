"""Tissue detection on a low-resolution image of a slide, for every stain.

Saturation-based detectors (CLAM's HSV threshold) miss faint and DAB-heavy IHC,
whose brown and grey-blue tissue is barely saturated. The mask here comes from
optical density instead: OD = log10(glass / intensity) per channel, relative to
the glass colour estimated from the image, and the most absorbing channel
decides (Otsu's threshold on log OD, clamped, or a fixed one). A field whose
brightest pixels are not glass (tissue from edge to edge) is all tissue. Pen
ink, black dirt and straight coverslip or slide edges are taken out; then a
closing wide enough to bridge alveoli and fat, an opening, hole filling and the
removal of specks by physical area. The pixel steps run in the native core
(``hsafast._core``) with the GIL released. See docs/tissue.md.
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
    """Lowest automatic threshold (OD): three times the scatter of glass in 8-bit
    JPEG scans (about 2 grey levels at 240, 0.01 OD), so glass stays below it."""

    max_threshold: float = 0.06
    """Highest automatic threshold (OD). On a slide covered with tissue Otsu splits
    dense from pale tissue; the cap keeps pale tissue (a 4-um section's faint
    counterstain seen at 8 um/px: alveolar walls, fat septa) above the threshold."""

    glass_max_od: float = 0.1
    """The image's brightest colour (99th percentile per channel) is glass only if
    no channel is denser than this OD relative to white: slide, mountant and
    coverslip lose under 10% of the light (two air-glass surfaces reflect 4% each).
    A denser background is tissue filling the field: no glass visible."""

    glass_max_tint: float = 0.04
    """Most the channels of glass may differ (OD): glass is colourless, so a
    background tinted more than this (eosin pink, counterstain blue) is tissue
    filling the field, not glass."""

    exclude_artefacts: bool = True
    """Take out pen ink, black dirt and straight coverslip or slide edges."""

    black_od: float = 0.8
    """Regions denser than this OD in every channel (a sixth of the light or less)
    and neutral (the lightest channel within half of the densest) are black ink,
    dirt or the scanner's edge. Stains keep one channel lighter: DAB absorbs red at
    a third of blue, haematoxylin blue at 0.4 of green (Ruifrok & Johnston 2001)."""

    ink_od: float = 0.3
    """Coloured ink is recognised where its densest channel absorbs at least this
    OD (half the light) in a colour no mix of haematoxylin, eosin and DAB takes:
    blue and green inks absorb red more than green, red ink blue as much as green
    (the rules and their origin: ``artefact_map`` in csrc/core/tissue.hpp). Pixels
    of those colours down to a third of this OD, touching such a stroke, are its
    spray and feathered edge."""

    ink_min_area_mm2: float = 0.01
    """Ink and black regions smaller than this (mm^2) are left as they are: a pen
    stroke is 0.3-1 mm wide, so a mark covers at least 0.1 x 0.1 mm, while dense
    nuclei of a bluish counterstain, or the darkest pixels of a fold, come in far
    smaller groups."""

    ink_spray_um: float = 250.0
    """Ink-coloured pixels (down to a third of ``ink_od``) within this distance (um)
    of a stroke are its spray and smudges: half a stroke's width."""

    ink_margin_um: float = 60.0
    """Ink and black regions are widened by this much (um) to take their feathered
    edge: a marker's edge fades over about 25 um (one standard deviation), and black
    is recognised only where ink covers 97% of a pixel, two of those inside the line
    where it covers half."""

    line_width_um: float = 200.0
    """Pieces on average at most this wide (um; area over the sum of their bounding
    box's sides) and at least ``line_length_mm`` long are coverslip or slide edges,
    or hairs: a No. 1.5 coverslip is 0.17 mm thick, and its edge with the
    mountant's meniscus shows as a line about that wide or thinner."""

    line_length_mm: float = 1.0
    """... when at least this long (mm): glass edges run for centimetres, while
    tissue is rarely thin and alone over a millimetre; 0 disables."""

    closing_um: float = 100.0
    """Radius of the disk that closes gaps inside tissue (um); 0 disables. It
    bridges spaces up to 200 um: human alveoli (mean volume 4.2e6 um^3, an
    equivalent diameter of 200 um; Ochs et al. 2004) and adipocytes (50-150 um),
    so sparse parenchyma and fat are one piece; wider lumens stay open."""

    opening_um: float = 8.0
    """Radius of the disk that removes specks and hairlines (um); 0 disables."""

    max_hole_mm2: float = 0.03
    """Enclosed holes up to this area are filled (mm^2): a 200-um disk, the same
    limit as the closing for lumens that are not round. ``math.inf`` fills every
    hole, 0 none."""

    min_area_mm2: float = 0.02
    """Pieces of tissue smaller than this (mm^2) are dropped as specks (dust,
    debris, floaters); 0.02 mm^2 is about one 256-px tile at 0.5 um/px. In a field
    smaller than twice this, a piece counts when it covers half the field."""

    keep_largest: int | None = None
    """Keep only the k largest pieces (e.g. 1 to drop on-slide control tissue)."""

    def __post_init__(self) -> None:
        def bad(reason: str) -> InvalidParameterError:
            return InvalidParameterError(f"TissueConfig: {reason}")

        if not (math.isfinite(self.mpp) and self.mpp > 0):
            raise bad(f"mpp must be a positive pixel size, got {self.mpp}")
        if not (isinstance(self.max_side, int) and self.max_side >= 16):
            raise bad(f"max_side must be an integer >= 16, got {self.max_side}")
        for name in ("min_threshold", "max_threshold", "glass_max_od", "glass_max_tint"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 2.5):
                raise bad(f"{name} must be an OD in [0, 2.5], got {value}")
        for name in ("black_od", "ink_od"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 2.5):
                raise bad(f"{name} must be an OD in (0, 2.5], got {value}")
        if self.min_threshold > self.max_threshold:
            raise bad(
                f"min_threshold ({self.min_threshold}) exceeds max_threshold ({self.max_threshold})"
            )
        if self.threshold is not None and not (
            math.isfinite(self.threshold) and 0 <= self.threshold <= 2.5
        ):
            raise bad(f"threshold must be an OD in [0, 2.5] or None, got {self.threshold}")
        for name in (
            "closing_um",
            "opening_um",
            "min_area_mm2",
            "ink_min_area_mm2",
            "ink_spray_um",
            "ink_margin_um",
            "line_width_um",
            "line_length_mm",
        ):
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
    """OD threshold used (tissue where OD > threshold); 0 when no glass is visible."""
    mpp: float | None = None
    """Level-0 pixel size of the slide (um/px); None when the slide records none."""
    level0_size: tuple[int, int] = (0, 0)
    """Level-0 (width, height) of the slide."""
    otsu: float | None = None
    """Otsu's threshold before clamping (None when fixed or undefined)."""
    background: tuple[int, int, int] = (255, 255, 255)
    """Glass RGB the OD was measured against (white when no glass is visible)."""
    glass_visible: bool = True
    """False when the field is tissue from edge to edge: its brightest colour is
    not glass, and the whole field (less any ink) is the mask."""
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


def _radius(um: float, mask_mpp: float) -> int:
    """A disk radius in mask pixels: at least one pixel unless disabled (0 um)."""
    return 0 if um <= 0 else max(1, round(um / mask_mpp))


@dataclass(frozen=True)
class PixelParams:
    """The physical sizes of a ``TissueConfig`` in pixels of one mask."""

    closing: int
    opening: int
    speck: int
    """Pieces smaller than this are noise or dust, dropped before the closing can
    join them: a disk of radius ``opening_um``, and never fewer than 2 pixels."""
    ink_spray: int
    ink_margin: int
    line_width: float
    line_half_width: int
    """Lines up to 2 line_half_width + 1 pixels wide are found (``straight_lines``)."""
    line_length: int
    """0: disabled."""
    max_hole: int
    """-1 fills every hole."""
    min_area: int
    ink_min_area: int

    @classmethod
    def of(cls, config: TissueConfig, mask_mpp: float, shape: tuple[int, int]) -> PixelParams:
        px_area_mm2 = (mask_mpp * 1e-3) ** 2
        line_length = round(config.line_length_mm * 1e3 / mask_mpp)
        min_area = math.ceil(config.min_area_mm2 / px_area_mm2)
        return cls(
            closing=_radius(config.closing_um, mask_mpp),
            opening=_radius(config.opening_um, mask_mpp),
            speck=max(2, math.ceil(math.pi * (config.opening_um / mask_mpp) ** 2)),
            ink_spray=_radius(config.ink_spray_um, mask_mpp),
            ink_margin=_radius(config.ink_margin_um, mask_mpp),
            line_width=config.line_width_um / mask_mpp,
            line_half_width=max(1, round(config.line_width_um / 2 / mask_mpp)),
            line_length=line_length if config.exclude_artefacts else 0,
            max_hole=(
                -1
                if math.isinf(config.max_hole_mm2)
                else math.floor(config.max_hole_mm2 / px_area_mm2)
            ),
            # a field smaller than twice the speck area: a piece counts if it covers half
            min_area=min(min_area, (shape[0] * shape[1]) // 2),
            ink_min_area=math.ceil(config.ink_min_area_mm2 / px_area_mm2),
        )


def glass_visible(background: tuple[int, int, int], config: TissueConfig) -> bool:
    """Whether the image's brightest colour is glass: bright and colourless."""
    od = [math.log10(256.0 / (v + 1.0)) for v in background]
    return max(od) <= config.glass_max_od and max(od) - min(od) <= config.glass_max_tint


def artefact_mask(
    rgb: np.ndarray, background: tuple[int, int, int], config: TissueConfig, px: PixelParams
) -> np.ndarray:
    """Pen ink (strokes of at least ``ink_min_area_mm2`` with their spray) and black
    regions, widened by ``ink_margin_um`` (bool, height x width)."""
    from hsafast._native import core

    found, _ = core.tissue_artefact_mask(
        rgb,
        background,
        config.black_od,
        config.ink_od,
        px.ink_min_area,
        px.ink_spray,
        px.ink_margin,
    )
    return np.asarray(found).view(np.bool_)


def _automatic_threshold(
    rgb: np.ndarray, background: tuple[int, int, int], skip: np.ndarray, config: TissueConfig
) -> tuple[int, int]:
    """(quantised threshold, Otsu's before clamping or -1) from the OD histogram."""
    from hsafast._native import core

    if config.threshold is not None:
        return round(config.threshold * OD_SCALE), -1
    stride = core.sample_stride(rgb.shape[0] * rgb.shape[1])
    hist = core.tissue_od_histogram(rgb, background, skip.view(np.uint8), stride)
    # Otsu on log OD: glass sits in a narrow peak near zero while tissue spans a
    # decade, so the log scale gives faint tissue room next to the glass
    otsu = core.otsu_index(hist, np.log(np.arange(256) / OD_SCALE + 0.01))
    lo, hi = round(config.min_threshold * OD_SCALE), round(config.max_threshold * OD_SCALE)
    return (lo if otsu < 0 else min(max(otsu, lo), hi)), otsu


@dataclass(frozen=True)
class Detection:
    """What ``find_tissue`` found, before it is placed on a slide."""

    mask: np.ndarray
    background: tuple[int, int, int]
    """Glass RGB (white when no glass is visible)."""
    glass: bool
    threshold: int
    """Quantised OD threshold (0 without glass)."""
    otsu: int
    """Otsu's quantised threshold before clamping (-1: fixed, undefined or no glass)."""
    pieces: int


def find_tissue(rgb: np.ndarray, mask_mpp: float, config: TissueConfig) -> Detection:
    """The detection chain on a validated RGB image whose pixels are ``mask_mpp`` um."""
    from hsafast._native import core

    h, w = rgb.shape[:2]
    px = PixelParams.of(config, mask_mpp, (h, w))
    r, g, b = core.tissue_background(rgb, core.sample_stride(h * w), 99.0, 0)
    background = (int(r), int(g), int(b))
    glass = glass_visible(background, config)
    if not glass:
        background = (255, 255, 255)
    artefacts = (
        artefact_mask(rgb, background, config, px)
        if config.exclude_artefacts
        else np.zeros((h, w), np.bool_)
    )
    threshold, otsu = 0, -1
    if glass:
        threshold, otsu = _automatic_threshold(rgb, background, artefacts, config)
        mask = np.asarray(core.tissue_od_threshold(rgb, background, threshold)).view(np.bool_)
        mask &= ~artefacts
        if px.line_length:  # coverslip and slide edges
            mask &= ~np.asarray(
                core.straight_lines(mask.view(np.uint8), px.line_half_width, px.line_length)[0]
            ).view(np.bool_)
    else:  # tissue from edge to edge
        mask = ~artefacts
    u8 = np.asarray(core.filter_components(mask.view(np.uint8), px.speck, 0)[0])
    if px.closing:
        u8 = np.asarray(core.erode_disk(np.asarray(core.dilate_disk(u8, px.closing)), px.closing))
        u8 &= (artefacts ^ True).view(np.uint8)  # the closing must not bridge over ink
    if px.opening:
        u8 = np.asarray(core.dilate_disk(np.asarray(core.erode_disk(u8, px.opening)), px.opening))
    u8 = np.asarray(core.fill_holes(u8, px.max_hole))
    # specks by area, and thin pieces (coverslip and slide edges, hairs)
    u8, pieces = core.filter_components(
        u8, px.min_area, config.keep_largest or 0, px.line_width, px.line_length
    )
    return Detection(
        mask=np.asarray(u8).view(np.bool_),
        background=background,
        glass=glass,
        threshold=threshold,
        otsu=otsu,
        pieces=int(pieces),
    )


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
    mask on its slide (default: the image is level 0). Raises ``NoTissueError``
    on blank glass; a field with no glass in it is all tissue (``glass_visible``
    is False on the mask).
    """
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
    if mask_mpp is not None and not (math.isfinite(mask_mpp) and 0.01 <= mask_mpp <= 1000):
        raise InvalidParameterError(
            f"mask_mpp must be a pixel size in [0.01, 1000] um, got {mask_mpp}", path
        )
    h, w = rgb.shape[:2]
    found = find_tissue(rgb, mask_mpp or config.mpp, config)
    if found.pieces == 0:
        if found.glass:
            raise NoTissueError(
                f"no tissue found: nothing absorbs above OD {found.threshold / OD_SCALE:.2f} "
                f"relative to the glass (background RGB {found.background}); blank glass?",
                path,
            )
        raise NoTissueError(
            "no tissue found: no glass is visible and the whole field is pen ink or black", path
        )
    if not found.glass:
        log.info("%s: no glass visible: the field is tissue from edge to edge", path or "image")
    size0 = level0_size or (w, h)
    if slide_mpp is None and level0_size is None and mask_mpp is not None:
        slide_mpp = mask_mpp
    return TissueMask(
        mask=found.mask,
        downsample=(size0[0] / w, size0[1] / h),
        slide_path=path,
        threshold=found.threshold / OD_SCALE,
        mpp=slide_mpp,
        level0_size=(int(size0[0]), int(size0[1])),
        otsu=None if found.otsu < 0 else found.otsu / OD_SCALE,
        background=found.background,
        glass_visible=found.glass,
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
