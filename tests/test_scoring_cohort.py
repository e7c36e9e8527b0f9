"""Cohorts: per-slide JSON and heatmaps, Parquet + CSV tables, failures recorded, resume."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scoring_helpers import random_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "b"
    random_bundle(path)
    return path


@pytest.fixture
def cohort(tmp_path, cmu_svs):
    """Two copies of a real slide, a truncated one, and a blank image with a manifest."""
    import cv2

    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(cmu_svs, folder / "a.svs")
    shutil.copy(cmu_svs, folder / "b.svs")
    data = cmu_svs.read_bytes()
    (folder / "broken.svs").write_bytes(data[: len(data) // 2])
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "glass.png"), np.clip(rng.normal(240, 3, (400, 500, 3)), 0, 255))
    return folder


def test_cohort_outputs_failures_and_resume(bundle_dir, cohort, tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from hsafast.scoring import Scorer, ScoringOptions, SlideResult

    scorer = Scorer(bundle_dir, engine="torch", device="cpu", options=ScoringOptions(slide_mpp=0.5))
    out = tmp_path / "out"
    report = scorer.score_many(cohort, out)
    assert sorted(report.done) == ["a", "b", "glass"]
    assert [sid for sid, _ in report.failed] == ["broken"]
    assert "truncated" in report.failed[0][1]
    assert report.exit_code == 1
    a = SlideResult.load(out / "a.json")
    assert a.status == "ok" and set(a.markers) == {"ki67", "p53"}
    assert SlideResult.load(out / "glass.json").status == "no_tissue"
    assert (out / "heatmaps" / "a.ki67.geojson").is_file()
    assert (out / "heatmaps" / "a.p53.positivity.png").is_file()
    assert "broken.svs" in (out / "failures.csv").read_text()
    table = pq.read_table(out / "results.parquet")
    rows = table.to_pylist()
    assert [(r["slide_id"], r["marker"], r["status"]) for r in rows] == [
        ("a", "ki67", "ok"),
        ("a", "p53", "ok"),
        ("b", "ki67", "ok"),
        ("b", "p53", "ok"),
        ("broken", None, "failed"),
        ("glass", None, "no_tissue"),
    ]
    assert rows[0]["p_high"] == pytest.approx(a.markers["ki67"].probabilities[1])
    assert pacsv.read_csv(out / "results.csv").num_rows == 6

    # a rerun skips what is done, retries the failure, and writes the same table
    stamp = (out / "a.json").stat().st_mtime_ns
    again = scorer.score_many(cohort, out)
    assert sorted(again.skipped) == ["a", "b", "glass"] and not again.done
    assert (out / "a.json").stat().st_mtime_ns == stamp
    assert pq.read_table(out / "results.parquet").equals(table)


def test_manifest_cases_are_scored_under_their_case_ids(bundle_dir, cmu_svs, tmp_path):
    from hsafast.manifest import Case, write_manifest
    from hsafast.scoring import Scorer

    shutil.copy(cmu_svs, tmp_path / "he.svs")
    write_manifest(
        tmp_path / "cohort.csv",
        [Case("case-7", "p1", tmp_path / "he.svs", tmp_path / "ihc.svs", "ki67")],
    )
    report = Scorer(bundle_dir, engine="torch", device="cpu").score_many(
        tmp_path / "cohort.csv", tmp_path / "out", heatmaps=False
    )
    assert report.done == ["case-7"] and (tmp_path / "out" / "case-7.json").is_file()
    assert not (tmp_path / "out" / "heatmaps").exists()


def test_cli_score(bundle_dir, cohort, tmp_path, capsys):
    from hsafast.cli import main

    (cohort / "glass.png").unlink()
    (cohort / "broken.svs").unlink()
    code = main(
        [
            "score",
            str(cohort),
            "--bundle",
            str(bundle_dir),
            "--out",
            str(tmp_path / "o"),
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--no-heatmaps",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "2 slides scored" in printed and "encode" in printed
    assert (tmp_path / "o" / "results.csv").is_file()
    code = main(
        ["score", str(cohort), "--bundle", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]
    )
    assert code == 2 and "no such bundle directory" in capsys.readouterr().err
