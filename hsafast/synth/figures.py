"""Preview images of simulated pairs, for documentation and for eyeballing a cohort.

``pair_views(cohort_dir, case_id)`` returns the H&E and IHC thumbnails and a 20x
crop of both slides around a tumour nucleus, the IHC crop resampled into the H&E
frame through the true transform, so that the same cells sit side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hsafast.slides import open_slide
from hsafast.synth.truth import load_truth


@dataclass
class PairViews:
    he_thumb: np.ndarray
    ihc_thumb: np.ndarray
    he_crop: np.ndarray
    ihc_crop: np.ndarray  # registered into the H&E crop's frame
    ihc_crop_raw: np.ndarray  # as scanned, around the corresponding point


def pair_views(
    cohort_dir: str | os.PathLike[str],
    case_id: str,
    thumb: int = 512,
    crop: tuple[int, int] = (480, 320),
    downsample: int = 1,
    landmark: int = 0,
) -> PairViews:
    """Thumbnails and a crop pair (``downsample`` 1 = 20x at 0.5 um/px, 2 = 10x).

    The crop is centred on a tumour cell in a crowded spot (``landmark`` picks among
    the most crowded ones).
    """
    root = Path(cohort_dir)
    truth = load_truth(root, case_id)
    he_path = root / "slides" / f"{case_id}_HE.tif"
    ihc_path = root / "slides" / f"{case_id}_IHC.tif"
    w, h = crop[0] * downsample, crop[1] * downsample
    cx, cy = _tumour_centre(truth.cells, landmark)
    x0, y0 = int(cx - w / 2), int(cy - h / 2)
    with open_slide(he_path) as he, open_slide(ihc_path) as ihc:
        he_thumb, _ = he.thumbnail(thumb)
        ihc_thumb, _ = ihc.thumbnail(thumb)
        he_crop = he.read_region((x0, y0), 0, (w, h))
        # where every H&E crop pixel lies in the IHC slide
        gx, gy = np.meshgrid(np.arange(x0, x0 + w) + 0.5, np.arange(y0, y0 + h) + 0.5)
        q = truth.map_he_to_ihc(np.stack([gx.ravel(), gy.ravel()], 1))
        qx, qy = q[:, 0].reshape(h, w), q[:, 1].reshape(h, w)
        bx0, by0 = int(np.floor(qx.min())) - 2, int(np.floor(qy.min())) - 2
        bw, bh = int(np.ceil(qx.max())) - bx0 + 3, int(np.ceil(qy.max())) - by0 + 3
        region = ihc.read_region((bx0, by0), 0, (bw, bh))
        ihc_crop = cv2.remap(
            region,
            (qx - bx0 - 0.5).astype(np.float32),
            (qy - by0 - 0.5).astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        mx, my = truth.map_he_to_ihc(np.array([[cx, cy]]))[0]
        ihc_raw = ihc.read_region((int(mx - w / 2), int(my - h / 2)), 0, (w, h))
    if downsample > 1:
        size = (crop[0], crop[1])
        he_crop = cv2.resize(he_crop, size, interpolation=cv2.INTER_AREA)
        ihc_crop = cv2.resize(ihc_crop, size, interpolation=cv2.INTER_AREA)
        ihc_raw = cv2.resize(ihc_raw, size, interpolation=cv2.INTER_AREA)
    return PairViews(he_thumb, ihc_thumb, he_crop, ihc_crop, ihc_raw)


def _tumour_centre(cells: dict[str, np.ndarray], rank: int) -> tuple[float, float]:
    from scipy.spatial import cKDTree

    keep = (cells["type"] == "tumour") & (cells["in_ihc"] == 1)
    if not keep.any():
        keep = cells["in_ihc"] == 1
    xy = np.stack([cells["he_x"][keep], cells["he_y"][keep]], 1)
    crowd = np.array([len(n) for n in cKDTree(xy).query_ball_point(xy, 120.0)])
    order = np.argsort(-crowd, kind="stable")
    pick = order[min(rank * 97, len(order) - 1)]
    return float(xy[pick, 0]), float(xy[pick, 1])


def mosaic(rows: list[list[np.ndarray]], gap: int = 6) -> np.ndarray:
    """Images in a grid on white, each row's cells padded to the row's tallest."""
    widths = [sum(im.shape[1] for im in row) + gap * (len(row) - 1) for row in rows]
    heights = [max(im.shape[0] for im in row) for row in rows]
    out = np.full((sum(heights) + gap * (len(rows) - 1), max(widths), 3), 255, np.uint8)
    y = 0
    for row, rh in zip(rows, heights, strict=True):
        x = 0
        for im in row:
            out[y : y + im.shape[0], x : x + im.shape[1]] = im
            x += im.shape[1] + gap
        y += rh + gap
    return out
