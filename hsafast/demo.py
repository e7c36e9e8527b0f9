"""The embedded end-to-end run: every pipeline stage built so far, on bundled and simulated data.

Stage 1 reads the bundled real H&E slide (CMU-1, 20x): tissue detection, tiling at
0.5 um/px and tile reading. Stage 2 simulates a small paired H&E/IHC cohort with known
truth (``hsafast.synth``; a test pattern, not real data), then derives each IHC slide's
label from its DAB stain and registers each H&E/IHC pair, and scores both against the
simulator's truth. ``hsafast demo`` is the command-line form.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RealSlideResult:
    slide: str
    tissue_mm2: float
    tiles: int
    tiles_per_second: float


@dataclass
class CaseResult:
    case_id: str
    marker: str
    true_label: str
    derived_label: str | None
    derived_class: str | None
    score: float
    registration: str
    rtre_percent: float | None


@dataclass
class DemoReport:
    out_dir: str
    real: RealSlideResult
    cases: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label_accuracy(self) -> float:
        scored = [c for c in self.cases if c.derived_label is not None]
        if not scored:
            return float("nan")
        return float(np.mean([c.derived_label == c.true_label for c in scored]))

    @property
    def median_rtre_percent(self) -> float:
        values = [c.rtre_percent for c in self.cases if c.rtre_percent is not None]
        return float(np.median(values)) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "label_accuracy": self.label_accuracy,
            "median_rtre_percent": self.median_rtre_percent,
        }


def check_slide(slide_path: str | os.PathLike[str]) -> None:
    """Fail before anything is written if the demo cannot use ``slide_path``."""
    from hsafast.errors import MissingPixelSizeError
    from hsafast.slides import open_slide

    with open_slide(slide_path) as slide:
        try:
            _ = slide.mpp
        except MissingPixelSizeError as exc:
            raise MissingPixelSizeError(
                f"{exc.reason.partition('; pass ')[0]}; the demo needs a slide that records it",
                slide_path,
            ) from None


def run_real_slide(slide_path: Path, out_dir: Path) -> RealSlideResult:
    """Tissue, tiles and tile reading on one real slide; writes mask, GeoJSON and coords."""
    from hsafast.features import FeatureFile
    from hsafast.reading import read_tiles
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = slide_path.stem
    with open_slide(slide_path) as slide:
        mask = detect_tissue(slide)
        mask.to_png(out_dir / f"{stem}.mask.png")
        mask.save_geojson(out_dir / f"{stem}.geojson")
        mask.save_overlay(out_dir / f"{stem}.overlay.png")
        grid = tile_grid(slide, mask, mpp=0.5, size=256)
        FeatureFile.from_grid(grid, slide_id=stem, stain="HE").write(out_dir / f"{stem}.h5")
        start = time.perf_counter()
        n = sum(len(batch.coords) for batch in read_tiles(slide, grid, batch_size=64))
        seconds = time.perf_counter() - start
    return RealSlideResult(
        slide=str(slide_path),
        tissue_mm2=round(mask.area_mm2(), 3),
        tiles=n,
        tiles_per_second=round(n / seconds, 1) if seconds > 0 else float("inf"),
    )


def run_case(case: Any, truth: Any, out_dir: Path) -> CaseResult:
    """Label one simulated case from its IHC stain and register its pair, against truth."""
    from hsafast.registration import register
    from hsafast.slides import open_slide
    from hsafast.stain import quantify, slide_label
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    with open_slide(case.he_path) as he, open_slide(case.ihc_path) as ihc:
        grid = tile_grid(ihc, detect_tissue(ihc), mpp=0.5, size=256)
        label = slide_label(quantify(ihc, grid, case.marker), case.marker)
        reg = register(he, ihc)
        reg.save(out_dir / f"{case.case_id}.registration.json")
        rtre = None
        if reg.ok:
            he_xy, ihc_xy = truth.landmarks[:, :2], truth.landmarks[:, 2:]
            error = np.linalg.norm(reg.map(he_xy) - ihc_xy, axis=1)
            rtre = float(np.median(error) / np.hypot(*ihc.dimensions) * 100)
    return CaseResult(
        case_id=case.case_id,
        marker=case.marker,
        true_label=case.label or "",
        derived_label=label.binary,
        derived_class=label.label,
        score=round(label.score, 4),
        registration=reg.verdict if reg.ok else f"failed: {reg.reason}",
        rtre_percent=None if rtre is None else round(rtre, 3),
    )


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    cases: int = 6,
    slide_size: int = 3072,
    seed: int = 0,
    slide: str | os.PathLike[str] | None = None,
) -> DemoReport:
    """Run every stage on the bundled slide (or ``slide``) and a simulated cohort."""
    from hsafast._fileio import atomic_write_text
    from hsafast.data import sample_slide_path
    from hsafast.synth import make_cohort

    start = time.perf_counter()
    if slide is not None:
        check_slide(slide)
    out = Path(out_dir)
    report = DemoReport(
        out_dir=str(out), real=run_real_slide(Path(slide or sample_slide_path()), out / "real")
    )
    cohort = make_cohort(out / "cohort", cases, slide_size=slide_size, seed=seed)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    for case in cohort.cases:
        report.cases.append(run_case(case, cohort.truth(case.case_id), results))
    report.seconds = round(time.perf_counter() - start, 2)
    atomic_write_text(out / "summary.json", json.dumps(report.to_dict(), indent=2) + "\n")
    return report
