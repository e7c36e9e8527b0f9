"""Scoring a cohort on the cohort runner: per-slide JSON and heatmaps, Parquet + CSV tables,
failures recorded while the rest go on, resume, the bundle in the fingerprint, the same
bytes on every executor, and the command line."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from scoring_helpers import random_bundle

from hsafast.cohort import MixedOutputsError, item_states, make_executor, path_id


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "b"
    random_bundle(path)
    return path


@pytest.fixture(scope="module")
def scorer(bundle_dir):
    from hsafast.scoring import Scorer, ScoringOptions

    return Scorer(bundle_dir, engine="torch", device="cpu", options=ScoringOptions(slide_mpp=0.5))


@pytest.fixture
def cohort(tmp_path, cmu_svs):
    """Two copies of a real slide, a truncated one, and a blank image without a pixel size."""
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


def output_bytes(folder):
    """Every output file's bytes; failures.csv without its time column (a retry is a new try)."""
    files = {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in ("journal.jsonl", "failures.csv")
    }
    with open(folder / "failures.csv", newline="") as f:
        files["failures.csv"] = [
            {k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)
        ]
    return files


def test_cohort_outputs_failures_and_resume(scorer, cohort, tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from hsafast.scoring import SlideResult

    ids = {name: path_id(cohort / name) for name in ("a.svs", "b.svs", "broken.svs", "glass.png")}
    out = tmp_path / "out"
    report = scorer.score_many(cohort, out)
    assert sorted(report.done) == sorted([ids["a.svs"], ids["b.svs"], ids["glass.png"]])
    [failure] = report.failed
    assert failure.item == ids["broken.svs"] and "truncated" in failure.reason
    assert report.exit_code == 1
    a = SlideResult.load(out / f"{ids['a.svs']}.json")
    assert a.status == "ok" and set(a.markers) == {"ki67", "p53"}
    assert a.timings == {}  # timings go to the journal: the JSON is the same on every run
    assert SlideResult.load(out / f"{ids['glass.png']}.json").status == "no_tissue"
    assert (out / f"{ids['a.svs']}.ki67.geojson").is_file()
    assert (out / f"{ids['a.svs']}.p53.positivity.png").is_file()
    assert "broken.svs" in (out / "failures.csv").read_text()
    states = item_states(out, "score")
    assert states[ids["a.svs"]].facts["timings"]["encode"]["tiles"] == a.n_tiles
    assert states[ids["glass.png"]].facts["pixel_size"][str(cohort / "glass.png")] == {
        "mpp": 0.5,
        "source": "slide_mpp",
    }
    rows = pq.read_table(out / "results.parquet").to_pylist()
    expected = [
        (ids["a.svs"], "ki67", "ok"),
        (ids["a.svs"], "p53", "ok"),
        (ids["b.svs"], "ki67", "ok"),
        (ids["b.svs"], "p53", "ok"),
        (ids["broken.svs"], None, "failed"),
        (ids["glass.png"], None, "no_tissue"),
    ]
    assert sorted((r["slide_id"], r["marker"], r["status"]) for r in rows) == sorted(expected)
    row = next(r for r in rows if r["slide_id"] == ids["a.svs"] and r["marker"] == "ki67")
    assert row["p_high"] == pytest.approx(a.markers["ki67"].probabilities[1])
    assert pacsv.read_csv(out / "results.csv").num_rows == 6

    # a rerun skips what is done, retries the failure, and writes the same files
    before = output_bytes(out)
    stamp = (out / f"{ids['a.svs']}.json").stat().st_mtime_ns
    again = scorer.score_many(cohort, out)
    assert sorted(again.skipped) == sorted(report.done) and not again.done
    assert [f.item for f in again.failed] == [ids["broken.svs"]]
    assert (out / f"{ids['a.svs']}.json").stat().st_mtime_ns == stamp
    assert output_bytes(out) == before


def test_another_bundle_is_refused_in_the_same_folder(scorer, cmu_svs, tmp_path):
    from hsafast.scoring import Scorer

    out = tmp_path / "out"
    assert scorer.score_many(cmu_svs, out, heatmaps=False).done
    other = Scorer(random_bundle(seed=1), engine="torch", device="cpu")
    with pytest.raises(MixedOutputsError, match="model.hash"):
        other.score_many(cmu_svs, out, heatmaps=False)
    report = other.score_many(cmu_svs, out, heatmaps=False, overwrite=True)
    assert len(report.done) == 1 and report.removed == 1


def test_manifest_cases_are_scored_under_their_case_ids(scorer, cmu_svs, tmp_path):
    from hsafast.manifest import Case, write_manifest

    shutil.copy(cmu_svs, tmp_path / "he.svs")
    write_manifest(
        tmp_path / "cohort.csv",
        [Case("case-7", "p1", tmp_path / "he.svs", tmp_path / "ihc.svs", "ki67")],
    )
    report = scorer.score_many(tmp_path / "cohort.csv", tmp_path / "out", heatmaps=False)
    assert report.done == ["case-7.HE"] and (tmp_path / "out" / "case-7.HE.json").is_file()
    assert not list((tmp_path / "out").glob("*.geojson"))


def test_feature_files_are_scored_without_the_encoder(scorer, cmu_svs, tmp_path):
    from hsafast.embedding import EmbedConfig, embed_slide
    from hsafast.scoring import SlideResult

    slide_result = scorer.score(cmu_svs)
    model = scorer.model
    config = EmbedConfig(target_mpp=model.target_mpp, tile_size=model.tile_size)
    features = embed_slide(cmu_svs, model.encoder, None, config, slide_id="cmu")
    folder = tmp_path / "features"
    folder.mkdir()
    features.write(folder / "cmu.h5")
    report = scorer.score_many(folder, tmp_path / "out", heatmaps=False)
    [item] = report.done
    result = SlideResult.load(tmp_path / "out" / f"{item}.json")
    assert result.n_tiles == slide_result.n_tiles
    for marker, m in result.markers.items():
        np.testing.assert_allclose(
            m.probabilities, slide_result.markers[marker].probabilities, atol=1e-4
        )


@pytest.mark.parametrize("executor", ["local", "process"])
def test_workers_write_the_bytes_of_the_inline_run(scorer, cohort, tmp_path, executor):
    """Threads and processes each open their own scorer and write the same bytes."""
    (cohort / "broken.svs").unlink()
    inline = scorer.score_many(cohort, tmp_path / "inline")
    workers = scorer.score_many(cohort, tmp_path / "w", executor=make_executor(executor, 2))
    assert sorted(workers.done) == sorted(inline.done) and len(inline.done) == 3
    assert output_bytes(tmp_path / "w") == output_bytes(tmp_path / "inline")
    records = [json.loads(line) for line in (tmp_path / "w" / "journal.jsonl").open()]
    assert len({r["worker"] for r in records if r.get("kind") == "item"}) >= 1


def test_cli_score(bundle_dir, cohort, tmp_path, capsys):
    from hsafast.cli import main

    (cohort / "glass.png").unlink()
    (cohort / "broken.svs").unlink()
    args = ["score", str(cohort), "--bundle", str(bundle_dir), "--out", str(tmp_path / "o")]
    code = main([*args, "--engine", "torch", "--device", "cpu", "--no-heatmaps"])
    printed = capsys.readouterr().out
    assert code == 0 and "hsafast score: 2 slides scored, 0 failed" in printed
    assert printed.count("\n") == 1
    assert (tmp_path / "o" / "results.csv").is_file()
    assert (tmp_path / "o" / "journal.jsonl").is_file()
    code = main([*args, "--engine", "torch", "--device", "cpu", "--no-heatmaps"])
    assert code == 0 and "2 already done" in capsys.readouterr().out
    code = main([*args, "--engine", "torch", "--device", "cpu"])  # heatmaps: other params
    err = capsys.readouterr().err
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    code = main(
        ["score", str(cohort), "--bundle", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]
    )
    assert code == 2 and "no such bundle directory" in capsys.readouterr().err
