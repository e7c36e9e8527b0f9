"""One simulated case: tissue, cells, expression, the consecutive-section transform, labels.

Everything a case is made of is drawn here from one seed, before any pixel is
rendered, so that the renderers of the two slides (which may run in different
processes) and the ground-truth writer all see the same case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hsafast.synth.cells import TUMOUR, Cells, make_cells
from hsafast.synth.deform import Deformation, random_deformation
from hsafast.synth.layout import Layout, make_layout
from hsafast.synth.markers import Expression, clinical_labels, express
from hsafast.synth.optics import StainStyle, random_style


@dataclass(frozen=True)
class CaseSpec:
    """What the cohort decides about a case; the rest follows from ``seed``."""

    case_id: str
    patient_id: str
    marker: str
    seed: tuple[int, ...]
    width: int
    height: int
    mpp: float = 0.5
    predictability: float = 0.8
    morphology: float = 0.0  # the case's visible latent grade
    independent: float = 0.0  # the part of expression H&E does not show
    ki67_cutoff: float = 0.20
    stain_variation: float = 1.0
    warp: float = 1.0


@dataclass
class CaseModel:
    spec: CaseSpec
    layout: Layout
    cells: Cells
    expression: Expression
    deformation: Deformation
    ihc_xy: np.ndarray  # (N, 2) float64 cell centres in IHC level-0 pixels
    present: np.ndarray  # bool: the cell is in the IHC section (not lost, on the glass)
    he_style: StainStyle
    ihc_style: StainStyle
    labels: dict[str, Any]
    landmarks: np.ndarray  # (L, 5): he_x, he_y, ihc_x, ihc_y, cell index
    latent: dict[str, float] = field(default_factory=dict)


def build_case(spec: CaseSpec) -> CaseModel:
    """Draw a whole case from its spec (deterministic)."""
    seq = np.random.SeedSequence(list(spec.seed))
    rng_layout, rng_cells, rng_expr, rng_geom, rng_style, rng_lm = (
        np.random.default_rng(s) for s in seq.spawn(6)
    )
    px_per_um = 1.0 / spec.mpp
    layout = make_layout(rng_layout, spec.width, spec.height, px_per_um, spec.morphology)
    cells = make_cells(layout, rng_cells, px_per_um, spec.morphology)
    p = float(spec.predictability)
    e_case = p * spec.morphology + float(np.sqrt(max(0.0, 1 - p * p))) * spec.independent
    expr = express(spec.marker, cells, rng_expr, p, e_case, spec.independent)
    deformation = random_deformation(rng_geom, spec.width, spec.height, warp=spec.warp)
    he_xy = np.stack([cells.x, cells.y], 1)
    ihc_xy = deformation.forward(he_xy)
    lost = layout.sample(layout.ihc[..., 0], cells.x, cells.y) > 0.5
    margin = 8.0
    on_glass = (
        (ihc_xy[:, 0] >= margin)
        & (ihc_xy[:, 1] >= margin)
        & (ihc_xy[:, 0] < spec.width - margin)
        & (ihc_xy[:, 1] < spec.height - margin)
    )
    present = ~lost & on_glass
    labels = clinical_labels(spec.marker, cells, expr, present, spec.ki67_cutoff)
    labels["latent"] = {
        "morphology": round(spec.morphology, 6),
        "independent": round(spec.independent, 6),
        "expression": round(e_case, 6),
        "predictability": p,
    }
    labels["p53_pattern_drawn"] = expr.pattern or None
    labels["architecture"] = layout.architecture
    he_style = random_style("he", rng_style, spec.stain_variation)
    ihc_style = random_style("ihc", rng_style, spec.stain_variation)
    landmarks = _landmarks(rng_lm, cells, he_xy, ihc_xy, present)
    return CaseModel(
        spec=spec,
        layout=layout,
        cells=cells,
        expression=expr,
        deformation=deformation,
        ihc_xy=ihc_xy,
        present=present,
        he_style=he_style,
        ihc_style=ihc_style,
        labels=labels,
        landmarks=landmarks,
        latent=labels["latent"],
    )


def _landmarks(
    rng: np.random.Generator,
    cells: Cells,
    he_xy: np.ndarray,
    ihc_xy: np.ndarray,
    present: np.ndarray,
    count: int = 60,
) -> np.ndarray:
    """Corresponding points on isolated tumour nuclei, spread over the section."""
    from scipy.spatial import cKDTree

    if len(cells) < 2:
        return np.zeros((0, 5))
    tree = cKDTree(he_xy)
    dist, _ = tree.query(he_xy, k=2)
    radius = np.maximum(cells.a, cells.b)
    isolated = dist[:, 1] > 2.6 * radius
    candidates = np.flatnonzero(present & isolated & (cells.kind == TUMOUR) & ~cells.mitosis)
    if len(candidates) < count:
        candidates = np.flatnonzero(present & isolated)
    chosen = np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    return np.column_stack([he_xy[chosen], ihc_xy[chosen], chosen.astype(np.float64)])
