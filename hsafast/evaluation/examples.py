"""Example heatmaps beside their registered IHC (patch mode).

Patch mode predicts, for each H&E tile, the share of IHC-positive cells; the
run directory keeps these predictions with the stain-derived targets of the
registered IHC tiles (``predictions/patch-tiles.csv``: case_id, marker, fold,
x, y, size_level0, positivity, stain_target, target_weight). For a few
held-out cases this module draws three panels on the H&E frame: the predicted
map over the H&E, the IHC section registered onto the H&E, and the map the
IHC stain itself gives. With the slides out of reach, only the two maps are
drawn, on white. It also measures how well the maps agree (Spearman's rho over tiles
with a target).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsafast.errors import EvaluationError, HsafastError

__all__ = ["TileMaps", "example_png", "pick_examples", "read_tile_maps", "tile_agreement"]

TILE_COLUMNS = (
    "case_id",
    "marker",
    "fold",
    "x",
    "y",
    "size_level0",
    "positivity",
    "stain_target",
    "target_weight",
)


@dataclass(frozen=True)
class TileMaps:
    """Held-out tiles of patch mode, one row per tile."""

    case_ids: np.ndarray
    markers: np.ndarray
    xy: np.ndarray
    size: np.ndarray
    positivity: np.ndarray
    target: np.ndarray
    weight: np.ndarray

    def case(self, case_id: str) -> np.ndarray:
        return np.flatnonzero(self.case_ids == case_id)


def read_tile_maps(path: str | os.PathLike[str]) -> TileMaps:
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in TILE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise EvaluationError(f"tile predictions lack columns {missing}", path)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"cannot read tile predictions: {exc}", path) from exc
    try:
        numbers = np.array(
            [[float(r[c]) for c in TILE_COLUMNS[3:]] for r in rows], dtype=np.float64
        ).reshape(len(rows), len(TILE_COLUMNS) - 3)
    except ValueError as exc:
        raise EvaluationError(f"tile predictions: {exc}", path) from None
    return TileMaps(
        case_ids=np.array([r["case_id"] for r in rows], dtype=str),
        markers=np.array([r["marker"].lower() for r in rows], dtype=str),
        xy=numbers[:, 0:2],
        size=numbers[:, 2],
        positivity=numbers[:, 3],
        target=numbers[:, 4],
        weight=numbers[:, 5],
    )


def tile_agreement(maps: TileMaps, rows: np.ndarray | None = None) -> tuple[float, int]:
    """Spearman's rho of predicted positivity and stain target over tiles with a target."""
    from scipy.stats import spearmanr

    rows = np.arange(len(maps.case_ids)) if rows is None else rows
    use = rows[(maps.weight[rows] > 0) & np.isfinite(maps.target[rows])]
    if len(use) < 3 or np.ptp(maps.target[use]) == 0 or np.ptp(maps.positivity[use]) == 0:
        return math.nan, len(use)
    return float(spearmanr(maps.positivity[use], maps.target[use]).statistic), len(use)


def pick_examples(
    case_ids: Sequence[str],
    true: Sequence[str | None],
    predicted: Sequence[str],
    confidence: np.ndarray,
    maps: TileMaps,
    n: int,
) -> list[str]:
    """Up to ``n`` cases with tiles: the most confident right call of each class, then
    the most confident wrong call, then the rest by confidence."""
    have = set(maps.case_ids.tolist())
    order = np.argsort(-confidence, kind="stable")
    chosen: list[str] = []
    right = [i for i in order if case_ids[i] in have and true[i] == predicted[i]]
    wrong = [i for i in order if case_ids[i] in have and true[i] != predicted[i]]
    for label in sorted({t for t in true if t is not None}):
        first = next((i for i in right if true[i] == label), None)
        if first is not None:
            chosen.append(case_ids[first])
    if wrong:
        chosen.append(case_ids[wrong[0]])
    for i in right:
        if len(chosen) >= n:
            break
        if case_ids[i] not in chosen:
            chosen.append(case_ids[i])
    return chosen[:n]


def example_png(
    maps: TileMaps,
    case_id: str,
    title: str,
    path: str | os.PathLike[str],
    *,
    slides: tuple[Path, Path] | None = None,
    registration: Path | None = None,
    max_size: int = 640,
) -> tuple[Path, str]:
    """Draw one example; return the PNG and a sentence on what the panels show."""
    from hsafast.evaluation.plots import _pyplot, _save

    rows = maps.case(case_id)
    if len(rows) == 0:
        raise EvaluationError(f"no tiles of case {case_id!r}")
    he_img = ihc_img = None
    scale = None
    how = "the slides were not readable, so the maps are drawn on white"
    if slides is not None:
        try:
            he_img, ihc_img, scale, how = _registered_pair(slides, registration, max_size)
        except HsafastError as exc:
            how = f"the slides could not be shown ({exc.reason}); the maps are drawn on white"
    if scale is None:
        extent = (maps.xy[rows] + maps.size[rows, None]).max(axis=0)
        scale = max(extent) / max_size
        shape = (math.ceil(extent[1] / scale), math.ceil(extent[0] / scale))
    else:
        assert he_img is not None
        shape = he_img.shape[:2]
    pred = _tile_image(maps, rows, maps.positivity, shape, scale, np.ones(len(rows), bool))
    target = _tile_image(maps, rows, maps.target, shape, scale, maps.weight[rows] > 0)

    plt = _pyplot()
    background = np.full((*shape, 3), 255, np.uint8)
    panels: list[tuple[np.ndarray, np.ndarray | None, str]] = [
        (he_img if he_img is not None else background, pred, "predicted from H&E")
    ]
    if ihc_img is not None:
        panels.append((ihc_img, None, "IHC, registered to the H&E"))
    panels.append(
        (_grey(he_img) if he_img is not None else background, target, "read from the IHC stain")
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels) + 0.6, 4.2))
    shown = None
    for ax, (image, overlay, label) in zip(axes, panels, strict=True):
        ax.imshow(image)
        if overlay is not None:
            shown = ax.imshow(overlay, cmap="YlOrRd", vmin=0, vmax=1, alpha=0.55)
        ax.set(title=label, xticks=[], yticks=[])
    fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01, label="share of positive cells")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path), how


def _grey(image: np.ndarray) -> np.ndarray:
    grey = image.mean(axis=2, keepdims=True)
    return np.repeat(255 - 0.35 * (255 - grey), 3, axis=2).astype(np.uint8)


def _tile_image(
    maps: TileMaps,
    rows: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    scale: float,
    keep: np.ndarray,
) -> np.ndarray:
    """Tile values painted on a (H, W) float image at ``scale`` level-0 px per pixel; NaN
    where no tile (or no target)."""
    image = np.full(shape, np.nan)
    for r, use in zip(rows, keep, strict=True):
        if not use:
            continue
        x0, y0 = (maps.xy[r] / scale).astype(int)
        side = max(1, round(maps.size[r] / scale))
        image[max(y0, 0) : y0 + side, max(x0, 0) : x0 + side] = values[r]
    return np.ma.masked_invalid(image)


def _registered_pair(
    slides: tuple[Path, Path], registration: Path | None, max_size: int
) -> tuple[np.ndarray, np.ndarray, float, str]:
    from hsafast.registration import load_registration, register
    from hsafast.registration.overlay import registered_thumbnails
    from hsafast.slides import open_slide

    he_path, ihc_path = slides
    with open_slide(he_path) as he, open_slide(ihc_path) as ihc:
        if registration is not None and registration.is_file():
            reg = load_registration(registration)
            how = "the IHC is warped onto the H&E with the run's registration"
        else:
            reg = register(he, ihc)
            how = "the IHC is warped onto the H&E with a registration computed for this figure"
        if not reg.ok:
            raise EvaluationError(f"registration failed: {reg.reason}", ihc_path)
        he_img, ihc_img = registered_thumbnails(he, ihc, reg, max_size)
        scale = he.dimensions[0] / he_img.shape[1]
    return he_img, ihc_img, scale, how
