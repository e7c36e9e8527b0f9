"""Reading a run directory (docs/models.md) for the evaluation.

What is read: ``run.json`` (configuration, manifest, folds, cases, versions),
``predictions/<mode>.csv``, ``embeddings/<mode>.npz`` and, for patch mode,
``predictions/patch-tiles.csv``. Only the predictions are required; whatever
else is missing becomes a note in the report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsafast.errors import EvaluationError

__all__ = ["RunDir", "open_run"]

#: A mode's CSV under predictions/ that is not slide-level predictions.
TILE_TABLE = "patch-tiles.csv"

#: How modes are named in the report.
MODE_NAMES = {
    "slide": "slide mode",
    "patch": "patch mode",
    "classification-only": "classification-only baseline",
    "mean-pool": "mean-pool baseline",
    "probe": "linear probe",
}

#: How markers are named in the report.
MARKER_NAMES = {"ki67": "Ki-67", "p53": "P53", "pdl1": "PD-L1"}


def mode_name(mode: str) -> str:
    return MODE_NAMES.get(mode, mode)


def marker_name(marker: str) -> str:
    return MARKER_NAMES.get(marker.lower(), marker or "(no marker)")


@dataclass(frozen=True)
class RunDir:
    root: Path
    run: dict[str, Any]
    predictions: dict[str, Path]
    embeddings: dict[str, Path]
    tiles: Path | None
    notes: tuple[str, ...]

    @property
    def modes(self) -> list[str]:
        """Modes with predictions, in the order the run lists them (then by name)."""
        listed = [m for m in self.run.get("config", {}).get("modes", []) if m in self.predictions]
        return listed + sorted(set(self.predictions) - set(listed))

    @property
    def manifest(self) -> Path | None:
        value = self.run.get("manifest") or self.run.get("config", {}).get("manifest")
        if not value:
            return None
        path = Path(value)
        return path if path.is_absolute() else (self.root / path)

    def simulated(self) -> str | None:
        """How the slides were simulated, or None when nothing says they were."""
        cohort = self.run.get("cohort")
        if isinstance(cohort, dict) and cohort.get("simulated"):
            return str(cohort.get("source") or "a simulator")
        manifest = self.manifest
        if manifest is not None and (manifest.parent / "truth").is_dir():
            return "hsafast.synth"
        return None

    def label_source(self) -> str | None:
        source = self.run.get("config", {}).get("data", {}).get("labels")
        return (
            {
                "stain": "read from each IHC slide by hsafast's stain quantification",
                "manifest": "the manifest's label column",
            }.get(source)
            if isinstance(source, str)
            else None
        )


def open_run(path: str | os.PathLike[str]) -> RunDir:
    """Find what a run directory holds; raise if it holds no predictions."""
    root = Path(path)
    if not root.is_dir():
        raise EvaluationError("not a run directory (no such folder)", root)
    notes: list[str] = []
    run: dict[str, Any] = {}
    run_json = root / "run.json"
    if run_json.is_file():
        try:
            loaded = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvaluationError(f"cannot read run.json: {exc}", run_json) from exc
        if not isinstance(loaded, dict):
            raise EvaluationError("run.json is not a JSON object", run_json)
        run = loaded
    else:
        notes.append("the run directory has no run.json: configuration and versions unknown")
    predictions = {
        p.stem: p
        for p in sorted((root / "predictions").glob("*.csv"))
        if p.name != TILE_TABLE and not p.name.startswith(".")
    }
    if not predictions:
        raise EvaluationError("no predictions/<mode>.csv in the run directory", root)
    embeddings = {
        p.stem: p for p in sorted((root / "embeddings").glob("*.npz")) if not p.name.startswith(".")
    }
    missing = sorted(set(predictions) - set(embeddings))
    if missing:
        notes.append(f"no embeddings for {', '.join(missing)}: no alignment analysis there")
    tiles = root / "predictions" / TILE_TABLE
    return RunDir(
        root=root,
        run=run,
        predictions=predictions,
        embeddings=embeddings,
        tiles=tiles if tiles.is_file() else None,
        notes=tuple(notes),
    )
