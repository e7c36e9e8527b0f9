"""Small synthetic H-DAB tiles with known cells, for testing cell-level stain reading.

:func:`render_ihc_tile` composes hematoxylin and DAB concentration maps by
Beer-Lambert's law (``I = 255 * 10**-(C @ rgb_from_stains)``) with known nuclei
and known positivity, then blurs, adds noise and JPEG-compresses, so that every
cell-level measure can be checked against its truth. Whole simulated slides come
from :func:`hsafast.synth.make_cohort`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hsafast.stain.vectors import HED, StainMatrix


@dataclass(frozen=True)
class SyntheticTile:
    rgb: np.ndarray
    """H x W x 3 uint8."""
    cells_xy: np.ndarray
    """K x 2 true nucleus centres (x, y)."""
    positive: np.ndarray
    """K bools: the cell is DAB-positive."""
    dab_true: np.ndarray
    """H x W true DAB concentration (log10 OD) before blur and noise."""


def render_ihc_tile(
    size: int = 256,
    *,
    mpp: float = 0.5,
    positive_fraction: float = 0.3,
    compartment: Literal["nuclear", "membranous", "cytoplasmic"] = "nuclear",
    density: float = 0.6,
    nucleus_radius_um: float = 3.5,
    positive_od: tuple[float, float] = (0.35, 0.9),
    jpeg_quality: int | None = 85,
    spacing: float | None = None,
    background_dab: float = 0.0,
    matrix: StainMatrix = HED,
    seed: int = 0,
) -> SyntheticTile:
    """A realistic H-DAB tile with known cells; ``density`` is the area share of cells.

    ``spacing`` is the least distance between nucleus centres, in nucleus radii
    (default 2.6 nuclear, 3.4 membranous and cytoplasmic; 2.0 lets nuclei touch), and
    ``background_dab`` adds non-specific DAB (log10 OD) to the whole tile. A positive
    cytoplasmic cell has DAB in a cell body about twice its nucleus across, and a
    little over the nucleus (cytoplasm above and below it in the section).
    """
    import cv2

    rng = np.random.default_rng(seed)
    r_px = nucleus_radius_um / mpp
    if spacing is None:
        spacing = 2.6 if compartment == "nuclear" else 3.4
    spacing *= r_px
    n_target = int(density * size * size / (np.pi * (spacing / 2) ** 2))
    centres: list[tuple[float, float]] = []
    for _ in range(n_target * 30):
        if len(centres) >= n_target:
            break
        c = rng.uniform(r_px, size - r_px, 2)
        if all((c[0] - x) ** 2 + (c[1] - y) ** 2 >= spacing**2 for x, y in centres):
            centres.append((float(c[0]), float(c[1])))
    xy = np.array(centres, dtype=np.float64).reshape(-1, 2)
    positive = rng.random(len(xy)) < positive_fraction

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    hema = 0.04 + 0.03 * cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 4)
    dab = np.full((size, size), background_dab, np.float32)
    if background_dab > 0:
        dab *= 0.5 + cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 6)
    for (cx, cy), pos in zip(xy, positive, strict=True):
        a = r_px * rng.uniform(0.85, 1.15)
        b = a * rng.uniform(0.7, 1.0)
        th = rng.uniform(0, np.pi)
        dx, dy = xx - cx, yy - cy
        u = (dx * np.cos(th) + dy * np.sin(th)) / a
        v = (-dx * np.sin(th) + dy * np.cos(th)) / b
        inside = (u * u + v * v) <= 1.0
        chromatin = 1.0 + 0.15 * rng.standard_normal(inside.sum()).astype(np.float32)
        if compartment == "nuclear" and pos:
            dab[inside] += rng.uniform(*positive_od) * chromatin
            hema[inside] += 0.15 * chromatin
        else:
            hema[inside] += rng.uniform(0.25, 0.55) * chromatin
        if compartment == "cytoplasmic" and pos:
            k = rng.uniform(1.9, 2.3)
            body = (u * u + v * v) <= k * k
            load = rng.uniform(*positive_od)
            texture = 1.0 + 0.2 * rng.standard_normal(int(body.sum())).astype(np.float32)
            dab[body] += load * texture * np.where(inside[body], rng.uniform(0.0, 0.3), 1.0)
        if compartment == "membranous" and pos:
            rr = np.hypot(dx, dy)
            ring_r = a * 1.35 + 0.5 / mpp
            ang = np.arctan2(dy, dx)
            start, span = rng.uniform(-np.pi, np.pi), rng.uniform(0.6, 1.0) * 2 * np.pi
            arc = np.mod(ang - start, 2 * np.pi) <= span
            ring = (np.abs(rr - ring_r) <= 0.6 / mpp) & arc
            dab[ring] += rng.uniform(*positive_od)
    dab_true = dab.copy()
    conc = np.stack([hema, np.zeros_like(hema), dab], axis=-1)
    if matrix.names != ("hematoxylin", "eosin", "dab"):
        conc = conc[..., [matrix.index(n) for n in ("hematoxylin", "eosin", "dab")]]
    od = conc @ matrix.rgb_from_stains.astype(np.float32)
    rgb = 255.0 * np.power(10.0, -od)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 0.6) + rng.normal(0, 2.0, rgb.shape)
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        _, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        out = np.ascontiguousarray(np.asarray(decoded)[..., ::-1])
    return SyntheticTile(out, xy, positive, dab_true)
