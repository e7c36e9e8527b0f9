"""The embedded end-to-end run on the bundled slide and a small simulated cohort."""

from __future__ import annotations

import json
from pathlib import Path

from hsafast.cli import main


def test_demo_runs_every_stage(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cases", "3", "--slide-size", "2048"]) == 0
    printed = capsys.readouterr().out
    assert "hsafast demo: 3 simulated cases" in printed

    real = out / "real"
    for suffix in (".mask.png", ".geojson", ".overlay.png", ".h5"):
        assert (real / f"CMU-1-Small-Region{suffix}").is_file()
    geojson = json.loads((real / "CMU-1-Small-Region.geojson").read_text())
    assert geojson["features"], "the bundled slide has tissue"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["real"]["tiles"] > 20
    assert len(summary["cases"]) == 3
    for case in summary["cases"]:
        assert case["true_label"] in {"low", "intermediate/high"}
        assert case["derived_label"] in {"low", "intermediate/high", None}
        assert (out / "results" / f"{case['case_id']}.registration.json").is_file()
        if case["rtre_percent"] is not None:  # registered: landmarks land near the truth
            assert case["rtre_percent"] < 1.0
    assert (out / "cohort" / "manifest.csv").is_file()
