"""The slide label of a marker: checks that the image can be scored, then the marker's rule.

``slide_label`` pools the counts of the included tiles (positive cells over cells,
not a mean of tile ratios, which would over-weight sparse tiles), then refuses a
label, with the reason, where a pathologist would refuse to read the slide:

* no tissue, or no cells to score;
* eosin colours: hematoxylin-DAB scores of an H&E slide, or of an image that mixes
  H&E and DAB, are meaningless (H&E nuclei read as DAB-positive);
* no DAB anywhere: a negative stain cannot be told from a failed one;
* a nuclear marker whose DAB is not nuclear (a cytoplasmic or membranous stain);
* a p53 null pattern without a stained internal control.

Otherwise the marker's own rule (:meth:`~hsafast.stain.markers.Marker.read`) gives
the class. Nothing in a label is ever NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hsafast.stain.deconvolution import STAT_NAMES
from hsafast.stain.markers import CellCounts, Marker, MarkerReading, get_marker
from hsafast.stain.stats import (
    BLANK,
    EOSIN,
    FLAG_NAMES,
    NO_CELLS,
    SATURATED,
    QuantifyConfig,
    StainStats,
)


@dataclass(frozen=True)
class SlideLabel:
    """The slide-level reading of a marker."""

    marker: str
    label: str | None
    """Class name; None when the slide cannot be read (``reason`` says why)."""
    binary: str | None
    """"low" or "intermediate/high"."""
    score: float
    """Positive share (cells, or tissue pixels for cytoplasmic markers), 0-1."""
    groups: dict[str, str]
    flags: tuple[str, ...]
    n_cells: int
    n_tiles: int
    n_excluded: int
    details: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    """Why there is no label ('' when there is one)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "marker": self.marker,
            "label": self.label,
            "binary": self.binary,
            "score": self.score,
            "groups": self.groups,
            "flags": list(self.flags),
            "reason": self.reason,
            "n_cells": self.n_cells,
            "n_tiles": self.n_tiles,
            "n_excluded": self.n_excluded,
            "details": self.details,
        }


def slide_label(
    stats: StainStats, marker: Marker | str | None = None, config: QuantifyConfig | None = None
) -> SlideLabel:
    """The marker's class, binary label, score and flags for a slide.

    ``marker`` defaults to the one ``stats`` was measured for; ``config`` must hold
    the thresholds ``quantify`` ran with when they were changed.
    """
    cfg = config or QuantifyConfig()
    m = _marker(stats, marker)
    inc = stats.included
    col = {name: i for i, name in enumerate(STAT_NAMES)}
    px = stats.pixels[inc]
    tissue = float(px[:, col["tissue"]].sum())
    counts = stats.cells[inc].sum(axis=0) if inc.any() else np.zeros(4, np.int64)
    assert stats.others is not None and stats.pattern is not None
    others = stats.others[inc].sum(axis=0) if inc.any() else np.zeros(2, np.int64)
    flags: list[str] = []
    n_excluded = int((~inc).sum())
    if n_excluded:
        reasons = [
            f"{int(((stats.flags & bit) > 0).sum())} {name}"
            for bit, name in FLAG_NAMES.items()
            if bit != NO_CELLS and ((stats.flags & bit) > 0).any()
        ]
        flags.append(f"{n_excluded} tiles excluded ({', '.join(reasons)})")
    # tissue of every readable tile (not blank, not saturated), eosin-coloured or not
    readable = (stats.flags & (BLANK | SATURATED)) == 0
    readable_tissue = float(stats.pixels[readable, col["tissue"]].sum())
    eosin_tissue = float(stats.pixels[readable & ((stats.flags & EOSIN) > 0), col["tissue"]].sum())
    eosin_share = eosin_tissue / readable_tissue if readable_tissue > 0 else 0.0
    dab1 = float(px[:, col["dab_1"]].sum()) / tissue if tissue > 0 else 0.0
    holes, stained = (int(v) for v in stats.pattern[inc][:, 1:].sum(axis=0))
    details = {
        "tissue_pixels": tissue,
        "dab_1_fraction": dab1,
        "dab_mean": float(px[:, col["dab_sum"]].sum()) / tissue if tissue > 0 else 0.0,
        "residual_mean": float(px[:, col["residual_sum"]].sum()) / tissue if tissue > 0 else 0.0,
        "eosin_share": eosin_share,
        "other_cells": float(others[0]),
        "other_cells_positive": float(others[1]),
        "pattern_holes": float(holes),
        "pattern_stained": float(stained),
    }
    n_cells = int(counts[0])

    def refuse(reason: str, score: float = 0.0) -> SlideLabel:
        flags.append(reason.split(":")[0])
        return SlideLabel(
            m.name,
            None,
            None,
            score,
            {},
            tuple(flags),
            n_cells,
            len(stats),
            n_excluded,
            details,
            reason=reason,
        )

    if readable_tissue <= 0:
        return refuse("no tissue: every tile is blank or saturated")
    if eosin_share > cfg.max_eosin_share:
        pct = f"{100 * eosin_share:.0f}% of the tissue"
        if eosin_share >= 1.0 - cfg.max_eosin_share:
            return refuse(
                f"not hematoxylin-DAB: eosin colours on {pct} (an H&E slide?); "
                "DAB scores of H&E are meaningless"
            )
        return refuse(
            f"mixed stain: eosin colours on {pct}, hematoxylin-DAB on the rest; "
            "DAB scores of such an image are meaningless"
        )
    if dab1 < cfg.no_dab_fraction:
        return refuse(
            f"no DAB signal: DAB 1+ on {100 * dab1:.3f}% of the tissue; a negative stain "
            "cannot be told from a failed one or a section without DAB"
        )
    if m.compartment == "nuclear" and holes + stained >= cfg.min_pattern_nuclei:
        details["dab_holes_per_stained"] = holes / max(stained, 1)
        if holes > cfg.max_dab_holes * stained:
            return refuse(
                f"non-nuclear pattern: {holes} unstained nuclei lie in DAB rings against "
                f"{stained} stained nuclei on the checked tiles; the DAB is cytoplasmic or "
                f"membranous, not what {m.name} stains"
            )
    if m.compartment == "cytoplasmic":
        reading = m.read_pixels(tissue, float(px[:, m.positive_grade].sum()))
    else:
        reading = _read_cells(m, counts, others, flags)
        details.update({f"cells_{g}_fraction": _share(counts[g], n_cells) for g in (1, 2, 3)})
    if reading.label is None:
        return refuse(reading.reason, reading.score)
    return SlideLabel(
        m.name,
        reading.label,
        m.binary[reading.label],
        reading.score,
        {name: g[reading.label] for name, g in m.groupings.items()},
        tuple(flags) + reading.flags,
        n_cells,
        len(stats),
        n_excluded,
        details,
    )


def _read_cells(
    m: Marker, counts: np.ndarray, others: np.ndarray, flags: list[str]
) -> MarkerReading:
    n = int(counts[0])
    if n and n < m.min_cells:
        flags.append(f"few cells ({n})")
    return m.read(
        CellCounts(
            scored=n,
            graded=(int(counts[1]), int(counts[2]), int(counts[3])),
            others=int(others[0]),
            others_positive=int(others[1]),
        )
    )


def _share(count: float, total: float) -> float:
    return float(count) / total if total > 0 else 0.0


def _marker(stats: StainStats, marker: Marker | str | None) -> Marker:
    """The marker to read: the measured one unless another is given."""
    if marker is None:
        return stats.marker
    if isinstance(marker, Marker):
        return marker
    measured = stats.marker
    if marker.strip().lower() == measured.name:
        return measured
    found = get_marker(marker)
    return measured if found.name == measured.name else found
