"""``hsafast register``: one pair, and a cohort where one case fails and the rest go on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsafast.cli import main
from hsafast.manifest import Case, write_manifest


def test_register_one_pair(birl_mouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    he = birl_mouse / "Izd2-29-041-w35_HE.jpg"
    ihc = birl_mouse / "Izd2-29-041-w35_proSPC.jpg"
    code = main(["register", str(he), str(ihc), "--out", str(out), "--mpp", "5", "--overlay"])
    assert code == 0
    saved = json.loads((out / "Izd2-29-041-w35_HE.json").read_text())
    assert saved["verdict"] == "ok" and saved["field_file"] == "Izd2-29-041-w35_HE.field.npz"
    assert (out / "Izd2-29-041-w35_HE.overlay.png").stat().st_size > 1000
    assert "1 pairs registered, 0 failed" in capsys.readouterr().out


def test_register_cohort_records_failures_and_resumes(
    birl_mouse: Path, birl_kidney: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest = tmp_path / "cohort.csv"
    write_manifest(
        manifest,
        [
            Case(
                "mouse",
                "p1",
                birl_mouse / "Izd2-29-041-w35_HE.jpg",
                birl_mouse / "Izd2-29-041-w35_proSPC.jpg",
                "prospc",
            ),
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
    args = ["register", str(manifest), "--out", str(out), "--mpp", "5", "--affine-only"]
    assert main(args) == 1
    text = capsys.readouterr()
    assert "1 pairs registered, 2 failed" in text.out
    assert "no such file" in text.err
    assert json.loads((out / "mouse.json").read_text())["verdict"] == "ok"
    assert json.loads((out / "mismatched.json").read_text())["verdict"] == "failed"
    assert not (out / "missing.json").exists()
    failures = (out / "failures.csv").read_text()
    assert "missing" in failures and "mismatched" in failures
    # a rerun skips the finished cases and retries only the unreadable one
    before = (out / "mouse.json").stat().st_mtime_ns
    assert main(args) == 1
    assert "2 already done" in capsys.readouterr().out
    assert (out / "mouse.json").stat().st_mtime_ns == before


def test_register_rejects_bad_config(birl_mouse: Path, tmp_path: Path) -> None:
    from hsafast.errors import ConfigError

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"angle_steps": 2}))
    he = birl_mouse / "Izd2-29-041-w35_HE.jpg"
    with pytest.raises(ConfigError, match="cfg.json"):
        main(["register", str(he), str(he), "--out", str(tmp_path), "--config", str(cfg)])
