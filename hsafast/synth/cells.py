"""Cells: where every nucleus is, what it is, and how it looks in H&E.

Each cell carries a latent morphological state ``m`` (case grade + gland/nest
effect + cell noise). ``m`` is what H&E shows: larger, darker, more irregular
nuclei, prominent nucleoli, mitoses, more crowding. Expression is decided later
(:mod:`hsafast.synth.markers`) from a second latent that is tied to ``m`` only as
strongly as the cohort's ``predictability`` asks.

Nucleus sizes are drawn wider than what the stain reader assumes of each cell type
(``hsafast.stain.CellConfig``: carcinoma nuclei >= 38 um^2, 58 for p53 and PD-L1,
and >= 4 um wide, small lymphocytes 27-29 um^2, spindle nuclei 2.7 um thick), so that
its tumour-like rule meets the overlaps real tissue has:

* carcinoma: a per-case size factor (x0.9-1.12 linear) on top of the grade effect and
  per-cell pleomorphism: per-case median areas of about 40-70 um^2, 5-95 % ranges of
  about 26-120 um^2 (published means of carcinoma nuclei in sections: 44, 48 and
  72 um^2 for low, intermediate and high nuclear grade; Mod Pathol 2001;14:937);
* immune cells: small lymphocytes with round nuclei 5-7 um across (20-38 um^2, mean
  29; published in sections: 27-29 um^2, SD 2-3, Baek et al., Korean J Hematol 2010),
  and 10 % larger mononuclear cells (activated lymphocytes, plasma cells, macrophages)
  with paler oval nuclei 7-10 um long, which reach carcinoma sizes;
* fibroblasts: spindles 10-20 um long and 2-5 um wide (plump, activated ones included).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.spatial import cKDTree

from hsafast.synth.layout import Layout

TUMOUR, STROMA, IMMUNE = 0, 1, 2
CELL_TYPES = ("tumour", "stroma", "immune")


@dataclass
class Cells:
    """Struct of arrays, one entry per cell (H&E level-0 pixels)."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray  # nucleus semi-axis along ``angle``
    b: np.ndarray  # nucleus semi-axis across
    angle: np.ndarray
    kind: np.ndarray  # int8: TUMOUR, STROMA, IMMUNE
    group: np.ndarray  # int32: gland/nest index, -1 outside
    darkness: np.ndarray  # hematoxylin load of the nucleus, ~0.6-1.3
    irregularity: np.ndarray  # outline jitter, 0.03-0.4
    nucleolus: np.ndarray  # bool: prominent nucleolus
    mitosis: np.ndarray  # bool
    m: np.ndarray  # latent morphological state
    cell_scale: np.ndarray  # cell-body radius / nucleus radius (membranes, cytoplasm)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> Cells:
        return Cells(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Cells]) -> Cells:
        return Cells(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Cells)}
        )


def _ring_cells(
    glands: np.ndarray, spacing: float, rng: np.random.Generator, rows: int, px_per_um: float
) -> tuple[np.ndarray, ...]:
    """Columnar epithelium: nuclei along each gland's wall, long axis pointing radially."""
    xs, ys, angles, groups = [], [], [], []
    for g, (cx, cy, a, b, rot, lumen) in enumerate(glands):
        perimeter = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
        for row in range(rows):
            n = max(6, int(perimeter * (0.8 + 0.04 * row) / spacing))
            t = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
            t = t + rng.normal(0, 0.25 / n * 2 * np.pi, n)
            # stratified rows stand one nucleus length apart (12 um, at most 45 % of the
            # epithelium): in a 4-um section nuclei of two rows overlap at their ends
            # only, never as a continuous band of two stacked nuclei
            thickness = (1 - lumen) * 0.5 * (a + b)
            row_step = min(0.45, 12.0 * px_per_um / max(thickness, 1e-6))
            depth = lumen + (1 - lumen) * (0.76 - row_step * row) + rng.normal(0, 0.03, n)
            ex, ey = a * np.cos(t) * depth, b * np.sin(t) * depth
            c, s = np.cos(rot), np.sin(rot)
            xs.append(cx + ex * c - ey * s)
            ys.append(cy + ex * s + ey * c)
            normal = np.arctan2(a * np.sin(t), b * np.cos(t)) + rot
            angles.append(normal + rng.normal(0, 0.15, n))
            groups.append(np.full(n, g, np.int32))
    if not xs:
        empty = np.zeros(0)
        return empty, empty, empty, np.zeros(0, np.int32)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(angles), np.concatenate(groups)


def _nest_cells(
    glands: np.ndarray, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Solid nests: nuclei on a jittered hexagonal packing inside each ellipse."""
    xs, ys, groups = [], [], []
    for g, (cx, cy, a, b, rot, _) in enumerate(glands):
        r = max(a, b)
        gy, gx = np.mgrid[-r : r : spacing * 0.866, -r:r:spacing]
        gx = gx + (np.arange(gx.shape[0])[:, None] % 2) * spacing / 2
        px = gx.ravel() + rng.normal(0, 0.12 * spacing, gx.size)
        py = gy.ravel() + rng.normal(0, 0.12 * spacing, gy.size)
        c, s = np.cos(rot), np.sin(rot)
        u, v = px * c + py * s, -px * s + py * c
        inside = (u / (a * 0.93)) ** 2 + (v / (b * 0.93)) ** 2 < 1
        xs.append(cx + px[inside])
        ys.append(cy + py[inside])
        groups.append(np.full(int(inside.sum()), g, np.int32))
    if not xs:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, np.int32)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x, y, np.concatenate(groups)


def inside_glands(
    glands: np.ndarray, x: np.ndarray, y: np.ndarray, pad: float = 1.05
) -> np.ndarray:
    """Whether points fall inside any gland or nest ellipse (scaled by ``pad``)."""
    inside = np.zeros(len(x), bool)
    if len(glands) == 0 or len(x) == 0:
        return inside
    tree = cKDTree(glands[:, :2])
    k = min(4, len(glands))
    _, idx = tree.query(np.stack([x, y], 1), k=k)
    idx = idx.reshape(len(x), k)
    for col in range(k):
        g = glands[idx[:, col]]
        dx, dy = x - g[:, 0], y - g[:, 1]
        c, s = np.cos(g[:, 4]), np.sin(g[:, 4])
        u, v = dx * c + dy * s, -dx * s + dy * c
        inside |= (u / (g[:, 2] * pad)) ** 2 + (v / (g[:, 3] * pad)) ** 2 < 1
    return inside


def _scattered(
    layout: Layout,
    rng: np.random.Generator,
    spacing: float,
    density: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Points on a jittered grid kept with probability ``density`` (a field), row band by band."""
    xs, ys = [], []
    band = max(spacing, 4096.0)
    for y0 in np.arange(0, layout.height, band):
        gy, gx = np.mgrid[y0 : min(y0 + band, layout.height) : spacing, 0 : layout.width : spacing]
        px = gx.ravel() + rng.uniform(0, spacing, gx.size)
        py = gy.ravel() + rng.uniform(0, spacing, gy.size)
        p = layout.sample(density, px, py)
        keep = rng.random(px.size) < p
        xs.append(px[keep])
        ys.append(py[keep])
    return np.concatenate(xs), np.concatenate(ys)


def make_cells(
    layout: Layout,
    rng: np.random.Generator,
    px_per_um: float,
    morphology: float,
    atypia: float = 1.0,
) -> Cells:
    """All cells of a case: tumour epithelium, stromal fibroblasts and immune cells."""
    s = px_per_um
    glands = layout.glands
    crowd = float(np.exp(-0.07 * np.clip(morphology, -2.5, 2.5)))
    if layout.architecture == "glandular":
        rows = 2 if morphology > 0.8 else 1
        tx, ty, tangle, tgroup = _ring_cells(glands, 6.0 * s * crowd, rng, rows, s)
    else:
        tx, ty, tgroup = _nest_cells(glands, 16.5 * s * crowd, rng)
        tangle = rng.uniform(0, np.pi, len(tx))
    n_t = len(tx)
    n_groups = max(len(glands), 1)
    group_effect = rng.normal(0, 1, n_groups)
    m_t = morphology + 0.45 * group_effect[tgroup] + 0.55 * rng.normal(0, 1, n_t)
    pleo = 0.08 + 0.05 * atypia * np.clip(1 + 0.5 * morphology, 0.3, 2.5)
    case_size = rng.uniform(0.9, 1.12)  # tumour types differ in nucleus size, whatever the grade
    size = case_size * np.exp(0.09 * m_t + rng.normal(0, pleo, n_t))
    if layout.architecture == "glandular":
        ta, tb = 6.0 * s * size, 2.7 * s * size * rng.uniform(0.9, 1.25, n_t)
        cell_scale = np.full(n_t, 1.45)
    else:
        ta, tb = 5.0 * s * size, 4.1 * s * size
        cell_scale = np.full(n_t, 1.75)
    t_dark = 0.78 + 0.09 * m_t + rng.normal(0, 0.06, n_t)
    mitosis = rng.random(n_t) < 1 / (1 + np.exp(-(1.7 * m_t - 5.5)))
    nucleolus = rng.random(n_t) < 1 / (1 + np.exp(-(1.4 * m_t - 0.4)))
    tumour = Cells(
        x=tx,
        y=ty,
        a=ta,
        b=tb,
        angle=tangle,
        kind=np.full(n_t, TUMOUR, np.int8),
        group=tgroup.astype(np.int32),
        darkness=np.where(mitosis, 1.35, t_dark),
        irregularity=np.where(mitosis, 0.4, 0.05 + 0.04 * np.clip(m_t + 1, 0, 4)),
        nucleolus=nucleolus,
        mitosis=mitosis,
        m=m_t,
        cell_scale=cell_scale,
    )

    tissue, _, necrosis, fat = (layout.base[..., k] for k in range(4))
    stroma_density = 0.4 * tissue * (1 - necrosis) * (1 - 0.93 * fat)
    sx, sy = _scattered(layout, rng, 15.0 * s, stroma_density)
    keep = ~inside_glands(glands, sx, sy)
    sx, sy = sx[keep], sy[keep]
    n_s = len(sx)
    m_s = morphology * 0.2 + rng.normal(0, 1, n_s)
    stroma = Cells(
        x=sx,
        y=sy,
        a=rng.uniform(5.0, 10.0, n_s) * s,
        b=rng.uniform(1.0, 2.5, n_s) * s,
        angle=layout.sample(layout.orientation, sx, sy) + rng.normal(0, 0.2, n_s),
        kind=np.full(n_s, STROMA, np.int8),
        group=np.full(n_s, -1, np.int32),
        darkness=rng.uniform(0.8, 1.0, n_s),
        irregularity=np.full(n_s, 0.05),
        nucleolus=np.zeros(n_s, bool),
        mitosis=np.zeros(n_s, bool),
        m=m_s,
        cell_scale=np.full(n_s, 1.3),
    )

    ix, iy = _scattered(layout, rng, 6.5 * s, layout.immune)
    keep = ~inside_glands(glands, ix, iy, pad=0.98)
    ix, iy = ix[keep], iy[keep]
    n_i = len(ix)
    large = rng.random(n_i) < 0.10  # activated lymphocytes, plasma cells, macrophages
    r = np.where(large, rng.uniform(3.5, 5.0, n_i), rng.uniform(2.5, 3.5, n_i)) * s
    immune = Cells(
        x=ix,
        y=iy,
        a=r,
        b=r * np.where(large, rng.uniform(0.7, 0.95, n_i), rng.uniform(0.85, 1.0, n_i)),
        angle=rng.uniform(0, np.pi, n_i),
        kind=np.full(n_i, IMMUNE, np.int8),
        group=np.full(n_i, -1, np.int32),
        darkness=np.where(large, rng.uniform(0.75, 1.0, n_i), rng.uniform(1.05, 1.25, n_i)),
        irregularity=np.full(n_i, 0.04),
        nucleolus=np.zeros(n_i, bool),
        mitosis=np.zeros(n_i, bool),
        m=morphology * 0.2 + rng.normal(0, 1, n_i),
        cell_scale=np.full(n_i, 1.5),
    )
    cells = Cells.concat([tumour, stroma, immune])
    # keep cells well inside the section: its edge is drawn ragged around tissue = 0.5
    inside = layout.sample(layout.base[..., 0], cells.x, cells.y) > 0.75
    return cells.take(np.flatnonzero(inside))
