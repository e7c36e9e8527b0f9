"""The report of a run directory: files, tables, plain statements, CLI, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from evaluation_data import BINARY, make_run_dir, write_tiles_csv

from hsafast.cli import main
from hsafast.errors import EvaluationError
from hsafast.evaluation import (
    EvaluationConfig,
    ProbeConfig,
    ReportConfig,
    comparison_table,
    evaluate,
    format_table,
    write_report,
)
from hsafast.evaluation.bootstrap import Interval

# a coarse probe grid and PCA maps keep these tests fast; the probe and UMAP have their own
FAST = ReportConfig(
    embedding_map="pca", examples=0, probe=ProbeConfig(grid_points=3, inner_folds=3)
)
NO_PROBE = ReportConfig(embedding_map="pca", examples=0, probe=None)


def test_report_of_a_simulated_run(tmp_path: Path) -> None:
    """One report, checked three ways (one test, so parallel workers build it once)."""
    report = write_report(make_run_dir(tmp_path / "run", n_patients=30, tiles=True), config=FAST)
    _check_files_and_sections(report)
    _check_html(report)
    _check_numbers(report)


def _check_files_and_sections(report) -> None:
    assert report.folder == report.analysis.run.root / "report"
    text = report.markdown.read_text()
    for section in (
        "## Summary",
        "## What was simulated",
        "## Cases",
        "## P53: results",
        "## Ki-67: results",
        "## The paper's protocol",
        "## Alignment of H&E and IHC embeddings",
        "## Linear probe on frozen slide embeddings",
        "## Patch mode: maps beside the registered IHC",
        "## Beside the paper",
        "## Methods",
    ):
        assert section in text, section
    assert "**The slides of this run were simulated (hsafast.synth).**" in text
    assert "| Weighted F1 |" in text and "| Metric | Estimate | 95% CI |" in text
    assert "0.735 (0.670-0.799)" in text  # the paper's P53 figure, beside this run's
    for figure in report.figures:
        assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({figure.name})" in text


def _check_html(report) -> None:
    html = report.html.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<img ") == len(report.figures)
    assert 'src="data:image/png;base64,' in html and 'src="roc_' not in html
    assert "<table>" in html and "What was simulated" in html


def _check_numbers(report) -> None:
    summary = json.loads(report.summary.read_text())
    slide = report.analysis.run.predictions["slide"]
    from hsafast.evaluation import read_predictions

    p53 = read_predictions(slide).by_marker()["p53"]
    ev = evaluate(p53)
    stored = summary["markers"]["p53"]["evaluations"]["slide"]["metrics"]["weighted_f1"]
    assert stored["estimate"] == pytest.approx(ev.metrics["weighted_f1"].estimate, abs=1e-6)
    assert stored["low"] == pytest.approx(ev.metrics["weighted_f1"].low, abs=1e-6)
    paper = summary["markers"]["p53"]["paper_protocol"]["slide"]["weighted_f1"]
    cases = evaluate(p53, config=EvaluationConfig(resample="cases"))
    assert paper["low"] == pytest.approx(cases.metrics["weighted_f1"].low, abs=1e-6)
    assert summary["simulated"] == "hsafast.synth"
    assert set(summary["markers"]["p53"]["comparisons"]) == {"slide", "patch"}


def test_missing_labels_stop_the_report_or_are_listed(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", n_patients=30, with_train=False)
    path = run / "predictions" / "slide.csv"
    rows = list(csv.DictReader(path.open()))
    rows[0]["label"] = ""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(EvaluationError, match="no label") as err:
        write_report(run, config=NO_PROBE)
    assert rows[0]["case_id"] in str(err.value)
    noted = ReportConfig(
        evaluation=EvaluationConfig(on_mismatch="note"), embedding_map="none", examples=0
    )
    text = write_report(run, config=noted).markdown.read_text()
    assert rows[0]["case_id"] in text and "left out of every metric" in text
    # held-out embeddings only: the probe says what it lacks instead of inventing numbers
    assert "linear probe of slide mode not run" in text


def test_a_run_without_run_json_is_not_called_simulated_and_reruns_identically(
    tmp_path: Path,
) -> None:
    run = make_run_dir(tmp_path / "run", n_patients=25, modes={"slide": 2.0})
    (run / "run.json").unlink()
    first = write_report(run, tmp_path / "out", config=NO_PROBE)
    text = first.markdown.read_text()
    assert "Nothing in the run directory says that its slides were simulated" in text
    assert "no run.json" in text
    assert "simulated (" not in text
    again = write_report(run, tmp_path / "again", config=NO_PROBE)  # a rerun: the same bytes
    for a, b in zip(
        (first.markdown, first.summary, *first.figures),
        (again.markdown, again.summary, *again.figures),
        strict=True,
    ):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_comparison_table_for_the_demo() -> None:
    table = comparison_table(
        {
            "slide mode": {"p53": Interval(0.81, 0.74, 0.87, 0.95, 1000, 1000)},
            "negative control": {"p53": Interval(0.52, 0.40, 0.63, 0.95, 1000, 1000)},
        }
    )
    assert table.header == (
        "Marker",
        "slide mode",
        "negative control",
        "Paper (different, real dataset)",
    )
    assert table.rows == (
        ("P53", "0.810 (0.740-0.870)", "0.520 (0.400-0.630)", "0.735 (0.670-0.799)"),
    )
    text = format_table(table)
    assert "different dataset" in text and text.splitlines()[2].startswith("P53")


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run_dir(tmp_path / "run", n_patients=30, markers=("pdl1",), tiles=True)
    code = main(
        [
            "evaluate",
            str(run),
            "--out",
            str(tmp_path / "rep"),
            "--resamples",
            "200",
            "--probe",
            "none",
            "--examples",
            "1",
            "--no-register",
            "--embedding-map",
            "pca",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith("hsafast evaluate: 1 marker evaluated in ")
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "PCA map per fold" in text and "PD-L1" in text
    assert "200 resamples of patients" in text
    assert "maps are drawn on white" in text  # --no-register: no slides shown
    assert (tmp_path / "rep" / "embeddings_pdl1_slide.png").is_file()
    assert len(list((tmp_path / "rep").glob("example_*.png"))) == 1


@pytest.mark.slow
def test_umap_embedding_map(tmp_path: Path) -> None:
    """umap-learn compiles with numba on its first call in a process (15-60 s here)."""
    run = make_run_dir(tmp_path / "run", n_patients=25, markers=("ki67",))
    config = ReportConfig(embedding_map="umap", examples=0, probe=None)
    report = write_report(run, config=config)
    assert "UMAP map per fold" in report.markdown.read_text()
    assert (report.folder / "embeddings_ki67_slide.png").is_file()


def test_cli_reports_a_bad_run_directory_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hsafast evaluate: error: ") and "not a run directory" in err
    assert err.count("\n") == 1


@pytest.mark.slow
def test_example_figure_shows_the_registered_ihc_of_simulated_slides(tmp_path: Path) -> None:
    from hsafast.evaluation.examples import example_png, read_tile_maps
    from hsafast.synth import make_cohort

    cohort = make_cohort(tmp_path / "cohort", 1, slide_size=(1536, 1536), seed=2, workers=1)
    case = cohort.cases[0]

    one = SimpleNamespace(
        case_ids=[case.case_id], markers=[case.marker], labels=[case.label], folds=np.zeros(1)
    )
    write_tiles_csv(tmp_path / "tiles.csv", one, seed=0, grid=5)  # type: ignore[arg-type]
    png, how = example_png(
        read_tile_maps(tmp_path / "tiles.csv"),
        case.case_id,
        "example",
        tmp_path / "example.png",
        slides=(case.he_path, case.ihc_path),
    )
    assert "registration computed for this figure" in how
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert BINARY  # the tiles use the binary labels of the simulator
