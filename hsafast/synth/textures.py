"""Periodic texture tiles (collagen fibres, chromatin, fat, debris, sensor noise).

Textures are generated once per process from a fixed seed by filtering white noise
in the Fourier domain, so that they tile seamlessly. Each is stored twice as wide
and tall as its period, which makes any block up to one period in size a plain
slice (no copy) at any offset. Slides differ by where they sample the tiles.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

#: Texture period in pixels; also the widest block a renderer may ask for.
PERIOD = 1024
#: Angles (radians) of the oriented collagen textures.
FIBRE_ANGLES = tuple(np.pi * k / 4 for k in range(4))


def _filtered_noise(rng: np.random.Generator, transfer: np.ndarray) -> np.ndarray:
    noise = rng.standard_normal((PERIOD, PERIOD))
    out = np.fft.irfft2(np.fft.rfft2(noise) * transfer, s=(PERIOD, PERIOD))
    out -= out.mean()
    out /= out.std() + 1e-12
    return out


def _frequencies() -> tuple[np.ndarray, np.ndarray]:
    fy = np.fft.fftfreq(PERIOD)[:, None]
    fx = np.fft.rfftfreq(PERIOD)[None, :]
    return fx, fy


def _gaussian(sigma_along: float, sigma_across: float, angle: float) -> np.ndarray:
    """Fourier transfer of an oriented Gaussian blur (sigmas in pixels)."""
    fx, fy = _frequencies()
    c, s = np.cos(angle), np.sin(angle)
    f_along = fx * c + fy * s
    f_across = -fx * s + fy * c
    return np.exp(-2 * np.pi**2 * (sigma_along**2 * f_along**2 + sigma_across**2 * f_across**2))


def _double(a: np.ndarray) -> np.ndarray:
    reps = (2, 2) + (1,) * (a.ndim - 2)
    return np.ascontiguousarray(np.tile(a, reps))


def _voronoi_membranes(rng: np.random.Generator, spacing: float) -> np.ndarray:
    """Thin walls between periodic Voronoi cells: adipocytes seen in section."""
    n = max(4, int((PERIOD / spacing) ** 2))
    seeds = rng.uniform(0, PERIOD, (n, 2))
    margin = int(spacing * 2)
    size = PERIOD + 2 * margin
    canvas = np.ones((size, size), np.uint8)
    for dy in (-PERIOD, 0, PERIOD):
        for dx in (-PERIOD, 0, PERIOD):
            p = seeds + np.array([dx + margin, dy + margin])
            keep = (p >= 0).all(1) & (p < size).all(1)
            q = p[keep].astype(int)
            canvas[q[:, 1], q[:, 0]] = 0
    _, labels = cv2.distanceTransformWithLabels(
        canvas, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    # label ids differ between the copies of one seed, so compare seed identities
    ident = np.zeros(labels.max() + 1, np.int64)
    ys, xs = np.nonzero(canvas == 0)
    ident[labels[ys, xs]] = np.arange(len(ys))
    seed_of = ident[labels]
    pos = np.stack([xs, ys], 1) - margin
    seed_id = np.rint(pos[:, 0] % PERIOD).astype(np.int64) * PERIOD * 4 + np.rint(
        pos[:, 1] % PERIOD
    ).astype(np.int64)
    seed_of = seed_id[seed_of]
    edge = np.zeros_like(seed_of, dtype=bool)
    edge[:-1] |= seed_of[:-1] != seed_of[1:]
    edge[:, :-1] |= seed_of[:, :-1] != seed_of[:, 1:]
    cropped = edge[margin : margin + PERIOD, margin : margin + PERIOD].astype(np.float32)
    wall = np.asarray(cv2.dilate(cropped, np.ones((2, 2), np.uint8)), np.float32)
    return np.clip(cv2.GaussianBlur(wall, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT) * 1.6, 0, 1)


@dataclass(frozen=True)
class TextureBank:
    """Seamless textures, each shaped (2*PERIOD, 2*PERIOD[, 3])."""

    grain: np.ndarray  # float32, zero mean, unit sd, fine
    blotch: np.ndarray  # float32, zero mean, unit sd, coarse (tens of um)
    chromatin: np.ndarray  # float32 multiplier around 1
    fibres: tuple[np.ndarray, ...]  # float32 0..1, one per FIBRE_ANGLES
    fat: np.ndarray  # float32 0..1 adipocyte walls
    debris: np.ndarray  # float32 0..1 nuclear dust of necrosis
    noise_up: np.ndarray  # uint8 (.., 4) positive part of sensor noise (RGBA, A = 0)
    noise_down: np.ndarray  # uint8 (.., 4) negative part

    def window(self, name: str, x: int, y: int, w: int, h: int) -> np.ndarray:
        """A (h, w) view of texture ``name`` whose top-left is at slide pixel (x, y)."""
        tex = getattr(self, name)
        ox, oy = x % PERIOD, y % PERIOD
        return tex[oy : oy + h, ox : ox + w]

    def window_fibre(self, k: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """A window of the collagen texture running along ``FIBRE_ANGLES[k]``."""
        ox, oy = (x + 311 * k) % PERIOD, (y + 173 * k) % PERIOD
        return self.fibres[k][oy : oy + h, ox : ox + w]


@functools.lru_cache(maxsize=4)
def texture_bank(px_per_um: float = 2.0, noise_sigma: float = 2.0) -> TextureBank:
    """The process-wide texture bank for one pixel size (built once, about a second)."""
    rng = np.random.default_rng(20240611)
    s = px_per_um
    grain = _filtered_noise(rng, _gaussian(0.7, 0.7, 0.0))
    blotch = _filtered_noise(rng, _gaussian(12 * s, 12 * s, 0.0))
    chrom = _filtered_noise(rng, _gaussian(0.5 * s, 0.5 * s, 0.0))
    chromatin = np.clip(1.0 + 0.28 * chrom, 0.45, 1.6)
    fibres = []
    coarse = _filtered_noise(rng, _gaussian(25 * s, 25 * s, 0.0))
    for angle in FIBRE_ANGLES:
        f = _filtered_noise(rng, _gaussian(9 * s, 0.9 * s, angle))
        g = _filtered_noise(rng, _gaussian(3 * s, 0.5 * s, angle))
        v = 0.55 + 0.28 * f + 0.12 * g + 0.1 * coarse
        fibres.append(_double(np.clip(v, 0.0, 1.0).astype(np.float32)))
    fat = _voronoi_membranes(rng, 38 * s)
    dust = _filtered_noise(rng, _gaussian(0.9 * s, 0.9 * s, 0.0))
    debris = np.clip((dust - 1.6) * 1.2, 0.0, 1.0)
    noise = rng.normal(0.0, noise_sigma, (PERIOD, PERIOD, 4))
    noise[..., 3] = 0
    up = np.clip(np.rint(noise), 0, 255).astype(np.uint8)
    down = np.clip(np.rint(-noise), 0, 255).astype(np.uint8)
    f32 = np.float32
    return TextureBank(
        grain=_double(grain.astype(f32)),
        blotch=_double(blotch.astype(f32)),
        chromatin=_double(chromatin.astype(f32)),
        fibres=tuple(fibres),
        fat=_double(fat.astype(f32)),
        debris=_double(debris.astype(f32)),
        noise_up=_double(up),
        noise_down=_double(down),
    )
