"""The stain reader scored against known truth: cells, tiles and slide classes.

:func:`compare_cells` and :func:`read_truth_cells` take any per-cell truth table
with ``x``, ``y`` and a positivity column (such as the simulator's
``truth/<case>/cells.csv``); :func:`score_simulated_case` quantifies a simulated
IHC slide and pairs every tile with the simulator's per-tile tumour-cell truth.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsafast.errors import ConfigError
from hsafast.stain.compartments import Cells
from hsafast.stain.quantification import QuantifyConfig

#: Column names accepted for per-cell positivity in truth tables.
POSITIVE_COLUMNS = ("positive", "dab_positive", "is_positive")


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
    reason: str = ""
    """Why the reading has no label ('' when it has one)."""


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
    """Quantify a simulated IHC slide's tissue tiles and pair them with the simulator's truth.

    The tiles are ``tissue_grid``'s at the slide's own pixel size (any tile holding 5 %
    tissue: ``quantify`` calls a tile blank below that). Tiles enter the per-tile
    comparison when they hold at least ``min_truth_cells`` true tumour cells and
    ``min_scored_cells`` scored cells (a fraction of one or two cells says nothing);
    the slide class pools every included tile.
    """
    from hsafast.slides import open_slide
    from hsafast.stain.quantification import quantify, slide_label
    from hsafast.synth.truth import load_truth
    from hsafast.tiling import tissue_grid

    truth = load_truth(cohort_dir, case_id)
    with open_slide(ihc_path) as slide:
        grid = tissue_grid(slide, mpp=slide.mpp, size=tile, min_tissue=0.05)
        stats = quantify(slide, grid, marker, config=config)
    coords = stats.coords
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
        reason=label.reason,
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
