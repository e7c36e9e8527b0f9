"""Corresponding H&E and IHC tiles, read on demand through a registration.

Each H&E tile's centre is mapped to the IHC slide. With ``resample=True`` the
IHC tile is cut from a slightly larger region around the mapped centre and
resampled (``cv2.warpAffine``) through the map's local linear part, so that it
shows the tissue in the H&E tile's orientation and scale, even when the
sections are rotated or mirrored against each other. With ``resample=False`` an
axis-aligned IHC tile of the same physical size is read around the mapped
centre, as stored pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import cv2
import numpy as np

from hsafast.errors import InvalidParameterError
from hsafast.registration.transform import Registration
from hsafast.slides.base import Slide


class TilePair(NamedTuple):
    he_tile: np.ndarray  #: (h, w, 3) uint8
    ihc_tile: np.ndarray  #: (h, w, 3) uint8 (IHC pixels; resampled to the H&E frame by default)
    he_coord: np.ndarray  #: (2,) int64 level-0 top-left on the H&E slide
    ihc_coord: np.ndarray  #: (2,) int64 level-0 top-left of the same-sized tile on the IHC slide


def paired_tiles(
    he_slide: Slide,
    ihc_slide: Slide,
    registration: Registration,
    coords: np.ndarray,
    size: int | Sequence[int],
    level: int = 0,
    *,
    resample: bool = True,
    force: bool = False,
    batch: int = 64,
) -> Iterator[TilePair]:
    """Yield (H&E tile, IHC tile, he_coord, ihc_coord) for level-0 top-left ``coords``.

    ``size`` is the tile size (w, h) in pixels of the H&E ``level``. A failed
    registration raises ``RegistrationError`` unless ``force=True``.
    """
    if not force:
        registration.require_ok()
    w, h = (int(size), int(size)) if isinstance(size, int | np.integer) else map(int, size)
    if w <= 0 or h <= 0:
        raise InvalidParameterError(f"tile size must be positive, got {w}x{h}", he_slide.path)
    pts = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    ds_he = he_slide.level_downsamples[he_slide._check_level(level)]
    # the IHC level whose pixel size is closest to (not finer than) the H&E level's
    ratio = he_slide.mpp / ihc_slide.mpp
    ihc_level = ihc_slide.best_level_for_downsample(ds_he * ratio)
    ds_ihc = ihc_slide.level_downsamples[ihc_level]
    half = np.array([w * ds_he, h * ds_he]) / 2.0
    for start in range(0, len(pts), batch):
        chunk = pts[start : start + batch]
        he_tiles = he_slide.read_regions(chunk, level, (w, h))
        centres_he = chunk + half - 0.5
        centres_ihc = registration.map(centres_he)
        for i, coord in enumerate(chunk):
            c_ihc = centres_ihc[i]
            if resample:
                jac = registration.local_linear(centres_he[i])
                tile = _resampled(ihc_slide, ihc_level, ds_ihc, c_ihc, jac, ds_he, (w, h))
            else:
                tw = max(1, round(w * ds_he * ratio / ds_ihc))
                th = max(1, round(h * ds_he * ratio / ds_ihc))
                top_left = np.round(c_ihc + 0.5 - np.array([tw, th]) * ds_ihc / 2.0)
                tile = ihc_slide.read_region(top_left.astype(np.int64), ihc_level, (tw, th))
            ihc_coord = np.round(c_ihc + 0.5 - half * ratio).astype(np.int64)
            yield TilePair(he_tiles[i], tile, coord.copy(), ihc_coord)


def _resampled(
    slide: Slide,
    level: int,
    ds: float,
    centre: np.ndarray,
    jac: np.ndarray,
    ds_he: float,
    size: tuple[int, int],
) -> np.ndarray:
    """IHC pixels resampled onto the H&E tile grid through the local linear map."""
    w, h = size
    if not np.isfinite(centre).all() or not np.isfinite(jac).all():
        raise InvalidParameterError("the registration maps this tile to non-finite coordinates")
    # H&E tile pixel u (relative to the tile centre) -> IHC level-0 offset jac @ (u * ds_he)
    lin = jac * ds_he
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [-w / 2, h / 2], [w / 2, h / 2]])
    extent = np.abs(corners @ lin.T).max(axis=0)  # level-0 half-extent of the rotated tile
    margin = 2.0 * ds
    half_read = np.ceil((extent + margin) / ds).astype(int)  # in IHC level pixels
    read_w, read_h = int(2 * half_read[0]), int(2 * half_read[1])
    origin = np.round(centre - half_read * ds).astype(np.int64)  # level-0 top-left of the read
    region = slide.read_region(origin, level, (read_w, read_h))
    # output pixel (ox, oy) -> level-0 centre + lin @ (o - centre_out) -> region pixel index
    m = lin / ds
    offset = (centre - origin + 0.5) / ds - 0.5
    centre_out = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    t = offset - m @ centre_out
    matrix = np.c_[m, t].astype(np.float64)
    return cv2.warpAffine(
        region,
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(255, 255, 255),
    )
