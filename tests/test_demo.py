"""The embedded end-to-end run (``hsafast demo``): every stage ran, every promised file is valid.

The default tier runs a tiny demo (8 cases per cohort, 2 folds, one epoch, a short
report); the ``slow`` tier runs the full default from the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from hsafast.cli import main
from hsafast.demo import DemoConfig, DemoResult, closing_table, run_demo
from hsafast.demo.outputs import checks, reading
from hsafast.errors import ConfigError, InvalidParameterError

ONE_EPOCH = {"epochs": 1, "batch_size": 8, "lr": 1e-3, "warmup_epochs": 0}
TINY = DemoConfig(
    # 8 cases: with 6 a class may fall to one patient, which 2 folds cannot split
    cases=8,
    control_cases=8,
    training={"folds": 2, "patch": {"optim": ONE_EPOCH, "slide_optim": ONE_EPOCH},
              "slide": {"optim": ONE_EPOCH}},
    report={"embedding_map": "pca", "examples": 1, "evaluation": {"n_resamples": 200}},
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, list[tuple[str, str]]]:
    out = tmp_path_factory.mktemp("demo") / "out"
    steps: list[tuple[str, str]] = []

    def progress(pipeline: str, message: str, final: bool) -> None:
        if final:
            steps.append((pipeline, message))

    return run_demo(out, TINY, progress), steps


def _png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} does not decode as an image"
    return image


def test_every_stage_reports_progress(tiny: tuple[DemoResult, Any]) -> None:
    _, steps = tiny
    assert steps[0][0] == "real" and "tiles" in steps[0][1]
    for cohort in ("cohort", "control"):
        said = " / ".join(message for pipeline, message in steps if pipeline == cohort)
        for stage in ("simulated", "trained", "scored", "report"):
            assert stage in said, f"{cohort}: no {stage!r} line in {said!r}"


def test_real_slide_outputs(tiny: tuple[DemoResult, Any]) -> None:
    result, _ = tiny
    real = Path(result.out_dir) / "real"
    assert result.real.tiles > 20 and result.real.tissue_mm2 > 0.1
    geojson = json.loads((real / "CMU-1-Small-Region.geojson").read_text())
    assert geojson["features"], "the bundled slide has tissue"
    mask = _png(real / "CMU-1-Small-Region.mask.png")
    assert 0 < np.count_nonzero(mask) < mask.size
    overlay = _png(real / "CMU-1-Small-Region.overlay.png")
    assert max(overlay.shape[:2]) >= 1500, "the overlay is drawn large"
    # the tile grid's outlines: pure (30, 90, 220) RGB pixels, stored BGR by OpenCV
    outline = np.all(overlay[..., :3] == (220, 90, 30), axis=-1)
    assert outline.sum() > result.real.tiles * 50, "every tile is outlined"
    assert (real / "CMU-1-Small-Region.h5").stat().st_size > 0


def test_cohorts_were_trained_scored_and_reported(tiny: tuple[DemoResult, Any]) -> None:
    result, _ = tiny
    out = Path(result.out_dir)
    for name, run in (("cohort", "run"), ("control", "control-run")):
        c = result.cohorts[name]
        assert c.labelled >= 4 and c.tiles > 0 and c.pairs > 0
        assert c.stain_labels_agree >= c.labelled // 2, "labels read from the stain"
        assert set(c.weighted_f1) == {"slide", "patch", "classification-only"}
        for estimate, low, high in c.weighted_f1.values():
            assert 0.0 <= low <= estimate <= high <= 1.0
        for mode in ("slide", "patch"):
            scored = c.scored[mode]
            assert scored["slides"] == c.labelled, f"{name}/{mode}: every held-out slide"
            # the scorer, from pixels, repeats the trainer's held-out prediction
            assert scored["max_difference_from_trainer"] < 1e-3, (name, mode, scored)
            results = sorted((out / run / "scores" / mode).glob("fold*/*.HE.json"))
            assert len(results) == scored["slides"]
            assert json.loads(results[0].read_text())["status"] == "ok"
            for heatmap in (out / run / "scores" / mode).glob("fold*/*.png"):
                assert _png(heatmap).size > 0
        report = (out / run / "report" / "report.md").read_text()
        assert "| Metric" in report or "|---" in report, "the report has its tables"
        assert (out / run / "report" / "report.html").stat().st_size > 0
        figures = list((out / run / "report").glob("*.png"))
        assert any(p.name.startswith("roc_") for p in figures)
        assert any(p.name.startswith("confusion_") for p in figures)
        for figure in figures:
            _png(figure)
    main_figures = [p.name for p in (out / "run" / "report").glob("*.png")]
    assert any(n.startswith("embeddings_") for n in main_figures)
    assert any(n.startswith("example_") for n in main_figures), "a heatmap beside its IHC"


def test_summary_results_and_readme(tiny: tuple[DemoResult, Any]) -> None:
    result, _ = tiny
    out = Path(result.out_dir)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "hsafast.demo"
    assert summary["cohorts"]["control"]["predictability"] == 0.0
    results = (out / "results.md").read_text()
    assert "Paper (different, real dataset)" in results
    assert "Negative control: slide mode" in results
    said = reading(result)
    assert said and all(line in results for line in said), "the table is read in words"
    readme = (out / "README.md").read_text()
    for entry in out.iterdir():  # the README names every other file and folder in it
        if entry.name == "README.md":
            continue
        assert f"`{entry.name}" in readme, f"README.md does not describe {entry.name}"
    table = closing_table(result)
    assert table.header[-1].startswith("Paper") and len(table.rows) == 1
    assert any("registered" in line for line in checks(result))


# an unreadable --slide or one without a pixel size: tests/test_cli.py


def test_refuses_a_foreign_folder_and_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("someone's work")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "someone's work"

    assert main(["demo", "--out", str(tmp_path / "x"), "--cases", "3"]) == 2
    assert "cases" in capsys.readouterr().err and not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="DemoConfig.report: unknown key 'umap'"):
        DemoConfig(report={"umap": True})
    with pytest.raises(InvalidParameterError, match="DemoConfig.training"):
        DemoConfig(training=[("folds", 2)])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="slide"):
        run_demo(tmp_path / "y", DemoConfig(training={"slide": {"epochs": 3}}))
    assert not (tmp_path / "y").exists()


@pytest.mark.slow
def test_full_demo_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hsafast-demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Paper (different, real dataset)" in printed and "hsafast demo: whole method" in printed
    summary = json.loads((out / "summary.json").read_text())
    for cohort in summary["cohorts"].values():
        assert cohort["failed_cases"] <= 3 and cohort["registered"] >= 0.8 * cohort["labelled"]
        assert cohort["stain_labels_agree"] >= 0.8 * cohort["labelled"]
        for scored in cohort["scored"].values():
            assert scored["slides"] == cohort["labelled"]
