"""``hsafast register``: pairs, a second IHC of the same H&E, and a cohort where cases
fail and the rest go on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hsafast.cli import main
from hsafast.cohort import pair_id
from hsafast.manifest import Case, write_manifest


def test_register_one_pair_then_a_second_marker_of_the_same_he(
    birl_mouse: Path, birl_kidney: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    he = birl_mouse / "Izd2-29-041-w35_HE.jpg"
    ihc = birl_mouse / "Izd2-29-041-w35_proSPC.jpg"
    args = ["--out", str(out), "--slide-mpp", "5"]
    assert main(["register", str(he), str(ihc), *args, "--overlay"]) == 0
    first = pair_id(he, ihc)
    assert first.startswith("Izd2-29-041-w35_HE__Izd2-29-041-w35_proSPC-")
    saved = json.loads((out / f"{first}.json").read_text())
    assert saved["verdict"] == "ok" and saved["field_file"] in (None, f"{first}.field.npz")
    assert (out / f"{first}.overlay.png").stat().st_size > 1000
    assert "1 pair registered, 0 failed" in capsys.readouterr().out

    # the same H&E with another IHC is another pair, not "already done"
    other = birl_kidney / "Rat-Kidney_PanCytokeratin.jpg"
    assert main(["register", str(he), str(other), *args, "--overlay", "--affine-only"]) == 2
    assert "other parameters" in capsys.readouterr().err  # --affine-only changes the outputs
    assert main(["register", str(he), str(other), *args, "--overlay"]) == 1  # mismatched pair
    text = capsys.readouterr()
    assert "0 pairs registered, 1 failed" in text.out
    second = json.loads((out / f"{pair_id(he, other)}.json").read_text())
    assert second["verdict"] == "failed"  # kept for inspection, recorded as failed
    assert json.loads((out / f"{first}.json").read_text()) == saved


def test_register_cohort_records_failures_and_resumes(
    birl_mouse: Path, birl_kidney: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest = tmp_path / "cohort.csv"
    mouse_he = birl_mouse / "Izd2-29-041-w35_HE.jpg"
    write_manifest(
        manifest,
        [
            Case("mouse", "p1", mouse_he, birl_mouse / "Izd2-29-041-w35_proSPC.jpg", "prospc"),
            Case("missing", "p2", tmp_path / "absent_he.jpg", tmp_path / "absent_ihc.jpg", "ki67"),
            Case(
                "mismatched",
                "p3",
                birl_kidney / "Rat-Kidney_HE.jpg",
                birl_mouse / "Izd2-29-041-w35_proSPC.jpg",
                "ck",
            ),
        ],
    )
    out = tmp_path / "out"
    args = ["register", str(manifest), "--out", str(out), "--slide-mpp", "5", "--affine-only"]
    assert main(args) == 1
    text = capsys.readouterr()
    assert "1 pair registered, 2 failed" in text.out
    assert "no such file" in text.err
    assert json.loads((out / "mouse.prospc.json").read_text())["verdict"] == "ok"
    assert json.loads((out / "mismatched.ck.json").read_text())["verdict"] == "failed"
    assert not (out / "missing.ki67.json").exists()
    with (out / "failures.csv").open(newline="") as f:
        rows = {r["item"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"missing.ki67", "mismatched.ck"}
    assert rows["missing.ki67"]["path"] == str(tmp_path / "absent_he.jpg")  # a real path
    assert rows["mismatched.ck"]["path"] == str(birl_mouse / "Izd2-29-041-w35_proSPC.jpg")
    # a rerun skips the finished case and retries the failed ones
    before = (out / "mouse.prospc.json").stat().st_mtime_ns
    assert main(args) == 1
    assert "0 pairs registered, 1 already done, 2 failed" in capsys.readouterr().out
    assert (out / "mouse.prospc.json").stat().st_mtime_ns == before


def test_register_input_and_config_errors_are_one_line(
    birl_mouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    he = birl_mouse / "Izd2-29-041-w35_HE.jpg"
    out = ["--out", str(tmp_path / "out")]
    assert main(["register", str(he), str(he), str(he), *out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "two slides" in err and "3 inputs" in err

    for content, expected in (
        (json.dumps({"angle_steps": 2}), "angle_steps"),
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"work_size": "big"}), "work_size"),
    ):
        cfg = tmp_path / "cfg.json"
        cfg.write_text(content)
        assert main(["register", str(he), str(he), *out, "--config", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "cfg.json" in err and expected in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
