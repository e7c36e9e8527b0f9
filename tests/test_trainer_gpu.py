"""The GPU paths of the trainer against the CPU reference: DALI input, CUDA training.

DALI's pipeline also runs on its CPU operators, so its agreement with the torch input path
is checked wherever DALI is installed; the CUDA tests skip without a GPU.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import make_cohort, run_config

from hsafast.trainer.dali import dali_unavailable
from hsafast.trainer.data import apply_ops

try:
    import nvidia.dali  # noqa: F401

    DALI_MISSING = None
except ImportError:
    DALI_MISSING = "NVIDIA DALI is not installed (pip install 'hsafast[dali]')"

#: Preprocessing is one affine map per channel after a box average: float32 rounding only.
PIXEL_TOLERANCE = 1e-5


def _compare_dali(device_id: int | None) -> None:
    from hsafast.encoders import create_encoder
    from hsafast.encoders.base import resize_tiles
    from hsafast.trainer.dali import DaliPairs

    encoder = create_encoder("hsafast-test-tiny")  # 32-px input: 64-px tiles are box-averaged
    rng = np.random.default_rng(0)
    he = torch.from_numpy(rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8))
    ihc = torch.from_numpy(rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8))
    ops = torch.arange(16) % 8  # every flip/rotation twice
    pipe = DaliPairs(16, encoder.mean, encoder.std, device_id)
    got = [resize_tiles(x, encoder.input_size).cpu() for x in pipe(he, ihc, ops)]
    for name, tiles, out in (("he", he, got[0]), ("ihc", ihc, got[1])):
        ref = encoder.preprocess(apply_ops(tiles, ops))
        err = (out - ref).abs()
        worst = np.unravel_index(int(err.argmax()), tuple(err.shape))
        assert float(err.max()) <= PIXEL_TOLERANCE, (
            f"{name}: worst element {worst} (op {int(ops[worst[0]])}): "
            f"DALI {float(out[worst]):.6f} vs torch {float(ref[worst]):.6f}"
        )


@pytest.mark.skipif(DALI_MISSING is not None, reason=str(DALI_MISSING))
def test_dali_cpu_operators_match_the_torch_input_path() -> None:
    _compare_dali(None)


@pytest.mark.gpu
def test_dali_gpu_pipeline_matches_the_torch_input_path() -> None:
    reason = dali_unavailable("cuda")
    if reason:
        pytest.skip(reason)
    _compare_dali(0)


def test_dali_refusal_names_its_reason(tmp_path: Path) -> None:
    from hsafast.trainer.checks import TrainingDataError
    from hsafast.trainer.config import DataConfig
    from hsafast.trainer.run import train

    make_cohort(tmp_path, n_cases=6, tiles=3)
    data = DataConfig(target_mpp=2.0, tile_size=32, workers=1, cache=str(tmp_path / "cache"))
    config = run_config(tmp_path, tmp_path / "out", device="cpu", folds=2)
    from dataclasses import replace

    with pytest.raises(TrainingDataError, match="DALI input pipeline runs on a CUDA GPU"):
        train(replace(config, data=replace(data, pipeline="dali")))


@pytest.mark.gpu
def test_cuda_training_follows_the_cpu_run(tmp_path: Path) -> None:
    """Slide mode on CUDA gives the CPU run's held-out probabilities within 0.02 (float32
    kernels differ in summation order; AdamW's normalised steps carry that into weights)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from hsafast.trainer.run import train

    make_cohort(tmp_path)
    settings = dict(modes=("slide",), slide={"features": "encoder"}, deterministic=True)
    train(run_config(tmp_path, tmp_path / "cpu", device="cpu", **settings))
    train(run_config(tmp_path, tmp_path / "gpu", device="cuda", **settings))
    rows = {}
    for name in ("cpu", "gpu"):
        with (tmp_path / name / "predictions" / "slide.csv").open(newline="") as f:
            rows[name] = {r["case_id"]: float(r["p_low"]) for r in csv.DictReader(f)}
    diff = {c: abs(rows["cpu"][c] - rows["gpu"][c]) for c in rows["cpu"]}
    worst = max(diff, key=diff.__getitem__)
    assert diff[worst] < 0.02, f"{worst}: CPU {rows['cpu'][worst]} vs CUDA {rows['gpu'][worst]}"
