"""The HistoStainAlign paper's reported results, to set beside a run's.

Weighted F1 with 95% bootstrap intervals, from the paper (arXiv 2506.15853):
GI and lung whole-slide images of one institution, a real and different
dataset from any hsafast run; Ki-67 from only 12 annotated slides. The numbers
are a reference point, not a target: a simulated cohort says nothing about how
hsafast would do on the paper's slides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hsafast.evaluation.bootstrap import Interval
from hsafast.evaluation.document import Table
from hsafast.evaluation.rundir import marker_name

__all__ = ["PAPER_SOURCE", "PAPER_WEIGHTED_F1", "comparison_table", "format_table"]

#: marker -> (weighted F1, 95% CI low, 95% CI high), as the paper reports them.
PAPER_WEIGHTED_F1: dict[str, tuple[float, float, float]] = {
    "p53": (0.735, 0.670, 0.799),
    "pdl1": (0.830, 0.772, 0.886),
    "ki67": (0.723, 0.607, 0.836),
}

PAPER_SOURCE = (
    "HistoStainAlign (arXiv 2506.15853), weighted F1 with 95% bootstrap CI on its own "
    "real GI and lung slides: a different dataset"
)

PAPER_COLUMN = "Paper (different, real dataset)"


def _cell(value: Interval | tuple[float, float, float] | None) -> str:
    if value is None:
        return "-"
    est, low, high = (
        (value.estimate, value.low, value.high) if isinstance(value, Interval) else value
    )
    if math.isnan(est):
        return "undefined"
    if math.isnan(low):
        return f"{est:.3f}"
    return f"{est:.3f} ({low:.3f}-{high:.3f})"


def comparison_table(
    columns: Mapping[str, Mapping[str, Interval | tuple[float, float, float]]],
) -> Table:
    """Weighted F1 per marker: one column per result set, then the paper's.

    ``columns`` maps a column title (e.g. "slide mode, 95% CI by patient" or
    "negative control") to ``{marker: interval}``. Markers the paper did not
    study get "-" in its column.
    """
    markers = sorted({m for values in columns.values() for m in values} | set(PAPER_WEIGHTED_F1))
    markers = [m for m in markers if any(m in v for v in columns.values())] or sorted(
        PAPER_WEIGHTED_F1
    )
    rows = tuple(
        (
            marker_name(m),
            *(_cell(values.get(m)) for values in columns.values()),
            _cell(PAPER_WEIGHTED_F1.get(m)),
        )
        for m in markers
    )
    return Table(
        header=("Marker", *columns, PAPER_COLUMN),
        rows=rows,
        caption="Weighted F1 (95% CI). " + PAPER_SOURCE + ".",
    )


def format_table(table: Table) -> str:
    """Plain-text rendering with aligned columns, for a terminal."""
    cells = [table.header, *table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if table.caption:
        lines.append(table.caption)
    return "\n".join(lines)
