"""The embedded end-to-end run of the whole method (``hsafast demo``).

One real H&E slide (the bundled CMU-1-Small-Region, or ``DemoConfig.slide``) through
tissue detection, the tile grid and tile reading; then two simulated paired H&E/IHC
cohorts, the main one and a negative control (predictability 0), each through
simulation, the trainer's preparation (tissue, tiles, the IHC stain's label and patch
targets, registration), training of slide mode, patch mode and the classification-only
baseline with patient-level folds, scoring of held-out slides with ``hsafast.Scorer``,
and the evaluation report. It closes with the weighted F1 of each model beside the
paper's and the control's. See docs/demo.md.

    from hsafast.demo import DemoConfig, run_demo
    result = run_demo("hsafast-demo", DemoConfig(cases=24))
"""

from __future__ import annotations

from hsafast.demo.config import DEMO_MODES, DemoConfig
from hsafast.demo.outputs import DemoResult, closing_table
from hsafast.demo.real import check_slide
from hsafast.demo.run import run_demo

__all__ = ["DEMO_MODES", "DemoConfig", "DemoResult", "check_slide", "closing_table", "run_demo"]
