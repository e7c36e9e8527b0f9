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
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from hsafast.errors import InvalidParameterError
from hsafast.registration.transform import Registration
from hsafast.slides.base import Slide
from hsafast.tiling import TileGrid


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
    workers: int | None = None,
) -> Iterator[TilePair]:
    """Yield (H&E tile, IHC tile, he_coord, ihc_coord) for level-0 top-left ``coords``.

    ``size`` is the tile size (w, h) in pixels of the H&E ``level``. Both slides are read
    through :func:`hsafast.read_tiles` (``workers`` threads each, ``batch`` tiles at a
    time): the H&E tiles as a grid, the IHC tiles as a grid of equal windows around the
    mapped centres, large enough for any tile's rotated footprint. A failed registration
    raises ``RegistrationError`` unless ``force=True``.
    """
    from hsafast.reading import read_tiles

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
    centres_he = pts + half - 0.5
    centres_ihc = registration.map(centres_he) if len(pts) else np.zeros((0, 2))
    if not np.isfinite(centres_ihc).all():
        raise InvalidParameterError("the registration maps a tile to non-finite coordinates")
    side = max(w, h)
    he_grid = _grid(he_slide, pts, level, side)
    if resample:
        jac = _jacobians(registration, centres_he) * ds_he  # H&E tile pixel -> IHC level 0
        corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [-w / 2, h / 2], [w / 2, h / 2]])
        extent = np.abs(np.einsum("nij,kj->nki", jac, corners)).max(axis=(0, 1))
        read = int(2 * np.ceil((extent.max() + 2.0 * ds_ihc) / ds_ihc))  # IHC level pixels
        origins = np.round(centres_ihc - read * ds_ihc / 2.0).astype(np.int64)
    else:  # the stored pixels of a tile of the same physical size around the mapped centre
        tw = max(1, round(w * ds_he * ratio / ds_ihc))
        th = max(1, round(h * ds_he * ratio / ds_ihc))
        read = max(tw, th)
        origins = np.round(centres_ihc + 0.5 - np.array([tw, th]) * ds_ihc / 2.0).astype(np.int64)
    ihc_grid = _grid(ihc_slide, origins, ihc_level, read)
    he_batches = read_tiles(he_slide, he_grid, batch_size=batch, workers=workers)
    ihc_batches = read_tiles(ihc_slide, ihc_grid, batch_size=batch, workers=workers)
    for he_batch, ihc_batch in zip(he_batches, ihc_batches, strict=True):
        for k in range(len(he_batch)):
            i = he_batch.start + k
            region = ihc_batch.tiles[k]
            if resample:
                tile = _resampled(region, origins[i], ds_ihc, centres_ihc[i], jac[i], (w, h))
            else:
                tile = np.ascontiguousarray(region[:th, :tw])
            ihc_coord = np.round(centres_ihc[i] + 0.5 - half * ratio).astype(np.int64)
            he_tile = np.ascontiguousarray(he_batch.tiles[k][:h, :w])
            yield TilePair(he_tile, tile, pts[i].copy(), ihc_coord)


def _grid(slide: Slide, coords: np.ndarray, level: int, side: int) -> TileGrid:
    """Square ``side``-pixel tiles of ``level`` at level-0 ``coords``, read as stored."""
    return TileGrid(
        slide_path=Path(slide.path),
        coords=np.ascontiguousarray(coords, dtype=np.int64).reshape(-1, 2),
        tissue_fraction=np.ones(len(coords), np.float32),
        level=level,
        read_size=side,
        size=side,
        patch_size_level0=max(1, round(side * slide.level_downsamples[level])),
        target_mpp=slide.level_mpp(level),
    )


def _jacobians(registration: Registration, points: np.ndarray, step: float = 8.0) -> np.ndarray:
    """(N, 2, 2) Jacobians of the map at level-0 points (central differences)."""
    n = len(points)
    if n == 0:
        return np.zeros((0, 2, 2))
    offsets = np.array([[step, 0.0], [-step, 0.0], [0.0, step], [0.0, -step]])
    q = registration.map((points[:, None, :] + offsets[None]).reshape(-1, 2)).reshape(n, 4, 2)
    return np.stack([(q[:, 0] - q[:, 1]) / (2 * step), (q[:, 2] - q[:, 3]) / (2 * step)], axis=2)


def _resampled(
    region: np.ndarray,
    origin: np.ndarray,
    ds: float,
    centre: np.ndarray,
    lin: np.ndarray,
    size: tuple[int, int],
) -> np.ndarray:
    """IHC pixels of ``region`` (read at level-0 ``origin``, ``ds`` level-0 pixels per
    pixel) resampled onto the H&E tile grid through the local linear map ``lin`` (H&E
    tile pixel -> IHC level-0 offset from ``centre``)."""
    w, h = size
    if not np.isfinite(lin).all():
        raise InvalidParameterError("the registration maps this tile to non-finite coordinates")
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
