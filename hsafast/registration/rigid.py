"""Coarse search over every rotation and flip, then affine refinement with ECC.

The search is exhaustive because consecutive sections can be mounted at any
angle and either side up: for each (angle, flip) the moving section's OD is
rotated about its tissue centroid onto the fixed one, the remaining shift comes
from an FFT cross-correlation (so extra tissue, such as a control core, does not
drag the alignment as a centroid would), and the normalised peak scores the
candidate. The best few candidates are refined by OpenCV's ECC at the coarsest
pyramid level and the winner through the whole pyramid (MOTION_AFFINE).

Matrices are 3x3 and map *fixed* (H&E) working-pixel indices to *moving* (IHC)
ones, the convention of ``cv2.findTransformECC``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from hsafast.registration.representation import scale_matrix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    matrix: np.ndarray  #: 3x3 fixed -> moving, working pixels
    score: float  #: normalised cross-correlation peak of the coarse OD images
    angle: float  #: degrees, counter-clockwise in image coordinates
    flip: bool  #: moving section mirrored left-right before rotation


def _resize(image: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``factor``; also return the 3x3 map from new to old pixel indices."""
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size == (w, h):
        return image, np.eye(3)
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return out, scale_matrix(w / size[0], h / size[1])


def _centroid(weights: np.ndarray) -> np.ndarray:
    total = float(weights.sum())
    if total <= 0:
        return np.array([weights.shape[1] / 2.0, weights.shape[0] / 2.0])
    ys, xs = np.indices(weights.shape)
    return np.array([(xs * weights).sum() / total, (ys * weights).sum() / total])


def _linear(angle_deg: float, flip: bool) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return rot @ np.diag([-1.0, 1.0]) if flip else rot


def coarse_candidates(
    fixed_od: np.ndarray,
    moving_od: np.ndarray,
    size: int,
    angle_step: float,
    flips: bool,
    keep: int = 3,
) -> list[Candidate]:
    """Score every (angle, flip); return the best ``keep`` distinct candidates."""
    factor = size / max(fixed_od.shape)
    f_small, f_back = _resize(fixed_od, factor)
    m_small, m_back = _resize(moving_od, factor)
    f_small = cv2.GaussianBlur(f_small, (0, 0), 1.0)
    m_small = cv2.GaussianBlur(m_small, (0, 0), 1.0)
    h, w = f_small.shape
    # the fixed image sits in the middle of a canvas twice its size, so that
    # the circular correlation sees shifts of up to half the image unambiguously
    off = np.array([w // 2, h // 2], dtype=float)
    canvas = np.zeros((2 * h, 2 * w), np.float32)
    canvas[h // 2 : h // 2 + h, w // 2 : w // 2 + w] = f_small
    f_fft = np.fft.rfft2(canvas)
    f_norm = float(np.sqrt((canvas * canvas).sum())) + 1e-12
    c_fixed, c_moving = _centroid(f_small), _centroid(m_small)

    scored: list[tuple[float, float, bool, np.ndarray]] = []
    for flip in (False, True) if flips else (False,):
        for angle in np.arange(0.0, 360.0, angle_step):
            lin = _linear(float(angle), flip)
            # canvas u -> fixed x = u - off -> moving L (x - c_fixed) + c_moving
            to_moving = np.c_[lin, c_moving - lin @ (c_fixed + off)]
            warped = cv2.warpAffine(
                m_small, to_moving, (2 * w, 2 * h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            )
            g_norm = float(np.sqrt((warped * warped).sum())) + 1e-12
            corr = np.fft.irfft2(np.conj(f_fft) * np.fft.rfft2(warped), canvas.shape)
            iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
            shift = np.array(
                [ix if ix < w else ix - 2 * w, iy if iy < h else iy - 2 * h], dtype=float
            )
            small = np.eye(3)
            small[:2, :2] = lin
            small[:2, 2] = lin @ (shift - c_fixed) + c_moving
            score = float(corr[iy, ix]) / (f_norm * g_norm)
            scored.append((score, float(angle), flip, m_back @ small @ np.linalg.inv(f_back)))
    scored.sort(key=lambda s: -s[0])
    picked: list[Candidate] = []
    for score, angle, flip, matrix in scored:
        distinct = all(
            c.flip != flip or abs((c.angle - angle + 180.0) % 360.0 - 180.0) > 2 * angle_step
            for c in picked
        )
        if distinct:
            picked.append(Candidate(matrix, score, angle, flip))
        if len(picked) == keep:
            break
    return picked


def refine_affine(
    fixed: np.ndarray,
    moving: np.ndarray,
    init: np.ndarray,
    levels: tuple[int, ...],
    iterations: int,
) -> tuple[np.ndarray, float]:
    """ECC affine refinement through a pyramid; returns (3x3 matrix, final correlation).

    A level where ECC does not converge keeps the estimate of the level before
    (correlation NaN when no level converged).
    """
    matrix = np.asarray(init, dtype=np.float64)
    cc = float("nan")
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6)
    for level in levels:
        f_img, f_back = _resize(fixed, 1.0 / level)
        m_img, m_back = _resize(moving, 1.0 / level)
        local = np.linalg.inv(m_back) @ matrix @ f_back
        warp = local[:2].astype(np.float32)
        try:
            cc, warp = cv2.findTransformECC(
                f_img,
                m_img,
                warp,
                cv2.MOTION_AFFINE,
                criteria,
                None,
                1,  # type: ignore[call-overload]
            )
        except cv2.error as exc:
            log.debug("ECC did not converge at downsample %d: %s", level, exc)
            continue
        local = np.vstack([warp.astype(np.float64), [0.0, 0.0, 1.0]])
        matrix = m_back @ local @ np.linalg.inv(f_back)
    return matrix, float(cc)
