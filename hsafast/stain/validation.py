"""Ground truth for stain quantification: synthetic IHC tiles and truth comparison.

:func:`render_ihc_tile` composes hematoxylin and DAB concentration maps by
Beer-Lambert's law (``I = 255 * 10**-(C @ rgb_from_stains)``) with known nuclei
and known positivity, then blurs, adds noise and JPEG-compresses, so that every
cell-level measure can be checked against its truth. :func:`compare_cells` and
:func:`read_truth_cells` take any per-cell truth table with ``x``, ``y`` and a
positivity column, such as the cohort simulator's ``truth/<case>/cells.*``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hsafast.errors import ConfigError
from hsafast.stain.compartments import Cells
from hsafast.stain.quantification import QuantifyConfig
from hsafast.stain.vectors import HED, StainMatrix

#: Column names accepted for per-cell positivity in truth tables.
POSITIVE_COLUMNS = ("positive", "dab_positive", "is_positive")


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
    compartment: Literal["nuclear", "membranous"] = "nuclear",
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
    (default 2.6 nuclear, 3.4 membranous; 2.0 lets nuclei touch), and
    ``background_dab`` adds non-specific DAB (log10 OD) to the whole tile.
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


def read_truth_cells(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(xy K x 2, positive K bools) from a truth table (.csv, or .parquet with pandas)."""
    p = Path(path)
    try:
        if p.suffix == ".parquet":
            import pandas as pd

            df = pd.read_parquet(p)
            columns: dict[str, np.ndarray] = {c: df[c].to_numpy() for c in df.columns}
        else:
            with p.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            names = list(rows[0]) if rows else []
            columns = {c: np.array([r[c] for r in rows]) for c in names}
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot read truth table: {exc}", p) from None
    col = next((c for c in POSITIVE_COLUMNS if c in columns), None)
    if col is None or not {"x", "y"} <= set(columns):
        raise ConfigError(
            f"a truth table needs columns x, y and one of {POSITIVE_COLUMNS}; "
            f"found {list(columns)}",
            p,
        )
    xy = np.stack([columns["x"].astype(np.float64), columns["y"].astype(np.float64)], axis=1)
    pos = columns[col]
    if pos.dtype.kind in "US":  # CSV text: 1/0 or true/false
        pos = np.isin(np.char.lower(pos.astype(str)), ("1", "true", "yes", "1.0"))
    return xy, pos.astype(bool)


def compare_cells(
    cells: Cells, truth_xy: np.ndarray, truth_positive: np.ndarray, radius_px: float
) -> dict[str, float]:
    """Detection recall/precision and positive-fraction error against truth cells."""
    from scipy.spatial import cKDTree

    n_true, n_det = len(truth_xy), len(cells)
    matched = 0
    if n_true and n_det:
        dist, idx = cKDTree(truth_xy).query(cells.xy, distance_upper_bound=radius_px)
        hit = np.isfinite(dist)
        matched = len(np.unique(idx[hit]))
    frac_true = float(truth_positive.mean()) if n_true else 0.0
    frac_det = float(cells.positive().mean()) if n_det else 0.0
    return {
        "n_true": float(n_true),
        "n_detected": float(n_det),
        "recall": matched / n_true if n_true else 0.0,
        "precision": matched / n_det if n_det else 0.0,
        "positive_fraction_true": frac_true,
        "positive_fraction": frac_det,
        "abs_error": abs(frac_det - frac_true),
    }


@dataclass
class SimulatedCase:
    """Stain-derived per-tile fractions and slide class of one simulated case, with truth."""

    case_id: str
    marker: str
    estimated: np.ndarray
    """Per-tile positive share of scored (tumour-like) cells, on tiles with truth."""
    true: np.ndarray
    """Per-tile true positive share of tumour cells on the same tiles."""
    true_class: str
    derived_class: str | None
    true_binary: str
    derived_binary: str | None
    true_score: float
    derived_score: float


_TRUE_CLASS = {"ki67": "ki67_class", "p53": "p53_pattern", "pdl1": "pdl1_class"}


def score_simulated_case(
    cohort_dir: str | os.PathLike[str],
    case_id: str,
    ihc_path: str | os.PathLike[str],
    marker: str,
    *,
    tile: int = 256,
    min_truth_cells: int = 5,
    min_scored_cells: int = 3,
    config: QuantifyConfig | None = None,
) -> SimulatedCase:
    """Quantify a simulated IHC slide on a regular grid and pair it with the simulator's truth.

    Tiles enter the per-tile comparison when they hold at least ``min_truth_cells``
    true tumour cells and ``min_scored_cells`` scored cells (a fraction of one or
    two cells says nothing); the slide class pools every included tile.
    """
    from hsafast.slides import open_slide
    from hsafast.stain.quantification import quantify, slide_label
    from hsafast.synth import load_truth

    truth = load_truth(cohort_dir, case_id)
    with open_slide(ihc_path) as slide:
        w, h = slide.dimensions
        gy, gx = np.mgrid[0 : h - tile + 1 : tile, 0 : w - tile + 1 : tile]
        coords = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.int64)
        stats = quantify(slide, coords, marker, size=tile, config=config)
    label = slide_label(stats, marker, config)
    frac, n_tumour, *_ = truth.tile_counts(coords, tile, space="ihc")
    keep = (n_tumour >= min_truth_cells) & stats.included & (stats.cells[:, 0] >= min_scored_cells)
    labels = truth.labels
    return SimulatedCase(
        case_id=case_id,
        marker=marker,
        estimated=stats.positive_cell_fraction(1)[keep],
        true=frac[keep],
        true_class=str(labels[_TRUE_CLASS[marker]]),
        derived_class=label.label,
        true_binary=str(labels["label"]),
        derived_binary=label.binary,
        true_score=float(labels["tumour_positive_fraction"]),
        derived_score=label.score,
    )


def tile_agreement(cases: list[SimulatedCase]) -> dict[str, float]:
    """Mean absolute error and Pearson r of per-tile positive fractions, pooled over cases."""
    est = np.concatenate([c.estimated for c in cases]) if cases else np.empty(0)
    true = np.concatenate([c.true for c in cases]) if cases else np.empty(0)
    out = {"tiles": float(len(est)), "mae": float("nan"), "pearson_r": float("nan")}
    if len(est):
        out["mae"] = float(np.mean(np.abs(est - true)))
    if len(est) > 2 and est.std() > 0 and true.std() > 0:
        out["pearson_r"] = float(np.corrcoef(est, true)[0, 1])
    return out
