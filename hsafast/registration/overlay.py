"""Pictures of a registration, for people to check it: checkerboard or two-colour."""

from __future__ import annotations

import cv2
import numpy as np

from hsafast._fileio import atomic_write_png
from hsafast.registration.quality import warp_to_fixed
from hsafast.registration.transform import Registration
from hsafast.slides.base import Slide


def _thumb(slide: Slide, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnail and the 3x3 map from its pixel indices to level-0 indices."""
    from hsafast.registration.representation import scale_matrix

    image, _ = slide.thumbnail(max_size)
    w0, h0 = slide.dimensions
    return image, scale_matrix(w0 / image.shape[1], h0 / image.shape[0])


def registered_thumbnails(
    he_slide: Slide,
    ihc_slide: Slide,
    registration: Registration | None,
    max_size: int = 768,
    nonrigid: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """H&E thumbnail and the IHC resampled onto it (unregistered: same pixel grid)."""
    he, he_back = _thumb(he_slide, max_size)
    ihc, ihc_back = _thumb(ihc_slide, max_size)
    if registration is None:
        matrix = np.linalg.inv(ihc_back) @ he_back
        field = None
    else:
        matrix = np.linalg.inv(ihc_back) @ registration.affine @ he_back
        field = None
        if nonrigid and registration.field is not None:
            ys, xs = np.indices(he.shape[:2], dtype=np.float64)
            pts = np.column_stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]) @ he_back.T
            disp = registration._displacement(pts[:, :2])
            # displacement in level-0 H&E pixels -> thumbnail pixels
            disp = disp / np.array([he_back[0, 0], he_back[1, 1]])
            field = disp.reshape(he.shape[0], he.shape[1], 2).astype(np.float32)
    warped = np.dstack([warp_to_fixed(ihc[..., c], matrix, he.shape[:2], field) for c in range(3)])
    inside = warp_to_fixed(np.ones(ihc.shape[:2], np.float32), matrix, he.shape[:2], field)
    warped = np.where(inside[..., None] > 0.5, warped, 255).astype(np.uint8)
    return he, warped


def checkerboard(a: np.ndarray, b: np.ndarray, squares: int = 8) -> np.ndarray:
    """Alternate squares of ``a`` and ``b`` (same shape)."""
    h, w = a.shape[:2]
    cell = max(1, max(h, w) // squares)
    ys, xs = np.indices((h, w))
    pick = ((ys // cell + xs // cell) % 2).astype(bool)
    return np.where(pick[..., None], b, a)


def two_colour(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """H&E darkness in magenta, IHC darkness in green: aligned tissue turns grey/black."""
    da = 255 - cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.int32)
    db = 255 - cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.int32)
    out = np.full(a.shape, 255, np.int32)
    out[..., 0] -= db  # red missing where IHC is dark -> green/cyan
    out[..., 1] -= da  # green missing where H&E is dark -> magenta
    out[..., 2] -= db
    return np.clip(out, 0, 255).astype(np.uint8)


def overlay_png(
    path: str,
    he_slide: Slide,
    ihc_slide: Slide,
    registration: Registration | None,
    max_size: int = 768,
    style: str = "checkerboard",
) -> None:
    he, ihc = registered_thumbnails(he_slide, ihc_slide, registration, max_size)
    image = checkerboard(he, ihc) if style == "checkerboard" else two_colour(he, ihc)
    atomic_write_png(path, image)
