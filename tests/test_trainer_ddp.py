"""torchrun with 2 CPU processes (gloo) trains the same model as 1 process.

Each process takes half of every global batch; InfoNCE sees the gathered global batch,
masks are drawn per case and the per-case terms are weighted by each process's share, so
the averaged gradient is the one-process gradient up to the order of float32 sums. Dropout
is off here: each process draws its own dropout masks, as in any DDP run.

Tolerance: 1e-4 on every weight after the run (the float32 rounding of a different
summation order, amplified by AdamW's normalised steps, stays near 1e-6 here). The attention
logit bias ``pool.b_w`` is left out: it cancels in the softmax, so its gradient is zero up
to rounding, and AdamW turns that rounding noise into steps of size lr in either run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trainer_helpers import TILE, make_cohort

from hsafast.bundle import ModelBundle
from hsafast.trainer.config import load_config
from hsafast.trainer.run import train

TOLERANCE = 1e-4

CONFIG = f"""
manifest = "manifest.csv"
out = "run1"
modes = ["slide", "classification-only"]
folds = 2
val_fraction = 0.34
deterministic = true

[data]
target_mpp = 2.0
tile_size = {TILE}
workers = 1
cache = "cache"

[encoder]
name = "hsafast-test-tiny"

[slide]
features = "encoder"
embed_dim = 16
attention_hidden = 8
proj_dropout = 0.0
head_dropout = 0.0

[slide.optim]
epochs = 3
batch_size = 5
lr = 1e-3
warmup_epochs = 1
"""


@pytest.mark.timeout(600)
def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    make_cohort(tmp_path)
    config_path = tmp_path / "run.toml"
    config_path.write_text(CONFIG)
    train(load_config(config_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "hsafast.trainer",
        "--config",
        str(config_path),
        "--out",
        str(tmp_path / "run2"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 2 modes x 2 folds on 12 cases" in done.stdout
    for mode in ("slide", "classification-only"):
        for fold in range(2):
            one = ModelBundle.load(tmp_path / "run1" / "models" / mode / f"fold{fold}")
            two = ModelBundle.load(tmp_path / "run2" / "models" / mode / f"fold{fold}")
            a, b = one.state_dict(), two.state_dict()
            assert a.keys() == b.keys()
            for key in a:
                if key.endswith("pool.b_w"):
                    continue
                err = (a[key] - b[key]).abs()
                worst = int(err.argmax()) if err.numel() else 0
                assert float(err.max()) <= TOLERANCE, (
                    f"{mode} fold {fold} {key}: element {worst} differs by {float(err.max()):.3g}"
                )
    p1 = np.genfromtxt(tmp_path / "run1" / "predictions" / "slide.csv", delimiter=",", names=True)
    p2 = np.genfromtxt(tmp_path / "run2" / "predictions" / "slide.csv", delimiter=",", names=True)
    assert np.allclose(p1["p_low"], p2["p_low"], atol=1e-4)
