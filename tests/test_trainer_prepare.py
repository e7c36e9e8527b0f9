"""Case preparation on simulated slides: tiles, the stain-derived label, pairs and targets.

The simulator's truth is used here only to check what preparation derived from the slides.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hsafast.stain import quantify, slide_label
from hsafast.synth import load_truth, make_cohort
from hsafast.trainer.config import DataConfig
from hsafast.trainer.prepare import PreparedCase, cache_key, prepare_case


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("prepare_cohort")
    return make_cohort(root, 2, markers=("ki67",), slide_size=3072, seed=1, workers=1)


@pytest.fixture(scope="module")
def prepared(cohort) -> list[PreparedCase]:  # type: ignore[no-untyped-def]
    return [prepare_case(case, DataConfig(), "stain") for case in cohort.cases]


def test_prepared_case_follows_the_slides(cohort, prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    case, data = cohort.cases[0], DataConfig()
    prepared = prepared[0]
    n = len(prepared.he_tiles)
    assert n > 5 and prepared.he_tiles.shape[1:] == (128, 128, 3)
    assert prepared.he_tiles.dtype == np.uint8 and prepared.he_tiles.std() > 5
    assert prepared.registration == "ok" and prepared.pair_tiles.shape == prepared.he_tiles.shape
    assert len(prepared.ihc_tiles) > 5
    # the label is the stain's reading of the IHC slide, as hsafast.quantify gives it
    assert prepared.label in ("low", "intermediate/high")
    assert prepared.stain_class in ("low", "high")
    # targets: shares in [0, 1]; weight 0 exactly where the target is unknown
    assert ((prepared.targets >= 0) & (prepared.targets <= 1)).all()
    assert (prepared.targets[prepared.target_weight == 0] == 0).all()
    assert prepared.target_weight.sum() >= 3
    # the paired IHC tiles show the H&E tiles' tissue: the mapped corners agree with the truth
    truth = load_truth(cohort.out_dir, case.case_id)
    centre = prepared.he_coords + prepared.patch_size_level0 / 2
    assert np.isfinite(truth.map_he_to_ihc(centre)).all()
    # round trip through the cache file
    path = tmp_path / f"{case.case_id}-{cache_key(case, data, 'stain')}.npz"
    prepared.save(path)
    again = PreparedCase.load(path)
    assert again.label == prepared.label and np.array_equal(again.pair_tiles, prepared.pair_tiles)


def test_stain_targets_follow_the_true_positive_fraction(cohort, prepared) -> None:  # type: ignore[no-untyped-def]
    """Across both cases, tiles that the stain reads as more positive are truly more positive."""
    targets, truth_values = [], []
    for case, p in zip(cohort.cases, prepared, strict=True):
        truth = load_truth(cohort.out_dir, case.case_id)
        frac, n_tumour, *_ = truth.tile_counts(p.he_coords, p.patch_size_level0)
        keep = (p.target_weight > 0) & (n_tumour >= 5)
        targets += list(p.targets[keep])
        truth_values += list(frac[keep])
    first = cohort.cases[0]
    reading = slide_label(quantify(first.ihc_path, prepared[0].ihc_coords, "ki67", size=256))
    assert prepared[0].label == reading.binary
    assert len(targets) >= 8
    assert np.corrcoef(targets, truth_values)[0, 1] > 0.5


def test_cli_reports_bad_configuration_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('manifest = "m.csv"\nout = "o"\n[slide]\ntemprature = 0.1\n')
    done = subprocess.run(
        [sys.executable, "-m", "hsafast", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "temprature" in lines[0] and "run.toml" in lines[0]
