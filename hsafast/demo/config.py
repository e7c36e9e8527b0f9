"""What the demo runs: cohort sizes, the real slide, how the two cohorts share the cores.

``config_from_mapping(DemoConfig, mapping)`` (``hsafast._config``) builds it from a
TOML table (``hsafast demo --config``); ``training`` and ``report`` are changes to the
trainer's ``demo_config`` and to ``ReportConfig``, checked by the same rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hsafast.errors import InvalidParameterError

if TYPE_CHECKING:
    from hsafast.evaluation import ReportConfig

__all__ = ["DEMO_MODES", "DemoConfig"]

#: The models the demo trains: the method (slide mode), hsafast's patch mode and the
#: paper's baseline (cross-entropy only), which the report compares them with.
DEMO_MODES = ("slide", "patch", "classification-only")


@dataclass(frozen=True)
class DemoConfig:
    """The embedded end-to-end run (``hsafast demo``)."""

    cases: int = 24
    """Simulated Ki-67 cases of the main cohort. With the control, 24 take about 3
    minutes on two idle cores (docs/demo.md, "Time"); time grows about linearly with
    the cases."""

    control_cases: int = 24
    """Cases of the negative control (predictability 0); as many as the main cohort,
    so that the two are read on the same footing."""

    slide_size: int = 2048
    """Side of each simulated slide in pixels at 0.5 um/px (1 mm): about 10-20 tissue
    tiles of 128 um per slide, enough for patch mode's pairs on 2 cores."""

    predictability: float = 0.8
    """How strongly H&E morphology determines expression in the main cohort (the
    simulator's default); the control uses 0 with the same patients and seed."""

    marker: str = "ki67"
    """Marker of both cohorts (one of the simulator's: ki67, p53, pdl1)."""

    seed: int = 0
    """Seed of both simulated cohorts, the folds and the training."""

    slide: str | None = None
    """A real slide to use instead of the bundled CMU-1 (it must record its pixel size)."""

    workers: int = 2
    """Cohorts processed at once. 2: the cohort and the control in two processes, each
    with one PyTorch thread and preparing its cases in-process, a core each; 1: one
    after the other, each with all cores."""

    training: Mapping[str, Any] = field(default_factory=dict)
    """Changes to the trainer's ``demo_config`` (top-level keys or whole sections, e.g.
    ``{"folds": 2, "patch": {...}}``), for both cohorts; checked when the demo starts."""

    report: Mapping[str, Any] = field(default_factory=dict)
    """Changes to the evaluation report's ``ReportConfig`` (e.g. ``{"examples": 1}``),
    for the main cohort; the control's report also skips the UMAP and the examples."""

    def __post_init__(self) -> None:
        for name in ("cases", "control_cases", "slide_size", "workers", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad(name, f"must be an integer, got {value!r}")
        for name, least in (("cases", 6), ("control_cases", 6), ("workers", 1)):
            if getattr(self, name) < least:
                raise _bad(name, f"must be at least {least}, got {getattr(self, name)}")
        if self.slide_size < 512:
            raise _bad("slide_size", f"must be at least 512 pixels, got {self.slide_size}")
        p = self.predictability
        if isinstance(p, bool) or not isinstance(p, int | float) or not (0.0 < p <= 1.0):
            raise _bad("predictability", f"must be in (0, 1] (0 is the control), got {p!r}")
        from hsafast.synth import MARKERS

        if self.marker not in MARKERS:
            raise _bad("marker", f"must be one of {MARKERS}, got {self.marker!r}")
        if self.slide is not None and not isinstance(self.slide, str | os.PathLike):
            raise _bad("slide", f"must be a path, got {self.slide!r}")
        for name in ("training", "report"):
            if not isinstance(getattr(self, name), Mapping):
                kind = type(getattr(self, name)).__name__
                raise _bad(name, f"must be a mapping of changes, got {kind}")
        self.report_config()  # unknown keys and bad values fail here

    def report_config(self) -> ReportConfig:
        """The main cohort's ``ReportConfig``: the defaults with ``report``'s changes."""
        from hsafast._config import config_from_mapping
        from hsafast.evaluation import ReportConfig

        return config_from_mapping(ReportConfig, self.report, section="DemoConfig.report")


def _bad(name: str, reason: str) -> InvalidParameterError:
    return InvalidParameterError(f"DemoConfig.{name}: {reason}")
