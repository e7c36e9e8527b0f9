"""IDs and paths from manifests and folders never write outside the output folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hsafast.cli import main
from hsafast.cohort import pair_id, path_id, sanitize_id, slide_items
from hsafast.cohort.ids import MAX_ID_LENGTH
from hsafast.errors import ConfigError
from hsafast.manifest import read_manifest

HOSTILE_IDS = [
    "../../escaped",
    "/etc/cron.d/job",
    "..",
    ".",
    ".hidden",
    "-rf",
    "a/../../b",
    "C:\\Windows\\system32",
    "x" * 300,
    "ünïcødé-case",
    "tab\tnew\nline",
    "con",
    "",
]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_sanitized_ids_are_plain_file_names() -> None:
    seen = set()
    for raw in [*HOSTILE_IDS, "same", "same"]:
        safe = sanitize_id(raw)
        assert safe and len(safe) <= MAX_ID_LENGTH
        assert safe not in (".", "..") and not safe.startswith((".", "-"))
        assert Path(safe).name == safe and "/" not in safe and "\\" not in safe
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in safe)
        seen.add(safe)
    assert sanitize_id("case_01") == "case_01"  # safe names are kept as they are
    assert sanitize_id("case 01") != sanitize_id("case_01")  # lossy changes carry a hash
    assert len(seen) == len(HOSTILE_IDS) + 1


def test_hostile_manifest_ids_stay_inside_the_output_folder(tmp_path: Path, cmu_svs: Path) -> None:
    sandbox = tmp_path / "sandbox"
    out = sandbox / "out"
    sandbox.mkdir()
    slide = tmp_path / "slide.svs"
    shutil.copy(cmu_svs, slide)
    rows = ["case_id,patient_id,he_path,ihc_path,marker,label"]
    for i, case_id in enumerate(HOSTILE_IDS[:-1]):  # the empty ID is refused below
        ihc = tmp_path / f"ihc{i}.svs"
        os.link(slide, ihc)
        quoted = '"' + case_id.replace('"', '""') + '"'
        rows.append(f'{quoted},p{i},{slide},{ihc},"../../{i}x",')
    rows.append(f"/abs,p99,../../../../../../etc/passwd,{slide},ki67,")
    manifest = tmp_path / "hostile.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    before = files_under(tmp_path) - files_under(sandbox)

    code = main(
        ["tile", str(manifest), "--out", str(out), "--target-mpp", "8", "--tile-size", "32"]
    )
    assert code == 1  # /etc/passwd is no slide: recorded, the rest go on
    assert files_under(tmp_path) - files_under(sandbox) == before  # nothing written outside
    written = {p for p in files_under(sandbox) if ".hsafast" not in p.parts}
    assert all(p.parent == out for p in written)
    outputs = [p for p in written if p.suffix == ".h5"]
    # one IHC item per case, one H&E item (a file shared by all cases); /etc/passwd failed
    assert len(outputs) == len(HOSTILE_IDS)
    assert all(len(p.name.encode()) < 255 for p in outputs)


def test_manifests_with_nul_bytes_or_bad_encoding_are_refused(tmp_path: Path) -> None:
    header = b"case_id,patient_id,he_path,ihc_path,marker\n"
    for body, reason in (
        (b"c\x001,p,a.svs,b.svs,ki67\n", "NUL"),
        (b"c\xff1,p,a.svs,b.svs,ki67\n", "not UTF-8"),
        (b"c1,p,a.svs,b.svs\n", "fields"),
        (b"", "lists no cases"),
        (b'"unterminated,p,a,b,ki67\n', "fields"),
    ):
        path = tmp_path / "m.csv"
        path.write_bytes(header + body)
        with pytest.raises(ConfigError, match=reason) as error:
            read_manifest(path)
        assert error.value.path == path


def test_non_utf8_and_long_file_names_in_folders(tmp_path: Path, cmu_svs: Path) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    odd = os.fsdecode(b"scan-\xff\xfe.svs")  # not UTF-8: kept as surrogate escapes
    long = "l" * 200 + ".svs"
    for name in (odd, long):
        shutil.copy(cmu_svs, folder / name)
    items = slide_items([folder])
    assert len(items) == 2
    for item in items:
        assert item.id.isascii() and len(item.id) <= MAX_ID_LENGTH
    out = tmp_path / "out"
    args = ["tile", str(folder), "--out", str(out), "--target-mpp", "8", "--tile-size", "32"]
    assert main(args) == 0
    assert len(list(out.glob("*.h5"))) == 2
    (out / "failures.csv").read_bytes().decode("utf-8")  # a valid (empty) table


def test_ids_of_pairs_and_paths_are_stable_and_distinct(tmp_path: Path) -> None:
    a, b = tmp_path / "x" / "slide.svs", tmp_path / "y" / "slide.svs"
    assert path_id(a) != path_id(b) and path_id(a) == path_id(
        tmp_path / "x" / ".." / "x" / "slide.svs"
    )
    assert pair_id(a, b) != pair_id(b, a)
    assert path_id(a).startswith("slide-")
