"""The true geometric relation between an H&E section and its consecutive IHC section.

``ihc = A @ (x, y, 1) + d(x, y)``: an affine map ``A`` (rotation by any angle,
shift, mild scale and shear, sometimes a mirror flip) plus a smooth displacement
``d`` in IHC pixels, stored on a coarse grid over H&E level-0 coordinates (node
``(i, j)`` at ``(j * step, i * step)``) and interpolated bilinearly. The inverse is
found by fixed-point iteration, which converges because ``d`` is small and smooth.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Deformation:
    affine: np.ndarray  # (3, 3) float64, H&E level-0 -> IHC level-0
    displacement: np.ndarray  # (gh, gw, 2) float32, dx, dy in IHC pixels
    step: float  # H&E level-0 pixels between displacement nodes
    params: dict[str, float]

    @property
    def linear(self) -> np.ndarray:
        return self.affine[:2, :2]

    def displacement_at(self, xy: np.ndarray) -> np.ndarray:
        """Bilinear displacement at H&E points (N, 2); constant beyond the grid's edge."""
        return bilinear(self.displacement, np.asarray(xy, np.float64) / self.step)

    def forward(self, xy: np.ndarray) -> np.ndarray:
        """H&E level-0 points (N, 2) -> IHC level-0 points."""
        p = np.asarray(xy, np.float64).reshape(-1, 2)
        return p @ self.linear.T + self.affine[:2, 2] + self.displacement_at(p)

    def inverse(self, xy: np.ndarray, iterations: int = 8) -> np.ndarray:
        """IHC level-0 points (N, 2) -> H&E level-0 points."""
        q = np.asarray(xy, np.float64).reshape(-1, 2)
        inv = np.linalg.inv(self.affine)
        base = q @ inv[:2, :2].T + inv[:2, 2]
        p = base
        for _ in range(iterations):
            p = base - self.displacement_at(p) @ inv[:2, :2].T
        return p


def bilinear(grid: np.ndarray, ij_xy: np.ndarray) -> np.ndarray:
    """Sample a (gh, gw, C) grid at fractional (x, y) node coordinates, clamped."""
    gh, gw = grid.shape[:2]
    x = np.clip(ij_xy[:, 0], 0, gw - 1)
    y = np.clip(ij_xy[:, 1], 0, gh - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(gw - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(gh - 2, 0))
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    x1 = np.minimum(x0 + 1, gw - 1)
    y1 = np.minimum(y0 + 1, gh - 1)
    g = grid
    top = g[y0, x0] * (1 - fx) + g[y0, x1] * fx
    bottom = g[y1, x0] * (1 - fx) + g[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def random_deformation(
    rng: np.random.Generator,
    width: int,
    height: int,
    warp: float = 1.0,
    max_shift: float = 0.03,
) -> Deformation:
    """A random consecutive-section transform for a ``width`` x ``height`` slide.

    ``warp`` scales the non-rigid part (largest displacement about 0.4% of the
    slide's longer side at 1.0); ``max_shift`` bounds the translation as a fraction
    of each side.
    """
    angle = float(rng.uniform(0.0, 360.0))
    scale = float(rng.uniform(0.96, 1.04))
    shear = float(rng.uniform(-0.04, 0.04))
    flip = bool(rng.random() < 0.25)
    tx = float(rng.uniform(-max_shift, max_shift) * width)
    ty = float(rng.uniform(-max_shift, max_shift) * height)
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    lin = rot @ np.array([[scale, shear], [0.0, scale]]) @ np.diag([-1.0 if flip else 1.0, 1.0])
    centre = np.array([width / 2, height / 2])
    affine = np.eye(3)
    affine[:2, :2] = lin
    affine[:2, 2] = centre + np.array([tx, ty]) - lin @ centre

    step = float(np.ceil(max(width, height) / 48))
    gh, gw = int(np.ceil(height / step)) + 1, int(np.ceil(width / step)) + 1
    noise = rng.standard_normal((gh, gw, 2)).astype(np.float32)
    field = np.asarray(
        cv2.GaussianBlur(noise, (0, 0), 5.0, borderType=cv2.BORDER_REFLECT), np.float32
    )
    peak = float(np.abs(field).max()) + 1e-12
    amplitude = warp * rng.uniform(0.5, 1.0) * 0.004 * max(width, height)
    field *= amplitude / peak
    params = {
        "rotation_deg": angle,
        "scale": scale,
        "shear": shear,
        "flip_x": float(flip),
        "shift_x": tx,
        "shift_y": ty,
        "max_displacement_px": float(np.abs(field).max()),
    }
    return Deformation(affine=affine, displacement=field, step=step, params=params)
