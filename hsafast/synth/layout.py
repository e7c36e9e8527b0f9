"""Tissue architecture on a coarse grid: sections, tumour, stroma, necrosis, fat, glands.

Everything here lives in H&E level-0 coordinates. Smooth quantities (how much
tissue, tumour, necrosis or fat is at a place, the collagen direction) are fields
sampled every ``step`` pixels; sharp structures (glands and solid nests) are a list
of ellipses that the renderer draws at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Fraction of the shorter slide side that tissue may reach from the centre, so that
#: any rotation of the consecutive section (plus shift and warp) stays on the glass.
TISSUE_RADIUS = 0.40


@dataclass(frozen=True)
class Layout:
    """The tissue geometry of one case (H&E level-0 pixels)."""

    width: int
    height: int
    step: int  # level-0 pixels per field pixel
    base: np.ndarray  # (fh, fw, 4) float32: tissue, tumour, necrosis, fat
    fibre: np.ndarray  # (fh, fw, 4) float32: weights of the four collagen directions
    ihc: np.ndarray  # (fh, fw, 4) float32: lost in the IHC section, folded, 0, 0
    immune: np.ndarray  # (fh, fw) float32: density of immune cells, 0..1
    orientation: np.ndarray  # (fh, fw) float32: collagen direction, radians
    glands: np.ndarray  # (g, 6) float64: cx, cy, a, b, angle, lumen fraction (0 = nest)
    architecture: str  # "glandular" or "solid"

    def sample(self, field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Nearest field value at level-0 points (zero outside the slide)."""
        fh, fw = field.shape[:2]
        i = np.floor(np.asarray(y) / self.step).astype(np.int64)
        j = np.floor(np.asarray(x) / self.step).astype(np.int64)
        ok = (i >= 0) & (i < fh) & (j >= 0) & (j < fw)
        out = np.zeros(np.shape(x) + field.shape[2:], field.dtype)
        out[ok] = field[i[ok], j[ok]]
        return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    out = cv2.GaussianBlur(noise, (0, 0), max(sigma, 0.5), borderType=cv2.BORDER_REFLECT)
    out -= out.mean()
    return out / (out.std() + 1e-6)


def _quantile_mask(values: np.ndarray, within: np.ndarray, fraction: float) -> np.ndarray:
    if not within.any():
        return np.zeros_like(within)
    cut = np.quantile(values[within], 1.0 - fraction)
    return within & (values >= cut)


def _sections(rng: np.random.Generator, fh: int, fw: int) -> np.ndarray:
    """One or two tissue sections with irregular, lobulated outlines."""
    yy, xx = np.mgrid[0:fh, 0:fw].astype(np.float32)
    cx, cy = fw / 2, fh / 2
    limit = TISSUE_RADIUS * min(fw, fh)
    n_sections = 1 if rng.random() < 0.7 else 2
    wobble = _smooth_noise(rng, (fh, fw), min(fh, fw) / 30)
    tissue = np.zeros((fh, fw), bool)
    for k in range(n_sections):
        if n_sections == 1:
            r0 = limit * rng.uniform(0.75, 0.95)
            sx, sy = cx, cy
        else:
            r0 = limit * rng.uniform(0.42, 0.5)
            ang = rng.uniform(0, np.pi) + k * np.pi
            sx, sy = cx + np.cos(ang) * (limit - r0), cy + np.sin(ang) * (limit - r0)
        elong = rng.uniform(0.65, 1.0)
        rot = rng.uniform(0, np.pi)
        dx, dy = xx - sx, yy - sy
        u = dx * np.cos(rot) + dy * np.sin(rot)
        v = (-dx * np.sin(rot) + dy * np.cos(rot)) / elong
        theta = np.arctan2(v, u)
        radius = np.ones_like(theta)
        for harmonic in range(2, 7):
            radius += rng.uniform(0.0, 0.1 / harmonic**0.5) * np.cos(
                harmonic * theta + rng.uniform(0, 2 * np.pi)
            )
        rho = np.hypot(u, v) / (r0 * radius)
        tissue |= rho + 0.07 * wobble < 1.0
    dist = np.hypot(xx - cx, yy - cy)
    tissue &= dist < limit
    return tissue


def make_layout(
    rng: np.random.Generator,
    width: int,
    height: int,
    px_per_um: float,
    morphology: float,
) -> Layout:
    """Random tissue architecture; ``morphology`` (the case's latent grade) sets crowding."""
    step = max(16, int(np.ceil(max(width, height) / 1536)))
    fh, fw = -(-height // step), -(-width // step)
    um = px_per_um / step  # field pixels per micrometre
    tissue = _sections(rng, fh, fw)

    tumour_noise = _smooth_noise(rng, (fh, fw), 400 * um)
    tumour = _quantile_mask(tumour_noise, tissue, rng.uniform(0.35, 0.6))
    tumour = cv2.morphologyEx(
        tumour.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)
    ).astype(bool)

    necrosis = np.zeros_like(tissue)
    if rng.random() < 0.55:
        inner = cv2.erode(tumour.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        necrosis = _quantile_mask(_smooth_noise(rng, (fh, fw), 120 * um), inner, 0.08)
    fat = np.zeros_like(tissue)
    if rng.random() < 0.6:
        outer = tissue & ~cv2.dilate(tumour.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(
            bool
        )
        fat = _quantile_mask(_smooth_noise(rng, (fh, fw), 250 * um), outer, 0.25)

    # immune cells: a band along the invasive front, lymphoid aggregates, a sprinkle
    not_tumour = (~tumour).astype(np.uint8)
    dist_front = cv2.distanceTransform(not_tumour, cv2.DIST_L2, 5) / um
    front = np.exp(-dist_front / 150.0) * (1 - tumour)
    aggregates = _quantile_mask(_smooth_noise(rng, (fh, fw), 60 * um), tissue & ~tumour, 0.03)
    # Density 1 is one lymphocyte per 6.5-um grid cell (a packed sheet). Stromal TILs
    # run from a few % to >= 50 % of the stromal area (lymphocyte-predominant), densest
    # along the invasive front; intratumoural TILs are a fraction of the stromal ones
    # (Salgado et al., Ann Oncol 2015;26:259-71), hence 0.1 inside the tumour (it was
    # 0.25: as dense as the front band's edge).
    til_level = float(np.clip(0.35 * np.exp(0.55 * morphology), 0.05, 1.0))
    immune = 0.04 + til_level * (0.6 * front + 0.1 * tumour) + 0.9 * aggregates
    immune = np.clip(immune, 0, 1) * tissue * ~necrosis * ~fat

    orientation = (
        np.arctan2(_smooth_noise(rng, (fh, fw), 80 * um), _smooth_noise(rng, (fh, fw), 80 * um))
        / 2.0
    )
    c2, s2 = np.cos(2 * orientation), np.sin(2 * orientation)
    fibre = np.stack(
        [
            np.maximum(c2, 0) ** 2,
            np.maximum(s2, 0) ** 2,
            np.maximum(-c2, 0) ** 2,
            np.maximum(-s2, 0) ** 2,
        ],
        axis=-1,
    )

    loss, fold = _section_damage(rng, tissue, um)
    stacked = np.stack([tissue, tumour, necrosis, fat], axis=-1).astype(np.float32)
    base = np.asarray(cv2.GaussianBlur(stacked, (0, 0), 1.0), np.float32)
    ihc = np.stack([loss, fold, np.zeros_like(loss), np.zeros_like(loss)], -1).astype(np.float32)

    architecture = "glandular" if rng.random() < 0.6 else "solid"
    glands = _glands(rng, tumour & ~necrosis, step, px_per_um, architecture, morphology)
    return Layout(
        width=width,
        height=height,
        step=step,
        base=np.ascontiguousarray(base),
        fibre=np.ascontiguousarray(fibre.astype(np.float32)),
        ihc=np.ascontiguousarray(ihc),
        immune=immune.astype(np.float32),
        orientation=orientation.astype(np.float32),
        glands=glands,
        architecture=architecture,
    )


def _section_damage(
    rng: np.random.Generator, tissue: np.ndarray, um: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where the consecutive (IHC) section lost tissue, and where it folded over."""
    fh, fw = tissue.shape
    loss = np.zeros((fh, fw), np.uint8)
    fold = np.zeros((fh, fw), np.uint8)
    ys, xs = np.nonzero(tissue)
    if len(xs) == 0:
        return loss.astype(bool), fold.astype(bool)
    edge = tissue & ~cv2.erode(tissue.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ey, ex = np.nonzero(edge)
    if rng.random() < 0.5 and len(ex):  # a bite out of the edge
        k = rng.integers(len(ex))
        r = int(rng.uniform(150, 400) * um)
        cv2.circle(loss, (int(ex[k]), int(ey[k])), max(r, 2), 1, -1)
    if rng.random() < 0.3:  # a tear across the section
        a, b = rng.integers(len(xs), size=2)
        cv2.line(
            loss,
            (int(xs[a]), int(ys[a])),
            (int(xs[b]), int(ys[b])),
            1,
            max(1, int(rng.uniform(10, 25) * um)),
        )
    if rng.random() < 0.4 and len(ex):  # a fold along the edge
        k = rng.integers(len(ex))
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(400, 1200) * um
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        cv2.line(
            fold,
            (int(ex[k] - dx), int(ey[k] - dy)),
            (int(ex[k] + dx), int(ey[k] + dy)),
            1,
            max(1, int(rng.uniform(40, 120) * um)),
        )
    return (loss > 0) & tissue, (fold > 0) & tissue & (loss == 0)


def _glands(
    rng: np.random.Generator,
    tumour: np.ndarray,
    step: int,
    px_per_um: float,
    architecture: str,
    morphology: float,
) -> np.ndarray:
    """Glands (ellipses with a lumen) or solid nests, packed on a jittered grid."""
    height, width = tumour.shape[0] * step, tumour.shape[1] * step
    if architecture == "glandular":
        radius_um = rng.uniform(45, 75) * np.exp(0.1 * morphology)
    else:
        radius_um = rng.uniform(70, 130)
    radius = radius_um * px_per_um
    spacing = radius * (2.3 if architecture == "glandular" else 2.2)
    gy, gx = np.mgrid[0:height:spacing, 0:width:spacing]
    gx = gx.ravel() + rng.uniform(-0.25, 0.25, gx.size) * spacing
    gy = gy.ravel() + rng.uniform(-0.25, 0.25, gy.size) * spacing
    fi = np.clip((gy / step).astype(int), 0, tumour.shape[0] - 1)
    fj = np.clip((gx / step).astype(int), 0, tumour.shape[1] - 1)
    keep = tumour[fi, fj]
    gx, gy = gx[keep], gy[keep]
    n = len(gx)
    size = radius * np.exp(rng.normal(0, 0.22, n))
    elong = rng.uniform(0.0, 0.35, n)
    a = size * (1 + elong)
    b = size * (1 - elong)
    angle = rng.uniform(0, np.pi, n)
    if architecture == "glandular":
        lumen = rng.uniform(0.35, 0.62, n) - 0.05 * np.clip(morphology, -2, 2)
    else:
        lumen = np.zeros(n)
    glands = np.stack([gx, gy, a, b, angle, np.clip(lumen, 0, 0.8)], axis=1)
    return _without_overlaps(glands)


def _without_overlaps(glands: np.ndarray, slack: float = 1.04) -> np.ndarray:
    """Drop glands that would overlap one already kept (bounding circles, greedy)."""
    if len(glands) < 2:
        return glands
    from scipy.spatial import cKDTree

    radius = np.maximum(glands[:, 2], glands[:, 3])
    tree = cKDTree(glands[:, :2])
    keep = np.ones(len(glands), bool)
    for i in range(len(glands)):
        if not keep[i]:
            continue
        for j in tree.query_ball_point(glands[i, :2], 2 * radius.max() * slack):
            if j > i and keep[j]:
                gap = np.hypot(*(glands[j, :2] - glands[i, :2]))
                keep[j] = gap >= (radius[i] + radius[j]) * slack
    return glands[keep]
