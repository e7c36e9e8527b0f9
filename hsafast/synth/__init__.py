"""Simulated paired H&E/IHC whole slides with known ground truth.

A test-pattern generator for computational pathology: cohorts of consecutive-section
pairs whose geometry (affine + smooth warp), per-cell staining and slide labels are
known exactly, for testing and benchmarking registration, stain quantification,
training and scoring. It is not a substitute for real data. See ``docs/synth.md``.
"""

from __future__ import annotations

from hsafast.synth.cohort import Cohort, make_cohort, plan_cases
from hsafast.synth.markers import MARKERS
from hsafast.synth.truth import CaseTruth, load_truth

__all__ = ["MARKERS", "CaseTruth", "Cohort", "load_truth", "make_cohort", "plan_cases"]
