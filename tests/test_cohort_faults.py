"""Faults: a run killed at every point of an item, a worker killed mid-item, Ctrl-C,
a corrupt slide, a full disk and a folder without write permission."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cohort_helpers import PIXEL, SLIDES, FailingSetupTask, KillingTileTask

from hsafast.cohort import (
    JournalError,
    LocalExecutor,
    WorkerSetupError,
    run_cohort,
    slide_items,
)
from hsafast.cohort.tasks import TileTask

HELPERS = Path(__file__).resolve().parent / "cohort_helpers.py"
POINTS = ("before", "during", "moving", "unrecorded", "recorded")


def drive(
    out: Path, point: str = "none", item: str = "-", **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HELPERS), str(out), point, item],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,  # type: ignore[call-overload]
    )


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file (not the journal's own files) with its bytes."""
    skip = {"journal.jsonl", "failures.csv"}
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name not in skip}


def done_records(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in (out / "journal.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "item" and record["status"] == "done":
            counts[record["item"]] = counts.get(record["item"], 0) + 1
    return counts


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference")
    result = drive(out)
    assert result.returncode == 0, result.stderr
    files = outputs(out)
    assert len(files) == 3 * len(SLIDES)
    return files


@pytest.mark.parametrize("point", POINTS)
def test_killed_run_resumes_to_identical_outputs(
    point: str, reference: dict[str, bytes], tmp_path: Path
) -> None:
    items = slide_items(SLIDES)
    victim = items[1].id
    out = tmp_path / "out"
    killed = drive(out, point, victim)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = done_records(out)
    assert before.get(items[0].id) == 1  # the first item was finished and recorded
    assert (victim in before) == (point == "recorded")

    resumed = drive(out)
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(out) == reference  # byte for byte, no partial or stale file
    after = done_records(out)
    assert after == {item.id: 1 for item in items}  # nothing finished was computed twice
    summary = json.loads(resumed.stdout.splitlines()[-1])
    recorded = [i.id for i in items if i.id in before]
    assert sorted(summary["skipped"]) == sorted(recorded)
    assert not list((out / ".hsafast" / "staging").glob("*/*"))  # staging cleaned up


def test_process_worker_killed_mid_item_is_retried(tmp_path: Path) -> None:
    items = slide_items(SLIDES)
    task = KillingTileTask(
        target_mpp=32.0, tile_size=16, pixel=PIXEL, kill_item=items[0].id, marker_dir=str(tmp_path)
    )
    report = run_cohort(task, items, tmp_path / "out", executor=LocalExecutor(2, processes=True))
    assert sorted(report.done) == sorted(i.id for i in items) and not report.failed
    plain = run_cohort(
        TileTask(target_mpp=32.0, tile_size=16, pixel=PIXEL), items, tmp_path / "plain"
    )
    assert not plain.failed
    for item in items:
        name = f"{item.id}.h5"
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()


def test_worker_that_always_dies_fails_the_item_after_bounded_retries(tmp_path: Path) -> None:
    items = slide_items(SLIDES[:2])
    task = KillingTileTask(
        target_mpp=32.0, tile_size=16, pixel=PIXEL, kill_item=items[1].id, always=True
    )
    executor = LocalExecutor(2, processes=True, max_retries=1)
    report = run_cohort(task, items, tmp_path, executor=executor)
    assert report.done == [items[0].id]
    (failure,) = report.failed
    assert "worker died" in failure.reason and "2 times" in failure.reason
    assert "SIGKILL" in failure.reason
    assert failure.path == str(items[1].path)


def test_failing_worker_setup_stops_the_run_with_its_reason(tmp_path: Path) -> None:
    items = slide_items(SLIDES[:1])
    for executor in (LocalExecutor(1), LocalExecutor(2), LocalExecutor(2, processes=True)):
        with pytest.raises(WorkerSetupError, match="no model bundle here"):
            run_cohort(
                FailingSetupTask(target_mpp=32.0, tile_size=16), items, tmp_path, executor=executor
            )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_prints_one_line_and_leaves_a_consistent_journal(
    workers: str, tmp_path: Path, cmu_svs: Path
) -> None:
    """SIGINT while workers are busy (in the main thread, or in 2 worker threads): a
    one-line message, exit 130, and a resume that finishes the rest."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(40):
        os.link(cmu_svs, folder / f"s{i:02d}.svs")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "hsafast", "tile", str(folder), "--out", str(out)]
    args += ["--workers", workers]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a few items are recorded
        if journal.exists() and journal.read_text().count('"status":"done"') >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "resume" in lines[0], stderr
    assert "Traceback" not in stderr
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert records[-1]["kind"] == "run_end" and records[-1]["interrupted"] is True
    done = {r["item"] for r in records if r.get("status") == "done"}
    assert 3 <= len(done) < 40
    for item in done:
        assert (out / f"{item}.h5").is_file()

    resumed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{40 - len(done)} slides tiled, {len(done)} already done" in resumed.stdout


def test_corrupt_slide_is_recorded_and_the_rest_go_on(tmp_path: Path, cmu_svs: Path) -> None:
    bad = tmp_path / "bad.svs"
    bad.write_bytes(cmu_svs.read_bytes()[:60_000])
    items = slide_items([cmu_svs, bad, SLIDES[1]])
    report = run_cohort(TileTask(target_mpp=32.0, tile_size=16), items, tmp_path / "out")
    assert len(report.done) == 2
    (failure,) = report.failed
    assert failure.path == str(bad.resolve())
    assert not list((tmp_path / "out").glob(f"{items[1].id}*"))


def _unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_available(), reason="needs unshare and a private tmpfs mount")
def test_disk_full_stops_with_a_clear_error_and_no_partial_output(
    tmp_path: Path, cmu_svs: Path
) -> None:
    """A 120 kB file system (private to the command): the outputs of the first slides
    (46 kB each) fit, the next do not. The run stops with one line; what is there is complete."""
    out = tmp_path / "small"
    out.mkdir()
    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(6):
        os.link(cmu_svs, folder / f"s{i}.svs")
    command = (
        f"mount -t tmpfs -o size=120k tmpfs {out} && "
        f"{sys.executable} -m hsafast tissue {folder} --out {out}; rc=$?; "
        f"cp -r {out} {tmp_path / 'copy'}; exit $rc"
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr
    copy = tmp_path / "copy"
    records = [json.loads(line) for line in (copy / "journal.jsonl").read_text().splitlines()]
    done = [r for r in records if r.get("kind") == "item" and r["status"] == "done"]
    assert done and not [r for r in records if r.get("status") == "failed"]
    expected = {o["name"]: o["bytes"] for r in done for o in r["outputs"].values()}
    found = {p.name: p.stat().st_size for p in copy.iterdir() if p.suffix in (".png", ".geojson")}
    assert found == expected  # every file recorded and complete, nothing else


def _without_permission_bypass() -> list[str] | None:
    """A command prefix under which file permissions apply (root ignores them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    return None


@pytest.mark.skipif(_without_permission_bypass() is None, reason="root without setpriv")
def test_permission_denied_is_one_clear_line(tmp_path: Path, cmu_svs: Path) -> None:
    prefix = _without_permission_bypass() or []
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-m", "hsafast", "tile", str(cmu_svs), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        out.chmod(0o755)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Permission denied" in result.stderr and str(out) in result.stderr
    assert list(out.iterdir()) == []


def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path, cmu_svs: Path) -> None:
    from hsafast.cohort import Journal

    with Journal.open(tmp_path), pytest.raises(JournalError, match="another hsafast run"):
        run_cohort(TileTask(), slide_items([cmu_svs]), tmp_path)
