"""A smooth displacement field on top of the affine alignment.

Consecutive sections stretch and fold a little, so an affine map leaves errors
of several cell widths. After the affine stage, the IHC section is warped onto
the H&E grid and OpenCV's Farneback optical flow runs between the two
tissue/lumen images (``structure_image``): binarising first removes the stain
difference that would break the flow's brightness-constancy assumption.

Where to split tissue from lumen is a choice without a right answer (pale
tissue and thin walls fall on either side), and each choice draws a slightly
different set of edges, whose flows err independently. The flow is therefore
estimated once per threshold (``quantiles``) and the flows are averaged, which
removes most of the error that belongs to one threshold. The mean flow is then
regularised with a tissue-weighted Gaussian (normalised convolution), so that
glass, where the flow is meaningless, borrows from the tissue nearby.

The field ``D`` lives on the H&E working grid: the H&E working pixel ``p``
corresponds to the affine-warped IHC at ``p + D(p)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from scipy.ndimage import map_coordinates


def _to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0, 0, 255).astype(np.uint8)


def structure_flow(
    fixed_structure: np.ndarray,
    moving_structure: np.ndarray,
    blur: float,
    window: int,
    downsample: int = 1,
) -> np.ndarray:
    """Raw (H, W, 2) Farneback flow from ``fixed`` to ``moving`` (same grid, values 0-1).

    ``blur`` and ``window`` are in pixels of the given grid; the flow itself
    runs ``downsample`` times coarser (it is smoothed afterwards anyway) and is
    brought back by bilinear interpolation.
    """
    h, w = fixed_structure.shape
    a = cv2.GaussianBlur(fixed_structure, (0, 0), blur)
    b = cv2.GaussianBlur(moving_structure, (0, 0), blur)
    if downsample > 1:
        size = (max(1, w // downsample), max(1, h // downsample))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    window = max(5, int(window) // downsample) | 1
    flow = np.zeros((*a.shape, 2), np.float32)
    flow = cv2.calcOpticalFlowFarneback(
        _to_u8(a), _to_u8(b), flow, 0.5, 5, window, 5, 5, 1.1, cv2.OPTFLOW_FARNEBACK_GAUSSIAN
    )
    if downsample > 1:
        fx, fy = w / flow.shape[1], h / flow.shape[0]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= fx
        flow[..., 1] *= fy
    return flow


def estimate_field(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    weight: np.ndarray,
    blur: float,
    window: int,
    sigma: float,
    downsample: int = 1,
    workers: int = 1,
) -> np.ndarray:
    """(H, W, 2) float32 displacement from fixed to moving: the mean of the flows of
    each (fixed, moving) structure pair (one per threshold), smoothed by ``sigma``.

    The flows are independent, so up to ``workers`` run at once (OpenCV's
    Farneback releases the GIL but uses one core).
    """
    if not pairs:
        raise ValueError("estimate_field needs at least one pair of structure images")

    def flow_of(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return structure_flow(pair[0], pair[1], blur, window, downsample)

    flows: list[np.ndarray]
    if workers > 1 and len(pairs) > 1:
        with ThreadPoolExecutor(min(workers, len(pairs))) as pool:
            flows = list(pool.map(flow_of, pairs))
    else:
        flows = [flow_of(p) for p in pairs]
    mean = np.asarray(np.mean(flows, axis=0, dtype=np.float32))
    return smooth_field(mean, weight, sigma)


def smooth_field(field: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Weighted Gaussian smoothing: sum(w * f) / sum(w), both blurred by ``sigma``."""
    w = weight.astype(np.float32)
    norm = cv2.GaussianBlur(w, (0, 0), sigma)
    if float(norm.max()) <= 0:
        return np.zeros_like(field, dtype=np.float32)
    norm = np.maximum(norm, 1e-3 * float(norm.max()))
    out = np.empty(field.shape, np.float32)
    for i in range(2):
        out[..., i] = cv2.GaussianBlur(field[..., i] * w, (0, 0), sigma) / norm
    return out


def sample_field(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear values of ``field`` at (N, 2) pixel-index points (x, y), edges clamped."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    coords = [pts[:, 1], pts[:, 0]]
    return np.stack(
        [map_coordinates(field[..., i], coords, order=1, mode="nearest") for i in range(2)],
        axis=1,
    )
