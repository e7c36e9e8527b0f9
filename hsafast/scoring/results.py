"""What scoring returns: a SlideResult per slide (JSON) and a cohort table (Parquet + CSV).

A SlideResult holds, per marker, the class probabilities, the predicted class, the slide
embedding, and per tile the attention weight and (patch-mode bundles) the predicted IHC
positivity, with the tiles' level-0 coordinates. Tiles are in grid order (row-major: y, then
x), whatever order they were scored in, so results of the same slide compare element by
element. A slide without tissue gives a result with status "no_tissue" and no tiles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsafast.errors import ConfigError, InvalidParameterError

__all__ = ["FORMAT", "MarkerResult", "SlideResult", "cohort_table", "write_cohort_table"]

FORMAT = "hsafast.SlideResult"
FORMAT_VERSION = 1
#: statuses of a result: scored, or no tissue to score
STATUSES = ("ok", "no_tissue")


@dataclass(eq=False)
class MarkerResult:
    """One marker's prediction for one slide."""

    marker: str
    classes: tuple[str, ...]
    """Class names, in the order of `probabilities`."""
    probabilities: np.ndarray
    """Class probabilities (float64, sums to 1)."""
    positive_class: str | None = None
    """The class counted as "positive" (the paper's intermediate/high), when defined."""
    attention: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """Attention weight of each tile (float32, N, sums to 1; uniform for mean pooling)."""
    positivity: np.ndarray | None = None
    """Predicted IHC positivity of each tile from H&E (float32, N, 0-1); patch mode only."""
    embedding: np.ndarray | None = None
    """The pooled slide embedding (float32, E)."""

    @property
    def predicted(self) -> str:
        """The most probable class."""
        return self.classes[int(np.argmax(self.probabilities))]

    @property
    def positive_probability(self) -> float | None:
        if self.positive_class is None:
            return None
        return float(self.probabilities[self.classes.index(self.positive_class)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "probabilities": [float(p) for p in self.probabilities],
            "predicted": self.predicted,
            "positive_class": self.positive_class,
            "attention": _floats(self.attention),
            "positivity": None if self.positivity is None else _floats(self.positivity),
            "embedding": None if self.embedding is None else _floats(self.embedding),
        }

    @classmethod
    def from_dict(cls, marker: str, d: Mapping[str, Any]) -> MarkerResult:
        return cls(
            marker=marker,
            classes=tuple(d["classes"]),
            probabilities=np.asarray(d["probabilities"], dtype=np.float64),
            positive_class=d.get("positive_class"),
            attention=np.asarray(d["attention"], dtype=np.float32),
            positivity=None
            if d.get("positivity") is None
            else np.asarray(d["positivity"], dtype=np.float32),
            embedding=None
            if d.get("embedding") is None
            else np.asarray(d["embedding"], dtype=np.float32),
        )


@dataclass(eq=False)
class SlideResult:
    """Every marker's prediction for one slide, with the tiles it was made from."""

    slide_id: str
    markers: dict[str, MarkerResult]
    coords: np.ndarray
    """Level-0 top-left corners of the tiles (N x 2 int64, x then y), in grid order."""
    patch_size_level0: int
    """Side of each tile in level-0 pixels (for heatmaps)."""
    target_mpp: float
    """Pixel size the tiles were scored at (um/px)."""
    status: str = "ok"
    message: str = ""
    """Why a slide has no prediction (e.g. the tissue detector's reason)."""
    path: str | None = None
    engine: str = ""
    """Engine and device that ran the tile network."""
    model: dict[str, Any] = field(default_factory=dict)
    """The bundle that made the prediction (path, mode, weights hash, encoder)."""
    timings: dict[str, Any] = field(default_factory=dict)
    """Per-stage busy seconds and tiles/s (see hsafast.scoring.pipeline.StageStats)."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InvalidParameterError(
                f"SlideResult.status must be one of {STATUSES}, got {self.status!r}"
            )

    @property
    def n_tiles(self) -> int:
        return len(self.coords)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "slide_id": self.slide_id,
            "path": self.path,
            "status": self.status,
            "message": self.message,
            "n_tiles": self.n_tiles,
            "patch_size_level0": int(self.patch_size_level0),
            "target_mpp": float(self.target_mpp),
            "engine": self.engine,
            "model": self.model,
            "timings": self.timings,
            "coords": np.asarray(self.coords, dtype=np.int64).tolist(),
            "markers": {name: m.to_dict() for name, m in self.markers.items()},
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the result as JSON, atomically."""
        from hsafast._fileio import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), separators=(",", ":")))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SlideResult:
        """Reads a result written by save; ConfigError naming the file if it is not one."""
        src = Path(path)
        try:
            d = json.loads(src.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"not a readable result file: {exc}", src) from exc
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(f"not a slide result (format {d.get('format')!r})", src)
        if d.get("format_version", 0) > FORMAT_VERSION:
            raise ConfigError(
                f"result format version {d['format_version']} is newer than this hsafast reads "
                f"({FORMAT_VERSION})",
                src,
            )
        try:
            return cls(
                slide_id=d["slide_id"],
                markers={k: MarkerResult.from_dict(k, v) for k, v in d["markers"].items()},
                coords=np.asarray(d["coords"], dtype=np.int64).reshape(-1, 2),
                patch_size_level0=int(d["patch_size_level0"]),
                target_mpp=float(d["target_mpp"]),
                status=d["status"],
                message=d.get("message", ""),
                path=d.get("path"),
                engine=d.get("engine", ""),
                model=d.get("model", {}),
                timings=d.get("timings", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:  # InvalidParameterError included
            raise ConfigError(f"malformed slide result: {type(exc).__name__}: {exc}", src) from exc

    def rows(self) -> list[dict[str, Any]]:
        """One cohort-table row per marker (one row without a marker when nothing was scored)."""
        base = {
            "slide_id": self.slide_id,
            "path": self.path,
            "status": self.status,
            "message": self.message,
            "n_tiles": self.n_tiles,
        }
        if not self.markers:
            return [{**base, "marker": None}]
        out = []
        for name, m in self.markers.items():
            row: dict[str, Any] = {
                **base,
                "marker": name,
                "predicted": m.predicted,
                "p_positive": m.positive_probability,
            }
            row.update(
                {f"p_{c}": float(p) for c, p in zip(m.classes, m.probabilities, strict=True)}
            )
            if m.positivity is not None and len(m.positivity):
                row["mean_positivity"] = float(np.mean(m.positivity))
            out.append(row)
        return out


def _floats(a: np.ndarray) -> list[float]:
    """float32 values with 9 significant digits (enough to read back the same float32)."""
    return [float(f"{v:.9g}") for v in np.asarray(a, dtype=np.float32).tolist()]


def failure_row(slide_id: str, path: str | None, reason: str) -> dict[str, Any]:
    """The cohort-table row of a slide that could not be scored."""
    return {
        "slide_id": slide_id,
        "path": path,
        "status": "failed",
        "message": reason,
        "n_tiles": 0,
        "marker": None,
    }


def cohort_table(rows: Iterable[Mapping[str, Any]]) -> Any:
    """A pyarrow Table of result rows; class-probability columns are the union over markers."""
    import pyarrow as pa

    rows = list(rows)
    fixed = [
        "slide_id",
        "path",
        "status",
        "message",
        "n_tiles",
        "marker",
        "predicted",
        "p_positive",
        "mean_positivity",
    ]
    extra = sorted({k for r in rows for k in r} - set(fixed))
    columns = fixed + extra
    types = {"n_tiles": pa.int64(), "p_positive": pa.float64(), "mean_positivity": pa.float64()}
    types.update({k: pa.float64() for k in extra if k.startswith("p_")})
    arrays = {
        c: pa.array([r.get(c) for r in rows], type=types.get(c, pa.string())) for c in columns
    }
    return pa.table(arrays)


def write_cohort_table(
    rows: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike[str], stem: str = "results"
) -> tuple[Path, Path]:
    """Writes ``<stem>.parquet`` and ``<stem>.csv`` (same rows) atomically; returns both paths."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from hsafast._fileio import atomic_path

    table = cohort_table(rows)
    out = Path(out_dir)
    parquet, csv = out / f"{stem}.parquet", out / f"{stem}.csv"
    with atomic_path(parquet) as tmp:
        pq.write_table(table, tmp)
    with atomic_path(csv) as tmp:
        pacsv.write_csv(table, tmp)
    return parquet, csv
