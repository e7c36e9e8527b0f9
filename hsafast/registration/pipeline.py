"""``register``: H&E and IHC sections of one block, from their low-resolution levels.

Stages (each in its own module): stain-agnostic images at one shared working
pixel size (``representation``), exhaustive rotation/flip search and ECC affine
refinement (``rigid``), an optional smooth displacement field (``nonrigid``),
and the quality verdict (``quality``). Parameters come from
``RegistrationConfig`` and are the same for every pair.
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np

from hsafast.registration.config import RegistrationConfig
from hsafast.registration.nonrigid import estimate_field
from hsafast.registration.quality import (
    assess,
    check_inputs,
    field_test,
    overlap_similarity,
    warp_to_fixed,
)
from hsafast.registration.representation import (
    Section,
    edge_image,
    load_section,
    scale_matrix,
    structure_image,
)
from hsafast.registration.rigid import coarse_candidates, refine_affine
from hsafast.registration.transform import Registration
from hsafast.slides.base import Slide

log = logging.getLogger(__name__)


def working_mpp(he_slide: Slide, ihc_slide: Slide, work_size: int) -> float:
    """One pixel size for both slides: the larger section fits in ``work_size`` pixels,
    and neither slide is upsampled."""
    extent = max(max(s.dimensions) * s.mpp for s in (he_slide, ihc_slide))
    return max(extent / work_size, he_slide.mpp, ihc_slide.mpp)


def register(
    he_slide: Slide, ihc_slide: Slide, config: RegistrationConfig | None = None
) -> Registration:
    """Register an IHC section to its H&E neighbour; always returns a verdict.

    Pairs that cannot be registered (an empty slide, different pixel sizes or
    tissue areas, poor overlap afterwards) come back with ``verdict='failed'``
    and the reason, rather than raising, so that a cohort run records them and
    goes on. A slide without pixel size raises ``MissingPixelSizeError``.
    """
    config = config or RegistrationConfig()
    start = time.perf_counter()
    he_mpp, ihc_mpp = he_slide.mpp, ihc_slide.mpp
    work = working_mpp(he_slide, ihc_slide, config.work_size)
    he = load_section(he_slide, work)
    ihc = load_section(ihc_slide, work)
    details: dict = {"work_mpp": work, "config": config.to_dict()}
    base = {
        "he_path": str(he_slide.path),
        "ihc_path": str(ihc_slide.path),
        "he_dimensions": tuple(he_slide.dimensions),
        "ihc_dimensions": tuple(ihc_slide.dimensions),
    }

    def finish(
        matrix: np.ndarray,
        field: np.ndarray | None,
        ok: bool,
        reason: str,
        quality: dict[str, float],
    ) -> Registration:
        details["seconds"] = round(time.perf_counter() - start, 3)
        affine0 = ihc.to_level0() @ matrix @ np.linalg.inv(he.to_level0())
        field0, field_scale = None, he.scale
        if field is not None:
            field0, field_scale = _store_field(field, he.scale, config.field_step)
        return Registration(
            affine=affine0,
            field=field0,
            field_scale=field_scale,
            verdict="ok" if ok else "failed",
            reason=reason,
            quality=quality,
            details=details,
            **base,  # type: ignore[arg-type]
        )

    reason = check_inputs(he, ihc, he_mpp, ihc_mpp, config)
    if reason:
        log.info("%s: %s", he_slide.path, reason)
        return finish(np.eye(3), None, False, reason, {})

    matrix, cc = _affine(he, ihc, config, details)
    if not np.isfinite(cc):
        return finish(matrix, None, False, "affine refinement did not converge", {})
    affine_verdict = assess(he, ihc, matrix, None, config)
    details["affine_quality"] = affine_verdict.quality

    field = None
    if config.nonrigid:
        # each section is binarised on its own grid (the quantile is of its own tissue)
        pairs = [
            (
                structure_image(he.od, q),
                warp_to_fixed(structure_image(ihc.od, q), matrix, he.shape, None),
            )
            for q in config.structure_quantiles
        ]
        field = estimate_field(
            pairs,
            he.tissue,
            config.flow_blur,
            config.flow_window,
            config.field_sigma,
            config.flow_downsample,
            workers=max(1, cv2.getNumThreads()),
        )
        details["field_max_px"] = round(float(np.abs(field).max()), 3)
    verdict = assess(he, ihc, matrix, field, config)
    if field is not None:
        # the flow is fitted to the tissue/lumen images; the verdict's edge correlation
        # checks it, and only a gain that noise alone rarely makes counts
        test = field_test(he, ihc, matrix, field, config)
        details["field_gain"] = round(test.gain, 2)
        details["field_test"] = {
            "r_affine": round(test.r_affine, 4),
            "r_field": round(test.r_field, 4),
            "r_between": round(test.r_between, 4),
            "samples": round(test.samples, 1),
        }
        if not test.gain > config.field_significance:
            details["field_rejected"] = verdict.quality
            field, verdict = None, affine_verdict
    return finish(matrix, field, verdict.ok, verdict.reason, verdict.quality)


def _store_field(
    field: np.ndarray, scale: tuple[float, float], step: int
) -> tuple[np.ndarray, tuple[float, float]]:
    """The field in level-0 pixels on a grid ``step`` times coarser (it is smooth)."""
    h, w = field.shape[:2]
    size = (max(2, round(w / step)), max(2, round(h / step)))
    coarse = cv2.resize(field, size, interpolation=cv2.INTER_AREA)
    coarse = coarse * np.array(scale, dtype=np.float32)
    return coarse.astype(np.float32), (scale[0] * w / size[0], scale[1] * h / size[1])


#: Downsample (of the working images) at which coarse candidates are compared.
CANDIDATE_DOWNSAMPLE = 4
#: Blur (working pixels) of the edge images on which candidates are compared: coarse, so
#: that a candidate a few pixels off still scores well before its refinement.
CANDIDATE_SIGMA = 8.0


def _shrink(
    section: Section, sigma: float, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blurred edge image and tissue mask ``factor`` times smaller, with the 3x3 map from
    their pixel indices to working ones."""
    h, w = section.shape
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    edges = cv2.resize(edge_image(section.od, sigma), size, interpolation=cv2.INTER_AREA)
    tissue = cv2.resize(section.tissue.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    back = scale_matrix(w / size[0], h / size[1])
    return edges, tissue > 0.5, back


def _affine(
    he: Section, ihc: Section, config: RegistrationConfig, details: dict
) -> tuple[np.ndarray, float]:
    """Coarse search, ECC on the best candidates at the coarsest level, the candidate whose
    tissue structure correlates best where the sections overlap through the whole pyramid;
    returns (matrix, ECC correlation)."""
    candidates = coarse_candidates(
        he.od * he.tissue,
        ihc.od * ihc.tissue,
        config.coarse_size,
        config.angle_step,
        config.flips,
        keep=config.candidates,
    )
    edges_he = edge_image(he.od, config.edge_sigma)
    edges_ihc = edge_image(ihc.od, config.edge_sigma)
    # the outline of a roundish section matches at many angles (and a section that lost a
    # piece matches the other's outline nowhere), so candidates are ranked on the
    # structure inside the tissue, compared where both sections have tissue
    # (at a quarter of the working resolution: the structure is blurred by 8 px anyway)
    he_small = _shrink(he, CANDIDATE_SIGMA, CANDIDATE_DOWNSAMPLE)
    ihc_small = _shrink(ihc, CANDIDATE_SIGMA, CANDIDATE_DOWNSAMPLE)
    coarsest = (max(config.ecc_levels),)
    best: tuple[float, int, np.ndarray, float] | None = None
    for i, cand in enumerate(candidates):
        matrix, cc = refine_affine(
            edges_he, edges_ihc, cand.matrix, coarsest, config.ecc_iterations
        )
        if not np.isfinite(cc):
            matrix = cand.matrix
        small = np.linalg.inv(ihc_small[2]) @ matrix @ he_small[2]
        ncc, overlap = overlap_similarity(
            he_small[0], ihc_small[0], he_small[1], ihc_small[1], small
        )
        score = ncc if overlap >= config.min_candidate_overlap else -1.0 + overlap
        if best is None or score > best[0]:
            best = (score, i, matrix, cc)
    assert best is not None
    chosen = candidates[best[1]]
    details.update(
        angle=chosen.angle,
        flip=chosen.flip,
        coarse_score=round(chosen.score, 4),
        coarse_rank=best[1],
        overlap_ncc=round(best[0], 4),
    )
    matrix, cc = refine_affine(
        edges_he, edges_ihc, best[2], tuple(config.ecc_levels), config.ecc_iterations
    )
    if not np.isfinite(cc):
        matrix, cc = best[2], best[3]
    details["ecc_correlation"] = round(float(cc), 4) if np.isfinite(cc) else None
    return matrix, float(cc)
