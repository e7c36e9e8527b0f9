"""The fused Triton pooling kernels against the PyTorch reference, on the CPU.

Triton's interpreter (TRITON_INTERPRET=1) runs the same kernel source with NumPy, so the
indexing, masking, block softmax and merge are checked on every machine with Triton
installed; the compiled kernels are checked on the GPU in test_pooling_gpu.py. The
interpreter has no bfloat16 arithmetic, so these cases run in float16. It is chosen when
Triton's kernels are defined, hence a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("triton")

#: (N, D, H): one row, tiny shapes, ragged N/D/H, several row blocks and hidden slabs,
#: D a multiple of the reduction step (the unmasked path)
CASES = [(1, 64, 32), (2, 8, 1), (129, 200, 37), (1000, 100, 70), (300, 256, 160)]
SMALL_TILES = {"rows": 64, "hidden": 32, "depth": 32, "sum_width": 64}


def _interpreted(
    cases: list[tuple[int, int, int]], bad: str | None = None, weighted_sum: str = "reduce"
) -> list[dict]:
    """Runs the kernels in a fresh interpreter process; returns per-case errors."""
    script = Path(__file__).with_name("triton_interpreted_cases.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    tiles = {**SMALL_TILES, "weighted_sum": weighted_sum}
    arg = json.dumps({"cases": cases, "tiles": tiles, "bad": bad})
    done = subprocess.run(
        [sys.executable, str(script), arg], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("weighted_sum", ["reduce", "dot"])
def test_interpreted_kernels_match_reference(weighted_sum: str) -> None:
    for r in _interpreted(CASES, weighted_sum=weighted_sum):
        case = tuple(r["case"])
        assert r["status"] == 0, f"{case}: finite input flagged"
        for what in ("pooled", "weights", "logits", "max", "sum"):
            assert r[what] <= 1e-5, f"{case}: {what} relative error {r[what]:.2e}"
        assert abs(r["weights_sum"] - 1.0) < 1e-5, case


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_interpreted_kernels_flag_non_finite_input(bad: str) -> None:
    (r,) = _interpreted([(300, 96, 40)], bad=bad)
    assert r["status"] == 1
    assert not np.isfinite(r["pooled_first"])
