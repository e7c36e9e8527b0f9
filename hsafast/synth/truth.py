"""Ground truth next to the slides: writing it per case, and loading it back.

Per case, under ``<cohort>/truth/<case_id>/``:

- ``transform.json``: the H&E level-0 -> IHC level-0 map, ``ihc = A @ (x, y, 1) + d(x, y)``
  (``affine`` is the 3x3 ``A``), and how ``displacement.npy`` is laid out.
- ``displacement.npy``: float32 (gh, gw, 2) array of (dx, dy) in IHC level-0 pixels;
  node (i, j) sits at H&E level-0 (j * step, i * step); bilinear in between, edge
  values beyond the last node.
- ``landmarks.csv``: ``he_x, he_y, ihc_x, ihc_y, cell_id`` on isolated tumour nuclei.
- ``cells.csv``: one row per cell (positions in both slides, type, latent states,
  DAB positivity and load, compartment, whether it survives in the IHC section).
- ``tiles.csv``: true positive fractions on a 512-pixel H&E grid (any other grid:
  :meth:`CaseTruth.tile_positive_fraction`).
- ``labels.json``: clinical reading (Ki-67 index and class, P53 pattern, PD-L1 TPS
  and class) and the binary ``label``; ``stains.json``: the stain vectors used.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsafast._fileio import atomic_path, atomic_write_text, safe_id
from hsafast.errors import ConfigError
from hsafast.synth.cells import CELL_TYPES, TUMOUR
from hsafast.synth.deform import Deformation
from hsafast.synth.model import CaseModel

TRUTH_TILE = 512

_CELL_COLUMNS = (
    "cell_id",
    "he_x",
    "he_y",
    "ihc_x",
    "ihc_y",
    "type",
    "in_ihc",
    "group",
    "nucleus_major_px",
    "nucleus_minor_px",
    "angle_rad",
    "mitosis",
    "morph_latent",
    "expr_latent",
    "dab_positive",
    "dab_intensity",
    "compartment",
)


def write_truth(model: CaseModel, folder: Path) -> None:
    """Write every ground-truth file of one case into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    d = model.deformation
    with atomic_path(folder / "displacement.npy") as tmp, tmp.open("wb") as f:
        np.save(f, d.displacement.astype(np.float32))
    transform = {
        "direction": "H&E level-0 (x, y) -> IHC level-0 (x, y)",
        "formula": "ihc = affine[:2, :2] @ he + affine[:2, 2] + d(he)",
        "affine": np.round(d.affine, 12).tolist(),
        "displacement": {
            "file": "displacement.npy",
            "shape": list(d.displacement.shape),
            "layout": "[i, j, (dx, dy)]; node (i, j) at H&E level-0 (j * step, i * step)",
            "step": d.step,
            "units": "IHC level-0 pixels",
            "interpolation": "bilinear; clamped to the edge nodes outside the grid",
        },
        "params": {k: round(v, 9) for k, v in d.params.items()},
        "he_size": [model.spec.width, model.spec.height],
        "ihc_size": [model.spec.width, model.spec.height],
        "mpp": model.spec.mpp,
    }
    atomic_write_text(folder / "transform.json", json.dumps(transform, indent=2) + "\n")

    cells, expr = model.cells, model.expression
    with atomic_path(folder / "cells.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_CELL_COLUMNS)
        compartment = expr.compartment
        for i in range(len(cells)):
            w.writerow(
                (
                    i,
                    f"{cells.x[i]:.2f}",
                    f"{cells.y[i]:.2f}",
                    f"{model.ihc_xy[i, 0]:.2f}",
                    f"{model.ihc_xy[i, 1]:.2f}",
                    CELL_TYPES[cells.kind[i]],
                    int(model.present[i]),
                    int(cells.group[i]),
                    f"{2 * cells.a[i]:.2f}",
                    f"{2 * cells.b[i]:.2f}",
                    f"{cells.angle[i]:.4f}",
                    int(cells.mitosis[i]),
                    f"{cells.m[i]:.4f}",
                    f"{expr.latent[i]:.4f}",
                    int(expr.positive[i]),
                    f"{expr.intensity[i]:.4f}",
                    compartment if expr.positive[i] else "none",
                )
            )
    with atomic_path(folder / "landmarks.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("he_x", "he_y", "ihc_x", "ihc_y", "cell_id"))
        for row in model.landmarks:
            w.writerow((*(f"{v:.2f}" for v in row[:4]), int(row[4])))
    truth = CaseTruth.from_model(model, folder)
    grid = _grid(model.spec.width, model.spec.height, TRUTH_TILE)
    frac, n_t, n_pos, n_all, n_all_pos = truth.tile_counts(grid, TRUTH_TILE, space="he")
    with atomic_path(folder / "tiles.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            (
                "he_x",
                "he_y",
                "size",
                "n_tumour",
                "n_tumour_positive",
                "tumour_positive_fraction",
                "n_cells",
                "n_positive",
            )
        )
        for k in np.flatnonzero(n_all > 0):
            w.writerow(
                (
                    int(grid[k, 0]),
                    int(grid[k, 1]),
                    TRUTH_TILE,
                    int(n_t[k]),
                    int(n_pos[k]),
                    f"{frac[k]:.6f}" if n_t[k] else "",
                    int(n_all[k]),
                    int(n_all_pos[k]),
                )
            )
    atomic_write_text(folder / "labels.json", json.dumps(model.labels, indent=2) + "\n")
    stains = {"he": model.he_style.to_dict(), "ihc": model.ihc_style.to_dict()}
    atomic_write_text(folder / "stains.json", json.dumps(stains, indent=2) + "\n")


def _grid(width: int, height: int, size: int) -> np.ndarray:
    gy, gx = np.mgrid[0:height:size, 0:width:size]
    return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.int64)


@dataclass
class CaseTruth:
    """The ground truth of one case, loaded from its folder."""

    case_id: str
    folder: Path
    deformation: Deformation
    cells: dict[str, np.ndarray]
    landmarks: np.ndarray  # (L, 4): he_x, he_y, ihc_x, ihc_y
    labels: dict[str, Any]

    @property
    def affine(self) -> np.ndarray:
        return self.deformation.affine

    def map_he_to_ihc(self, xy: np.ndarray) -> np.ndarray:
        """H&E level-0 points (N, 2) -> IHC level-0 points (affine + displacement)."""
        return self.deformation.forward(xy)

    def map_ihc_to_he(self, xy: np.ndarray) -> np.ndarray:
        """IHC level-0 points (N, 2) -> H&E level-0 points (the exact inverse, iterated)."""
        return self.deformation.inverse(xy)

    def tile_counts(
        self,
        coords: np.ndarray,
        size: int,
        space: str = "he",
        cell_types: tuple[str, ...] = ("tumour",),
    ) -> tuple[np.ndarray, ...]:
        """Per tile: positive fraction of ``cell_types``, their count and positives, and the
        count and positives over all cells. Only cells present in the IHC section count."""
        if space not in ("he", "ihc"):
            raise ValueError(f"space must be 'he' or 'ihc', got {space!r}")
        coords = np.asarray(coords, np.float64).reshape(-1, 2)
        c = self.cells
        keep = c["in_ihc"].astype(bool)
        x, y = c[f"{space}_x"][keep], c[f"{space}_y"][keep]
        wanted = np.isin(c["type"][keep], list(cell_types))
        pos = c["dab_positive"][keep].astype(bool)
        order = np.argsort(y, kind="stable")
        x, y, wanted, pos = x[order], y[order], wanted[order], pos[order]
        n = len(coords)
        out = [np.zeros(n) for _ in range(4)]
        lo = np.searchsorted(y, coords[:, 1], side="left")
        hi = np.searchsorted(y, coords[:, 1] + size, side="left")
        for k in range(n):
            sl = slice(lo[k], hi[k])
            inside = (x[sl] >= coords[k, 0]) & (x[sl] < coords[k, 0] + size)
            sel = inside & wanted[sl]
            out[0][k], out[1][k] = sel.sum(), (sel & pos[sl]).sum()
            out[2][k], out[3][k] = inside.sum(), (inside & pos[sl]).sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(out[0] > 0, out[1] / np.maximum(out[0], 1), np.nan)
        return frac, out[0], out[1], out[2], out[3]

    def tile_positive_fraction(
        self,
        coords: np.ndarray,
        size: int,
        space: str = "he",
        cell_types: tuple[str, ...] = ("tumour",),
    ) -> np.ndarray:
        """True DAB-positive fraction of ``cell_types`` in square tiles (NaN where none).

        ``coords`` are level-0 top-left corners in the H&E (``space="he"``) or IHC
        slide, ``size`` the tile side in level-0 pixels.
        """
        return self.tile_counts(coords, size, space, cell_types)[0]

    @classmethod
    def from_model(cls, model: CaseModel, folder: Path) -> CaseTruth:
        cells, expr = model.cells, model.expression
        table = {
            "cell_id": np.arange(len(cells)),
            "he_x": cells.x,
            "he_y": cells.y,
            "ihc_x": model.ihc_xy[:, 0],
            "ihc_y": model.ihc_xy[:, 1],
            "type": np.asarray(CELL_TYPES)[cells.kind],
            "in_ihc": model.present.astype(np.int64),
            "dab_positive": expr.positive.astype(np.int64),
            "dab_intensity": expr.intensity,
            "is_tumour": (cells.kind == TUMOUR).astype(np.int64),
        }
        return cls(
            case_id=model.spec.case_id,
            folder=folder,
            deformation=model.deformation,
            cells=table,
            landmarks=model.landmarks[:, :4],
            labels=model.labels,
        )


_INT_COLUMNS = frozenset({"cell_id", "in_ihc", "group", "mitosis", "dab_positive"})
_TEXT_COLUMNS = frozenset({"type", "compartment"})


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    out: dict[str, np.ndarray] = {}
    for name, values in zip(header, cols, strict=True):
        if name in _TEXT_COLUMNS:
            out[name] = np.asarray(values, dtype=str)
        elif name in _INT_COLUMNS:
            out[name] = np.asarray(values, dtype=np.int64)
        else:
            out[name] = np.asarray(values, dtype=np.float64)
    return out


def load_truth(out_dir: str | os.PathLike[str], case_id: str) -> CaseTruth:
    """Load the ground truth of ``case_id`` from a cohort folder written by make_cohort."""
    folder = Path(out_dir) / "truth" / safe_id(case_id)
    try:
        transform = json.loads((folder / "transform.json").read_text())
        displacement = np.load(folder / "displacement.npy", allow_pickle=False)
        labels = json.loads((folder / "labels.json").read_text())
        cells = _read_csv(folder / "cells.csv")
        landmarks = _read_csv(folder / "landmarks.csv")
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot read the ground truth of case {case_id!r}: {exc}", folder
        ) from exc
    deformation = Deformation(
        affine=np.asarray(transform["affine"], np.float64),
        displacement=displacement,
        step=float(transform["displacement"]["step"]),
        params=transform.get("params", {}),
    )
    lm = np.stack([landmarks[k].astype(np.float64) for k in ("he_x", "he_y", "ihc_x", "ihc_y")], 1)
    return CaseTruth(
        case_id=case_id,
        folder=folder,
        deformation=deformation,
        cells=cells,
        landmarks=lm.reshape(-1, 4),
        labels=labels,
    )
