"""The ``tissue`` and ``tile`` commands on the real test files, a corrupt one among them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hsafast.cli import main
from hsafast.cohort import path_id


@pytest.fixture
def corrupt_svs(tmp_path: Path, cmu_svs: Path) -> Path:
    """The real SVS cut off a third of the way through its tile data."""
    data = cmu_svs.read_bytes()
    bad = tmp_path / "in" / "truncated slide.svs"
    bad.parent.mkdir()
    bad.write_bytes(data[: len(data) // 3])
    return bad


def failures(out: Path) -> list[dict[str, str]]:
    with (out / "failures.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_tissue_batch_with_corrupt_file_and_resume(
    tmp_path: Path,
    cmu_svs: Path,
    data_dir: Path,
    corrupt_svs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "masks"
    dicom = data_dir / "multiframe_camelyon_challenge_image.dcm"
    code = main(["tissue", str(cmu_svs), str(corrupt_svs), str(dicom), "--out", str(out)])
    assert code == 1
    summary = capsys.readouterr().out
    assert "2 slides masked" in summary and "1 failed" in summary
    rows = failures(out)
    assert len(rows) == 1 and rows[0]["path"] == str(corrupt_svs)
    for slide in (cmu_svs, dicom):
        for suffix in (".mask.png", ".geojson", ".overlay.png"):
            assert (out / f"{path_id(slide)}{suffix}").stat().st_size > 0
    assert not list(out.glob(f"{path_id(corrupt_svs)}*"))
    assert not list(out.rglob("*.tmp"))

    cmu = out / f"{path_id(cmu_svs)}.geojson"
    before = cmu.read_bytes()
    assert main(["tissue", str(cmu_svs), "--out", str(out)]) == 0
    assert "1 already done" in capsys.readouterr().out
    cmu.write_text("stale")  # an output changed by hand is recomputed
    assert main(["tissue", str(cmu_svs), "--out", str(out)]) == 0
    assert "1 slide masked" in capsys.readouterr().out
    assert cmu.read_bytes() == before  # identical rerun
    assert main(["tissue", str(cmu_svs), "--out", str(out), "--overwrite"]) == 0
    assert cmu.read_bytes() == before


def test_tissue_on_a_folder_and_a_manifest(
    tmp_path: Path, birl_kidney: Path, birl_mouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "folder"
    args = ["tissue", str(birl_kidney), "--out", str(out), "--tissue", "keep_largest=1"]
    assert main([*args, "--slide-mpp", "10"]) == 0
    assert sorted(p.name.split("-")[0] for p in out.glob("*.geojson")) == [
        "Rat",
        "Rat",
    ]
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "case_id,patient_id,he_path,ihc_path,marker,label\n"
        f"m1,p1,{birl_mouse / 'Izd2-29-041-w35_HE.jpg'},"
        f"{birl_mouse / 'Izd2-29-041-w35_proSPC.jpg'},proSPC,\n"
    )
    out2 = tmp_path / "manifest"
    assert main(["tissue", str(manifest), "--out", str(out2), "--slide-mpp", "10"]) == 0
    assert sorted(p.name for p in out2.glob("*.mask.png")) == [
        "m1.HE.mask.png",
        "m1.prospc.mask.png",
    ]
    assert "2 slides masked" in capsys.readouterr().out


def test_tile_batch_writes_coordinates(
    tmp_path: Path,
    cmu_svs: Path,
    tcga_svs: Path,
    corrupt_svs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "coords"
    args = ["tile", str(cmu_svs), str(tcga_svs), str(corrupt_svs), "--out", str(out)]
    code = main([*args, "--magnification", "20", "--tile-size", "224", "--min-tissue", "0.5"])
    assert code == 1
    reasons = {Path(r["path"]).name: r["reason"] for r in failures(out)}
    assert set(reasons) == {"tcga-cr-7395-01a-01-ts1.svs", "truncated slide.svs"}
    assert "pixel size" in reasons["tcga-cr-7395-01a-01-ts1.svs"]
    assert "--slide-mpp" in reasons["tcga-cr-7395-01a-01-ts1.svs"]  # a hint in CLI words
    assert "1 slide tiled" in capsys.readouterr().out
    with h5py.File(out / f"{path_id(cmu_svs)}.h5") as f:
        coords = f["coords"]
        assert coords.dtype == np.int64 and coords.shape[1] == 2 and len(coords) > 10
        assert coords.attrs["patch_size"] == 224
        assert coords.attrs["patch_size_level0"] == 224
        assert coords.attrs["target_mpp"] == pytest.approx(0.5)
        assert coords.attrs["level"] == 0
        assert coords.attrs["slide_id"] == path_id(cmu_svs)
        assert (f["tissue_fraction"][:] >= 0.5).all()

    # the pixel size can be given for files that lack one; done slides are skipped
    args = [*args[:3], "--out", str(out), "--magnification", "20", "--tile-size", "224"]
    code = main([*args, "--min-tissue", "0.5", "--slide-mpp", "0.25"])
    assert code == 0
    assert "1 slide tiled, 1 already done" in capsys.readouterr().out
    with h5py.File(out / f"{path_id(tcga_svs)}.h5") as f:
        assert f["coords"].attrs["level"] == 1 and len(f["coords"]) > 10
    assert [r["path"] for r in failures(out)] == [str(corrupt_svs)]  # not retried: not named


def test_tile_options_are_exclusive_and_checked(
    tmp_path: Path, cmu_svs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(
            [
                "tile", str(cmu_svs), "--out", str(tmp_path),
                "--target-mpp", "0.5", "--magnification", "20",
            ]
        )  # fmt: skip
    capsys.readouterr()
    assert main(["tile", str(cmu_svs), "--out", str(tmp_path), "--overlap", "300"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert main(["tissue", str(cmu_svs), "--out", str(tmp_path), "--tissue", "mpp=0"]) == 2
    assert "TissueConfig" in capsys.readouterr().err
    assert main(["tissue", str(cmu_svs), "--out", str(tmp_path), "--tissue", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'nope'" in err and "keep_largest" in err
    assert main(["tissue", str(cmu_svs), "--out", str(tmp_path), "--tissue", "mpp=x"]) == 2
    assert "mpp='x' is not a number" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_folder_with_an_empty_file(tmp_path: Path, cmu_svs: Path) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(cmu_svs, folder / "a.svs")
    (folder / "b.svs").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["tissue", str(folder), "--out", str(out)]) == 1
    assert [Path(r["path"]).name for r in failures(out)] == ["b.svs"]
    assert (out / f"{path_id(folder / 'a.svs')}.geojson").exists()
