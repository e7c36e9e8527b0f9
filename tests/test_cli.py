"""Command-line conventions shared by every command, and the commands not covered elsewhere
(quantify, synth, info, demo's input checks)."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import imageio.v3 as iio
import pytest

from hsafast.cli import COMMANDS, build_parser, main
from hsafast.cli.common import speak_cli
from hsafast.cohort import path_id
from hsafast.slides import open_slide
from hsafast.tiling import tissue_grid


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_examples_and_defaults(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text(command, capsys)
    assert "examples:" in text and f"hsafast {command}" in text.split("examples:")[1]
    assert "(default: " in text
    assert "-v, --verbose" in text


def test_flags_mean_one_thing_across_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {
        name: {s for a in p._actions for s in a.option_strings}
        for name, p in sub.choices.items()  # type: ignore[attr-defined]
    }
    for name in ("tissue", "tile", "embed", "quantify", "register", "score"):
        assert {"--out", "--workers", "--executor", "--ray-address", "--overwrite"} <= options[name]
        assert {"--slide-mpp", "--force-slide-mpp", "-v"} <= options[name]
        assert "--mpp" not in options[name] and "--size" not in options[name]
    for name in ("tissue", "tile", "embed", "quantify", "score", "info"):
        assert "--recursive" in options[name]
    for name in ("tile", "embed", "quantify"):
        assert {"--target-mpp", "--tile-size"} <= options[name]
    for name in ("embed", "score"):
        assert "--reader-threads" in options[name]  # --workers is slides at once
    for name in COMMANDS:
        assert "-v" in options[name]
    assert "--out" in options["synth"] and "--out" in options["demo"]
    assert "--slide-mpp" not in options["synth"]  # synth writes pixel sizes: --scan-mpp


def test_speak_cli_rewrites_python_hints() -> None:
    assert (
        speak_cli("no pixel size; pass mpp=... (um/px)")
        == "no pixel size; give --slide-mpp (um/px)"
    )
    assert speak_cli("give it with slide_mpp=...") == "give it with --slide-mpp"
    assert speak_cli("or overwrite=True to replace") == "or --overwrite to replace"
    assert speak_cli("TissueConfig: mpp must be positive") == "TissueConfig: mpp must be positive"


def test_verbose_before_or_after_the_command(
    tmp_path: Path, cmu_svs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-v", "info", str(cmu_svs)]) == 0
    assert main(["info", str(cmu_svs), "-vv"]) == 0
    assert "0.4990 um/px" in capsys.readouterr().out


def test_folders_recursive_and_empty_selections(
    tmp_path: Path, cmu_svs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nested = tmp_path / "cohort" / "batch1"
    nested.mkdir(parents=True)
    shutil.copy(cmu_svs, nested / "a.svs")
    (tmp_path / "cohort" / ".hidden").mkdir()
    shutil.copy(cmu_svs, tmp_path / "cohort" / ".hidden" / "b.svs")
    out = tmp_path / "out"
    args = ["tile", str(tmp_path / "cohort"), "--out", str(out), "--target-mpp", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no slide files" in err and "--recursive" in err
    assert not out.exists()
    assert main([*args, "--recursive"]) == 0
    assert "1 slide tiled" in capsys.readouterr().out
    assert (out / f"{path_id(nested / 'a.svs')}.h5").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["tissue", str(empty), "--out", str(out), "--recursive"]) == 2
    assert "no slide files" in capsys.readouterr().err


def test_force_slide_mpp_is_named_and_needs_a_value(
    tmp_path: Path, cmu_svs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["tile", str(cmu_svs), "--out", str(out), "--force-slide-mpp"]) == 2
    assert "--force-slide-mpp needs --slide-mpp" in capsys.readouterr().err
    code = main(
        ["tile", str(cmu_svs), "--out", str(out), "--slide-mpp", "0.25", "--force-slide-mpp"]
    )
    assert code == 0
    summary = capsys.readouterr().out
    assert "pixel size forced to 0.25 um/px" in summary and "{" not in summary
    with h5py.File(out / f"{path_id(cmu_svs)}.h5") as f:
        tiles = len(f["coords"])
    with open_slide(cmu_svs) as recorded, open_slide(cmu_svs, mpp=0.25) as forced:
        assert len(tissue_grid(recorded, mpp=0.5)) > tiles  # 0.25 um/px, not the recorded 0.499
        assert len(tissue_grid(forced, mpp=0.5)) == tiles


def test_executor_options_are_checked(
    tmp_path: Path, cmu_svs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["tile", str(cmu_svs), "--out", str(tmp_path / "o")]
    assert main([*base, "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--workers", "0"])
    with pytest.raises(SystemExit):
        main([*base, "--executor", "dask"])


def test_thread_and_process_workers_from_the_command_line(
    tmp_path: Path, cmu_svs: Path, dicom_jpeg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slides = [str(cmu_svs), str(dicom_jpeg)]
    common = ["--target-mpp", "32", "--tile-size", "16"]
    assert main(["tile", *slides, "--out", str(tmp_path / "t"), *common, "--workers", "2"]) == 0
    args = ["tile", *slides, "--out", str(tmp_path / "p"), *common]
    assert main([*args, "--workers", "2", "--executor", "process"]) == 0
    for slide in (cmu_svs, dicom_jpeg):
        name = f"{path_id(slide)}.h5"
        assert (tmp_path / "t" / name).read_bytes() == (tmp_path / "p" / name).read_bytes()


def test_quantify_over_slides_and_a_manifest(
    tmp_path: Path, ihc_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["quantify", str(ihc_png), "--marker", "ki67", "--slide-mpp", "0.5", "--out", str(out)]
    assert main(args) == 0
    item = path_id(ihc_png)
    with (out / f"{item}.stain.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 1 and {"x", "y"} <= set(rows[0])
    label = json.loads((out / f"{item}.label.json").read_text())
    assert label["tile_grid"]["tiles"] == len(rows) and label["slide"] == str(ihc_png)
    assert main(args) == 0 and "1 already done" in capsys.readouterr().out
    assert "reason" in label and (label["label"] is None) == (label["reason"] is not None)

    assert main([*args, "--overlay", "--overwrite"]) == 0  # other parameters: redone
    overlay = iio.imread(out / f"{item}.overlay.png")
    assert overlay.ndim == 3 and overlay.shape[2] == 3 and overlay.std() > 5

    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "case_id,patient_id,he_path,ihc_path,marker,label\n"
        f"c1,p1,{ihc_png},{ihc_png},pdl1,\nc1,p1,{ihc_png},{ihc_png},ki67,\n"
    )
    out2 = tmp_path / "out2"
    code = main(
        ["quantify", str(manifest), "--slide-mpp", "0.5", "--format", "h5", "--out", str(out2)]
    )
    assert code == 0
    with h5py.File(out2 / "c1.pdl1.stain.h5") as h5:  # one IHC file: its first marker
        assert h5["coords"].shape == (len(rows), 2) and h5.attrs["marker"] == "pdl1"


def test_quantify_marker_errors_are_one_line(
    tmp_path: Path, ihc_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "out")]
    assert main(["quantify", str(ihc_png), *out]) == 2
    assert "give --marker" in capsys.readouterr().err
    assert main(["quantify", str(ihc_png), "--marker", "ttf1", *out]) == 2
    assert "unknown marker 'ttf1'" in capsys.readouterr().err
    bad = tmp_path / "m.toml"
    bad.write_text(
        "[markers.ttf1]\ncompartment = 1\nclasses = ['a', 'b']\ncutoffs = [0.1]\n"
        "binary = { a = 'low', b = 'intermediate/high' }\n"
    )
    assert main(["quantify", str(ihc_png), "--markers", str(bad), "--marker", "ttf1", *out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "m.toml" in err and "compartment" in err
    assert not (tmp_path / "out").exists()


def test_synth_writes_to_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hsafast.manifest import read_manifest

    out = tmp_path / "c"
    args = ["synth", "--out", str(out), "--cases", "1", "--slide-size", "1024x768"]
    assert main([*args, "--markers", "ki67", "--seed", "3", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "1 cases simulated, 0 already done" in text and "manifest.csv" in text
    assert "{" not in text
    assert read_manifest(out / "manifest.csv").cases[0].marker == "ki67"
    assert main(["synth", "--out", str(tmp_path / "d"), "--markers", "nope"]) == 2
    assert "unknown markers" in capsys.readouterr().err


def test_demo_rejects_an_unusable_slide_before_writing(
    tmp_path: Path, tcga_svs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00not a slide")
    for slide, expected in ((broken, "broken.svs"), (tcga_svs, "records")):
        out = tmp_path / "demo"
        code = main(["demo", "--out", str(out), "--slide", str(slide)])
        err = capsys.readouterr().err.strip()
        assert code in (1, 2) and err.count("\n") == 0 and expected in err, err
        assert "Traceback" not in err and not out.exists()


def test_info_reports_the_pixel_size_source(
    tcga_svs: Path, cmu_svs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(tcga_svs), str(cmu_svs)]) == 1
    captured = capsys.readouterr()
    assert "with --slide-mpp" in captured.err and "0.4990 um/px" in captured.out
    assert main(["info", str(tcga_svs), str(cmu_svs), "--slide-mpp", "0.25", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["mpp"], r["mpp_source"]) for r in rows] == [(0.25, "slide_mpp"), (0.499, "file")]


def test_console_script_errors_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hsafast", "register", "a", "b", "c", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("hsafast register: error:")
    assert "Traceback" not in result.stderr
