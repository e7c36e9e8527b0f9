"""Marker expression per cell, and slide labels by the clinical reading rules.

Expression follows a latent ``e = p * m + sqrt(1 - p**2) * u`` per cell, where ``m``
is the cell's visible morphological state, ``u`` an independent state with the same
case/gland/cell structure, and ``p`` the cohort's ``predictability``. With ``p = 0``
expression (and so every label) is independent of anything H&E shows.

Binary labels are the paper's ``"low"`` versus ``"intermediate/high"`` expression,
mapped from the clinical class by the built-in marker definitions of
:mod:`hsafast.stain.markers` (one mapping for truth and for stain-derived labels):
Ki-67 index >= cut-off, P53 overexpression, and PD-L1 TPS >= 1% are
``"intermediate/high"``; the P53 wild-type and null patterns are ``"low"``, and
``labels.json`` records whether the P53 pattern is aberrant.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import erf, sqrt
from typing import Any

import numpy as np

from hsafast.synth.cells import IMMUNE, STROMA, TUMOUR, Cells

MARKERS = ("ki67", "p53", "pdl1")
COMPARTMENTS = {"ki67": "nuclear", "p53": "nuclear", "pdl1": "membrane"}
#: A P53 nucleus counts as strongly stained from this DAB load (0..1).
P53_STRONG = 0.6


def _phi(x: float) -> float:
    return 0.5 * (1 + erf(x / sqrt(2)))


@dataclass
class Expression:
    positive: np.ndarray  # bool per cell
    intensity: np.ndarray  # float32 DAB load per cell, 0 when negative
    latent: np.ndarray  # float32 expression latent per cell
    compartment: str
    pattern: str  # P53 pattern drawn for the case ("" for other markers)


def expression_latent(
    cells: Cells, rng: np.random.Generator, predictability: float, u_case: float
) -> np.ndarray:
    """Per-cell expression latent with the same case/gland/cell structure as ``m``."""
    n = len(cells)
    groups = max(int(cells.group.max()) + 1 if n else 1, 1)
    group_effect = rng.normal(0, 1, groups)
    tumour = cells.kind == TUMOUR
    u = np.where(
        tumour,
        u_case + 0.45 * group_effect[np.maximum(cells.group, 0)] + 0.55 * rng.normal(0, 1, n),
        0.2 * u_case + rng.normal(0, 1, n),
    )
    p = float(predictability)
    return (p * cells.m + sqrt(max(0.0, 1 - p * p)) * u).astype(np.float32)


def express(
    marker: str,
    cells: Cells,
    rng: np.random.Generator,
    predictability: float,
    e_case: float,
    u_case: float,
) -> Expression:
    """Which cells stain and how strongly, for one marker."""
    e = expression_latent(cells, rng, predictability, u_case)
    n = len(cells)
    kind = cells.kind
    tumour, stroma, immune = kind == TUMOUR, kind == STROMA, kind == IMMUNE
    pos = np.zeros(n, bool)
    inten = np.zeros(n, np.float32)
    pattern = ""
    noise = rng.uniform(0, 1, n)
    if marker == "ki67":
        pos = tumour & (e > 0.6)
        pos |= stroma & (noise < 0.02)
        pos |= immune & (noise < 0.06)
        strength = np.clip((e - 0.6) / 1.2, 0, 1)
        inten = np.where(pos, 0.4 + 0.5 * strength + rng.uniform(0, 0.15, n), 0)
    elif marker == "p53":
        aberrant = e_case > 0.15
        pattern = "wild-type"
        if aberrant:
            pattern = "null" if rng.random() < 0.3 else "overexpression"
        rel = e - e_case
        if pattern == "wild-type":
            pos = tumour & ((rel > 0.75) | (noise < 0.04))
            pos |= (stroma | immune) & (noise < 0.05)
            inten = np.where(pos, rng.uniform(0.12, 0.55, n), 0)
        elif pattern == "overexpression":
            pos = tumour & (rel > -1.3)
            weak = (stroma | immune) & (noise < 0.05)
            inten = np.where(pos, rng.uniform(0.7, 1.0, n), np.where(weak, 0.25, 0))
            pos |= weak
        else:
            pos = (stroma | immune) & (noise < 0.15)
            inten = np.where(pos, rng.uniform(0.2, 0.55, n), 0)
    elif marker == "pdl1":
        pos = tumour & (e > 0.9)
        pos |= immune & (noise < 0.08 + 0.5 * _phi(e_case))
        strength = np.clip((e - 0.9) / 1.2, 0, 1)
        inten = np.where(pos, np.where(tumour, 0.35 + 0.6 * strength, rng.uniform(0.3, 0.8, n)), 0)
    else:
        raise ValueError(f"unknown marker {marker!r}; expected one of {MARKERS}")
    return Expression(
        positive=pos,
        intensity=np.clip(inten, 0, 1).astype(np.float32),
        latent=e,
        compartment=COMPARTMENTS[marker],
        pattern=pattern,
    )


def pdl1_class(tps_percent: float) -> str:
    if tps_percent < 1.0:
        return "<1%"
    return "1-49%" if tps_percent < 50.0 else ">=50%"


def clinical_labels(
    marker: str,
    cells: Cells,
    expr: Expression,
    present: np.ndarray,
    ki67_cutoff: float = 0.20,
) -> dict[str, Any]:
    """Slide labels read off the cells present in the IHC section, by clinical rules."""
    tumour = (cells.kind == TUMOUR) & present
    n_t = int(tumour.sum())
    pos_t = int((tumour & expr.positive).sum())
    frac = pos_t / n_t if n_t else 0.0
    out: dict[str, Any] = {
        "marker": marker,
        "compartment": expr.compartment,
        "n_tumour_cells": n_t,
        "n_positive_tumour_cells": pos_t,
        "tumour_positive_fraction": round(frac, 6),
    }
    if marker == "ki67":
        out.update(
            ki67_index=round(100 * frac, 4),
            ki67_cutoff=round(100 * ki67_cutoff, 4),
            ki67_class="high" if frac >= ki67_cutoff else "low",
        )
        out["label"] = binary_label("ki67", out["ki67_class"])
    elif marker == "p53":
        strong = int((tumour & expr.positive & (expr.intensity >= P53_STRONG)).sum())
        controls = (cells.kind != TUMOUR) & present
        control_pos = int((controls & expr.positive).sum())
        if n_t and strong / n_t >= 0.8:
            pattern = "overexpression"
        elif n_t and pos_t == 0 and control_pos > 0:
            pattern = "null"
        else:
            pattern = "wild-type"
        out.update(
            p53_pattern=pattern,
            p53_strong_fraction=round(strong / n_t if n_t else 0.0, 6),
            p53_internal_control_positive=control_pos,
            p53_aberrant=pattern != "wild-type",
        )
        out["label"] = binary_label("p53", pattern)
    elif marker == "pdl1":
        immune_pos = int(((cells.kind == IMMUNE) & present & expr.positive).sum())
        tps = 100 * frac
        out.update(
            pdl1_tps=round(tps, 4),
            pdl1_cps=round(min(100.0, 100 * (pos_t + immune_pos) / n_t) if n_t else 0.0, 4),
            pdl1_class=pdl1_class(tps),
        )
        out["label"] = binary_label("pdl1", out["pdl1_class"])
    return out


def binary_label(marker: str, clinical_class: str) -> str:
    """The paper's binary label of a clinical class, as the stain markers define it."""
    from hsafast.stain.markers import get_marker

    return get_marker(marker).binary[clinical_class]
