"""Simulated cohorts: paired H&E/IHC slides, a manifest and ground truth on disk.

``make_cohort`` decides each case's patient, marker and latent state, then renders
the slides in worker processes (one task per slide). Every case is drawn from its
own seed, so the output does not depend on the number of workers, a rerun with the
same arguments gives the same bytes, and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hsafast.errors import InvalidParameterError
from hsafast.manifest import Case, write_manifest
from hsafast.synth.markers import MARKERS

if TYPE_CHECKING:
    from hsafast.synth.model import CaseSpec
    from hsafast.synth.truth import CaseTruth

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Cohort:
    """A simulated cohort on disk."""

    out_dir: Path
    manifest_path: Path
    cases: tuple[Case, ...]
    seconds: float
    bytes_written: int
    skipped: int = 0

    def truth(self, case_id: str) -> CaseTruth:
        """The ground truth of one case (:class:`hsafast.synth.CaseTruth`)."""
        from hsafast.synth.truth import load_truth

        return load_truth(self.out_dir, case_id)


def _size(slide_size: int | tuple[int, int]) -> tuple[int, int]:
    w, h = (slide_size, slide_size) if isinstance(slide_size, int) else slide_size
    if min(w, h) < 512:
        raise InvalidParameterError(f"slides must be at least 512 pixels on a side, got {w}x{h}")
    return int(w), int(h)


def plan_cases(
    n_cases: int,
    markers: Sequence[str],
    slide_size: tuple[int, int],
    predictability: float,
    seed: int,
    mpp: float = 0.5,
    ki67_cutoff: float = 0.20,
    stain_variation: float = 1.0,
    warp: float = 1.0,
) -> list[CaseSpec]:
    """The cohort's case specs: patients (some with several cases), markers, latents."""
    from hsafast.synth.model import CaseSpec

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0407]))
    specs = []
    patient = 0
    remaining = n_cases
    while remaining > 0:
        k = min(remaining, int(rng.choice([1, 1, 1, 2, 2, 3])))
        m_patient, u_patient = rng.normal(0, 1, 2)
        for _ in range(k):
            i = n_cases - remaining
            m = float(np.sqrt(0.5) * m_patient + np.sqrt(0.5) * rng.normal())
            u = float(np.sqrt(0.5) * u_patient + np.sqrt(0.5) * rng.normal())
            specs.append(
                CaseSpec(
                    case_id=f"case{i + 1:04d}",
                    patient_id=f"patient{patient + 1:04d}",
                    marker=markers[i % len(markers)],
                    seed=(int(seed), i),
                    width=slide_size[0],
                    height=slide_size[1],
                    mpp=mpp,
                    predictability=predictability,
                    morphology=m,
                    independent=u,
                    ki67_cutoff=ki67_cutoff,
                    stain_variation=stain_variation,
                    warp=warp,
                )
            )
            remaining -= 1
        patient += 1
    return specs


def _slide_paths(out_dir: Path, case_id: str) -> tuple[Path, Path]:
    return out_dir / "slides" / f"{case_id}_HE.tif", out_dir / "slides" / f"{case_id}_IHC.tif"


def _render_task(
    spec: CaseSpec, stain: str, out_dir: str, single_thread: bool
) -> tuple[str, str, int]:
    import cv2

    from hsafast.synth.model import build_case
    from hsafast.synth.render import SlideRenderer
    from hsafast.synth.tiffwrite import write_pyramid
    from hsafast.synth.truth import write_truth

    if single_thread:
        cv2.setNumThreads(1)
    root = Path(out_dir)
    model = build_case(spec)
    renderer = SlideRenderer(model, stain)
    he_path, ihc_path = _slide_paths(root, spec.case_id)
    extra = {
        "Software": "hsafast.synth",
        "Stain": "H&E" if stain == "he" else f"IHC {spec.marker} (DAB)",
        "CaseID": spec.case_id,
    }
    size = write_pyramid(
        he_path if stain == "he" else ihc_path,
        spec.width,
        spec.height,
        renderer.render_block,
        mpp=spec.mpp,
        quality=renderer.style.jpeg_quality,
        extra=extra,
    )
    if stain == "he":
        write_truth(model, root / "truth" / spec.case_id)
    return spec.case_id, stain, size


def _can_spawn() -> bool:
    """Whether worker processes can be spawned (not from code typed on standard input)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is None or Path(path).is_file()


def _done(out_dir: Path, case_id: str) -> bool:
    he, ihc = _slide_paths(out_dir, case_id)
    return (
        he.is_file() and ihc.is_file() and (out_dir / "truth" / case_id / "labels.json").is_file()
    )


def make_cohort(
    out_dir: str | os.PathLike[str],
    n_cases: int,
    markers: Sequence[str] = MARKERS,
    slide_size: int | tuple[int, int] = 4096,
    predictability: float = 0.8,
    seed: int = 0,
    *,
    mpp: float = 0.5,
    ki67_cutoff: float = 0.20,
    stain_variation: float = 1.0,
    warp: float = 1.0,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Cohort:
    """Simulate ``n_cases`` paired H&E/IHC cases into ``out_dir``.

    Writes ``manifest.csv`` (labels ``"low"``/``"intermediate/high"``), ``slides/<case>_HE.tif`` and
    ``<case>_IHC.tif`` (pyramidal JPEG TIFF, ``mpp`` um/px at level 0), and
    ``truth/<case>/`` (see :mod:`hsafast.synth.truth`). Cases cycle through ``markers``;
    ``predictability`` in [0, 1] sets how strongly H&E morphology determines
    expression (0: not at all, a negative control). Finished cases are skipped.
    """
    markers = tuple(m.lower() for m in markers)
    bad = [m for m in markers if m not in MARKERS]
    if bad or not markers:
        raise InvalidParameterError(f"unknown markers {bad}; expected some of {MARKERS}")
    if n_cases < 1:
        raise InvalidParameterError(f"n_cases must be at least 1, got {n_cases}")
    if not 0.0 <= predictability <= 1.0:
        raise InvalidParameterError(f"predictability must be in [0, 1], got {predictability}")
    if not 0.0 < ki67_cutoff < 1.0:
        raise InvalidParameterError(f"ki67_cutoff is a fraction in (0, 1), got {ki67_cutoff}")
    if not 0.05 <= mpp <= 10.0:
        raise InvalidParameterError(f"mpp {mpp} um/px is implausible")
    root = Path(out_dir)
    t0 = time.perf_counter()
    specs = plan_cases(
        n_cases,
        markers,
        _size(slide_size),
        predictability,
        seed,
        mpp,
        ki67_cutoff,
        stain_variation,
        warp,
    )
    todo = [s for s in specs if not _done(root, s.case_id)]
    tasks = [(s, stain) for s in todo for stain in ("he", "ihc")]
    workers = workers or min(os.cpu_count() or 1, max(len(tasks), 1))
    done = 0
    if progress:
        progress(0, len(tasks))
    if workers <= 1 or len(tasks) <= 1 or not _can_spawn():
        for spec, stain in tasks:
            _render_task(spec, stain, str(root), False)
            done += 1
            if progress:
                progress(done, len(tasks))
    else:
        # spawn, not fork: a forked child inherits OpenCV's and BLAS's thread pools
        # in whatever state they were, which can deadlock
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_render_task, s, st, str(root), True) for s, st in tasks]
            for fut in futures:
                fut.result()
                done += 1
                if progress:
                    progress(done, len(tasks))
    cases = []
    written = 0
    for spec in specs:
        he, ihc = _slide_paths(root, spec.case_id)
        labels = json.loads((root / "truth" / spec.case_id / "labels.json").read_text())
        written += he.stat().st_size + ihc.stat().st_size
        cases.append(
            Case(
                case_id=spec.case_id,
                patient_id=spec.patient_id,
                he_path=he,
                ihc_path=ihc,
                marker=spec.marker,
                label=labels["label"],
            )
        )
    manifest = root / "manifest.csv"
    write_manifest(manifest, cases)
    return Cohort(
        out_dir=root,
        manifest_path=manifest,
        cases=tuple(cases),
        seconds=time.perf_counter() - t0,
        bytes_written=written,
        skipped=len(specs) - len(todo),
    )
