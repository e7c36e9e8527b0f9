"""A whole training run on prepared cases: run directory, bundles, resume, native pooling."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import make_cohort, run_config

from hsafast.bundle import ModelBundle
from hsafast.trainer.run import train

MODES = ("slide", "patch", "classification-only", "mean-pool")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trainer_cohort")
    make_cohort(root)
    return root


@pytest.fixture(scope="module")
def run(cohort: Path) -> Path:
    out = cohort / "run"
    summary = train(run_config(cohort, out, deterministic=True))
    assert summary.cases == 12 and summary.failed == 0
    assert set(summary.accuracy) == set(MODES)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_run_directory_holds_every_mode_and_fold(run: Path) -> None:
    doc = json.loads((run / "run.json").read_text())
    assert doc["folds"]["k"] == 2 and len(doc["cases"]) == 12
    for mode in MODES:
        for fold in range(2):
            bundle = ModelBundle.load(run / "models" / mode / f"fold{fold}")
            assert bundle.mode == mode and list(bundle.models) == ["ki67"]
            assert bundle.encoder.in_bundle  # trained here (patch) or a seeded random init
            assert bundle.training["fold"] == fold
            assert (run / "models" / mode / f"fold{fold}" / "config.json").is_file()
            assert list((run / "models" / mode / f"fold{fold}").glob("train_log*.csv"))
        rows = _rows(run / "predictions" / f"{mode}.csv")
        assert sorted(r["case_id"] for r in rows) == [f"case{i:03d}" for i in range(12)]
        for r in rows:
            p = float(r["p_low"]) + float(r["p_intermediate/high"])
            assert abs(p - 1) < 1e-4 and r["fold"] == str(doc["folds"]["folds"][r["case_id"]])
        emb = np.load(run / "embeddings" / f"{mode}.npz")
        assert emb["he"].shape[0] == 24 and emb["he"].shape == emb["ihc"].shape  # 2 folds
        assert np.isfinite(emb["he"]).all() and np.isfinite(emb["ihc"]).all()
        test = emb["split"] == "test"
        assert sorted(emb["case_id"][test]) == [f"case{i:03d}" for i in range(12)]
        assert (emb["split"][~test] == "train").all()
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").rglob("*.pt"))
    tiles = _rows(run / "predictions" / "patch-tiles.csv")
    assert len(tiles) == 12 * 10
    assert all(0.0 <= float(t["positivity"]) <= 1.0 for t in tiles)


def test_predictions_are_read_by_the_evaluation(run: Path) -> None:
    from hsafast.evaluation.embeddings import read_embeddings
    from hsafast.evaluation.predictions import read_predictions

    preds = read_predictions(run / "predictions" / "slide.csv")
    assert len(preds) == 12 and set(preds.classes) == {"low", "intermediate/high"}
    embeddings = read_embeddings(run / "embeddings" / "slide.npz")
    assert embeddings.has_training_rows


def test_trained_pool_gives_the_native_kernels_result(run: Path) -> None:
    from hsafast.pooling import gated_attention_pool

    bundle = ModelBundle.load(run / "models" / "slide" / "fold0")
    model = bundle.model("ki67")
    rng = np.random.default_rng(1)
    h = rng.normal(0, 1, (300, model.config.embed_dim)).astype(np.float32)
    with torch.no_grad():
        expected, _ = model.pool(torch.from_numpy(h))
    native = gated_attention_pool(h, bundle.pool_params("ki67"), engine="cpu")
    got = np.asarray(native[0] if isinstance(native, tuple) else native)
    err = np.abs(got - expected[0].numpy())
    worst = int(err.argmax())
    assert err.max() < 1e-5, (
        f"worst element {worst}: native {got[worst]} vs torch {expected[0, worst]}"
    )


def test_rerun_skips_finished_folds_with_identical_outputs(run: Path, cohort: Path) -> None:
    before = {m: (run / "predictions" / f"{m}.csv").read_bytes() for m in MODES}
    train(run_config(cohort, run, deterministic=True))
    for mode in MODES:
        assert (run / "predictions" / f"{mode}.csv").read_bytes() == before[mode], mode


def test_interrupted_training_resumes_to_the_same_model(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dict(modes=("slide",), slide={"features": "encoder"}, deterministic=True, folds=2)
    whole = tmp_path / "whole"
    train(run_config(cohort, whole, **config))

    broken = tmp_path / "broken"
    real_save = torch.save
    calls = {"n": 0}

    def save_then_stop(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(obj, f, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # after the second epoch's checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(cohort, broken, **config))
    monkeypatch.setattr(torch, "save", real_save)
    assert list((broken / "checkpoints").rglob("checkpoint.pt"))
    train(run_config(cohort, broken, **config))
    a = ModelBundle.load(whole / "models" / "slide" / "fold0").state_dict()
    b = ModelBundle.load(broken / "models" / "slide" / "fold0").state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (whole / "predictions" / "slide.csv").read_bytes() == (
        broken / "predictions" / "slide.csv"
    ).read_bytes()


def test_transformer_aggregator_trains(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "tr"
    config = run_config(
        cohort,
        out,
        modes=("slide",),
        slide={"features": "encoder", "aggregator": "transformer"},
    )
    train(config)
    bundle = ModelBundle.load(out / "models" / "slide" / "fold1")
    assert bundle.model_config["aggregator"] == "transformer"
    shutil.rmtree(out)


def test_a_changed_configuration_is_not_resumed(cohort: Path, tmp_path: Path) -> None:
    from hsafast.trainer.checks import TrainingDataError

    out = tmp_path / "run"
    quick = dict(modes=("mean-pool",), slide={"features": "encoder"})
    train(run_config(cohort, out, **quick))
    changed = dict(modes=("mean-pool",), slide={"features": "encoder", "head_dropout": 0.3})
    with pytest.raises(TrainingDataError, match="another configuration") as info:
        train(run_config(cohort, out, **changed))
    assert info.value.path == out / "run.json"
    train(run_config(cohort, out, resume=False, **changed))
    bundle = ModelBundle.load(out / "models" / "mean-pool" / "fold0")
    assert bundle.model_config["head_dropout"] == 0.3
