"""The cohort runner on real slides: what a rerun skips, recomputes or refuses, the
journal and failures.csv, and identical outputs on every local executor."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from cohort_helpers import PIXEL, SLIDES

from hsafast.cohort import (
    ItemContext,
    LocalExecutor,
    MixedOutputsError,
    Task,
    WorkItem,
    item_states,
    run_cohort,
    slide_items,
)
from hsafast.cohort.journal import Journal, read_records
from hsafast.cohort.pixels import PixelSize
from hsafast.cohort.tasks import TileTask, TissueTask
from hsafast.errors import InvalidParameterError
from hsafast.slides import open_slide
from hsafast.tiling import tissue_grid
from hsafast.tissue import TissueConfig

COARSE = {"target_mpp": 32.0, "tile_size": 16}


def records(out: Path) -> list[dict]:
    return [r for _, r in read_records(out / "journal.jsonl")]


def item_records(out: Path, item: str) -> list[dict]:
    return [r for r in records(out) if r.get("kind") == "item" and r["item"] == item]


def failures(out: Path) -> list[dict[str, str]]:
    with (out / "failures.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_rerun_skips_exactly_the_finished_items(tmp_path: Path) -> None:
    items = slide_items(SLIDES)
    first = run_cohort(TileTask(**COARSE, pixel=PIXEL), items, tmp_path)
    assert sorted(first.done) == sorted(i.id for i in items) and not first.skipped
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")}
    second = run_cohort(TileTask(**COARSE, pixel=PIXEL), items, tmp_path)
    assert not second.done and sorted(second.skipped) == sorted(first.done)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")}

    record = item_records(tmp_path, items[0].id)[-1]
    assert record["status"] == "done" and record["inputs"] == {"slide": str(items[0].path)}
    (output,) = record["outputs"].values()
    assert output["name"] == f"{items[0].id}.h5" and len(output["sha256"]) == 64
    assert output["bytes"] == (tmp_path / output["name"]).stat().st_size
    assert record["seconds"] > 0 and record["facts"]["tiles"] > 0
    assert record["facts"]["pixel_size"][str(items[0].path)]["source"] == "file"


def test_changed_parameters_are_refused_then_replaced_with_overwrite(tmp_path: Path) -> None:
    items = slide_items(SLIDES[:2])
    run_cohort(TileTask(**COARSE), items, tmp_path)
    with pytest.raises(MixedOutputsError, match=r"target_mpp 32.0 -> 64.0"):
        run_cohort(TileTask(target_mpp=64.0, tile_size=16), items, tmp_path)
    # the refusal also covers items the new run does not name
    with pytest.raises(MixedOutputsError, match="2 tile item"):
        run_cohort(TileTask(target_mpp=64.0, tile_size=16), items[:1], tmp_path)
    report = run_cohort(
        TileTask(target_mpp=64.0, tile_size=16), items[:1], tmp_path, overwrite=True
    )
    assert report.removed == 2 and report.done == [items[0].id]
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == [f"{items[0].id}.h5"]
    import h5py

    with h5py.File(tmp_path / f"{items[0].id}.h5") as f:
        assert f["coords"].attrs["target_mpp"] == pytest.approx(64.0)


def test_a_pixel_size_for_files_without_one_leaves_the_others_alone(
    tmp_path: Path, cmu_svs: Path, tcga_svs: Path
) -> None:
    """--slide-mpp must not rescale CMU-1 (0.499 um/px): it keeps its own tile count."""
    items = slide_items([cmu_svs, tcga_svs])
    report = run_cohort(TileTask(), items, tmp_path)
    assert report.done == [items[0].id] and "slide_mpp=..." in report.failed[0].reason
    assert json.loads(json.dumps(failures(tmp_path)))[0]["path"] == str(tcga_svs)

    report = run_cohort(TileTask(pixel=PixelSize(0.25)), items, tmp_path)
    assert report.done == [items[1].id] and report.skipped == [items[0].id]
    assert failures(tmp_path) == []  # the fixed failure is gone from failures.csv
    cmu = item_records(tmp_path, items[0].id)[-1]
    tcga = item_records(tmp_path, items[1].id)[-1]
    with open_slide(cmu_svs) as slide:
        recorded_tiles = len(tissue_grid(slide, mpp=0.5))
    assert cmu["facts"]["tiles"] == recorded_tiles and cmu["uses"] == {}
    assert tcga["uses"] == {"slide_mpp": 0.25}
    assert tcga["facts"]["pixel_size"][str(tcga_svs)] == {"mpp": 0.25, "source": "slide_mpp"}

    # another value for files without one concerns only the item that used it
    with pytest.raises(MixedOutputsError, match=r"slide_mpp 0.25 -> 0.3"):
        run_cohort(TileTask(pixel=PixelSize(0.3)), items, tmp_path)

    forced = run_cohort(TileTask(pixel=PixelSize(0.25, force=True)), items[:1], tmp_path / "f")
    (record,) = item_records(tmp_path / "f", forced.done[0])
    assert record["facts"]["pixel_size"][str(cmu_svs)]["source"] == "forced"
    assert record["facts"]["tiles"] < 50


def test_changed_input_file_is_recomputed(tmp_path: Path, cmu_svs: Path) -> None:
    slide = tmp_path / "slide.svs"
    shutil.copy(cmu_svs, slide)
    items = slide_items([slide])
    run_cohort(TileTask(**COARSE), items, tmp_path / "out")
    os.utime(slide, ns=(1, 1))  # the same path now holds "another" file
    assert run_cohort(TileTask(**COARSE), items, tmp_path / "out").done == [items[0].id]
    # an output deleted or cut short by hand is recomputed too
    (tmp_path / "out" / f"{items[0].id}.h5").write_bytes(b"")
    assert run_cohort(TileTask(**COARSE), items, tmp_path / "out").done == [items[0].id]


def test_failures_csv_lists_exactly_the_items_failing_now(tmp_path: Path, cmu_svs: Path) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(cmu_svs, folder / "good.svs")
    (folder / "empty.svs").write_bytes(b"")
    (folder / "cut.svs").write_bytes(cmu_svs.read_bytes()[:50_000])
    out = tmp_path / "out"
    items = slide_items([folder])
    report = run_cohort(TileTask(**COARSE), items, out)
    assert len(report.failed) == 2
    assert {Path(r["path"]).name for r in failures(out)} == {"empty.svs", "cut.svs"}
    assert all(r["command"] == "tile" and r["reason"] for r in failures(out))

    # a failing rerun of one item keeps the other item's failure listed
    cut = [i for i in items if i.path.name == "cut.svs"]
    run_cohort(TileTask(**COARSE), cut, out)
    assert {Path(r["path"]).name for r in failures(out)} == {"empty.svs", "cut.svs"}
    # a successful rerun removes it
    shutil.copy(cmu_svs, folder / "cut.svs")
    run_cohort(TileTask(**COARSE), cut, out)
    assert [Path(r["path"]).name for r in failures(out)] == ["empty.svs"]
    states = item_states(out, "tile")
    assert {s.status for s in states.values()} == {"done", "failed"}


def test_same_file_name_in_two_folders_gives_two_items(tmp_path: Path, cmu_svs: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(cmu_svs, tmp_path / sub / "slide.svs")
    items = slide_items([tmp_path / "a", tmp_path / "b"])
    assert len({i.id for i in items}) == 2 and all(i.id.startswith("slide-") for i in items)
    report = run_cohort(TileTask(**COARSE), items, tmp_path / "out")
    assert len(report.done) == 2 and len(list((tmp_path / "out").glob("*.h5"))) == 2


@pytest.mark.parametrize("executor", ["local-2", "process-2"])
def test_executors_give_byte_identical_outputs(executor: str, tmp_path: Path) -> None:
    kind, workers = executor.split("-")
    items = slide_items(SLIDES)
    task = TissueTask(TissueConfig(min_area_mm2=0.01), PIXEL)
    one = run_cohort(task, items, tmp_path / "one")
    many = run_cohort(
        task,
        items,
        tmp_path / "many",
        executor=LocalExecutor(int(workers), processes=kind == "process"),
    )
    assert sorted(one.done) == sorted(many.done) and len(one.done) == len(items)
    for path in (tmp_path / "one").iterdir():
        if path.is_file() and path.name not in ("journal.jsonl",):
            assert path.read_bytes() == (tmp_path / "many" / path.name).read_bytes(), path.name


def test_torn_last_journal_line_is_dropped(tmp_path: Path, cmu_svs: Path) -> None:
    items = slide_items([cmu_svs])
    run_cohort(TileTask(**COARSE), items, tmp_path)
    journal = tmp_path / "journal.jsonl"
    with journal.open("ab") as f:
        f.write(b'{"v":1,"kind":"item","task":"tile","item":"x","status":"do')
    report = run_cohort(TileTask(**COARSE), items, tmp_path)
    assert report.skipped == [items[0].id]
    text = journal.read_bytes()
    assert b'"status":"do{' not in text and text.endswith(b"\n")
    assert all(json.loads(line) for line in text.splitlines())


def test_journal_compaction_keeps_the_latest_states(tmp_path: Path, cmu_svs: Path) -> None:
    items = slide_items([cmu_svs])
    for _ in range(3):
        run_cohort(TileTask(**COARSE), items, tmp_path, overwrite=True)
    with Journal.open(tmp_path) as journal:
        before = {k: (s.status, s.outputs) for k, s in journal.states().items()}
        journal.compact()
        after = {k: (s.status, s.outputs) for k, s in journal.states().items()}
    assert before == after
    assert len(records(tmp_path)) == 2  # the run's parameters and the item's last line
    assert run_cohort(TileTask(**COARSE), items, tmp_path).skipped == [items[0].id]


class _WritesOutside(Task):
    name = "escape"

    def outputs(self, item: WorkItem) -> dict[str, str]:
        return {"out": f"{item.id}.txt"}

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        ctx.path("out").write_text("inside")
        ctx.path("other")  # an undeclared output is a bug of the step: the item fails


def test_undeclared_output_fails_the_item(tmp_path: Path, cmu_svs: Path) -> None:
    report = run_cohort(_WritesOutside(), slide_items([cmu_svs]), tmp_path)
    assert "no output 'other'" in report.failed[0].reason
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["failures.csv", "journal.jsonl"]


def test_bad_item_lists_are_refused(tmp_path: Path, cmu_svs: Path) -> None:
    item = slide_items([cmu_svs])[0]
    with pytest.raises(InvalidParameterError, match="no items"):
        run_cohort(TileTask(), [], tmp_path)
    twin = WorkItem(item.id.upper(), item.inputs)
    with pytest.raises(InvalidParameterError, match="differ only in case"):
        run_cohort(TileTask(), [item, twin], tmp_path)
    assert not tmp_path.joinpath("journal.jsonl").exists()


class _ClaimsTheJournal(_WritesOutside):
    name = "claims"

    def outputs(self, item: WorkItem) -> dict[str, str]:
        return {"out": "journal.jsonl", "up": "../x.txt"}


def test_outputs_cannot_take_the_runners_names(tmp_path: Path, cmu_svs: Path) -> None:
    report = run_cohort(_ClaimsTheJournal(), slide_items([cmu_svs]), tmp_path)
    assert "unusable file name" in report.failed[0].reason
    assert all(json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines())


def test_a_label_added_to_the_manifest_recomputes_nothing(tmp_path: Path, cmu_svs: Path) -> None:
    manifest = tmp_path / "cohort.csv"
    row = f"c1,p1,{cmu_svs},{SLIDES[1]},ki67"
    manifest.write_text(f"case_id,patient_id,he_path,ihc_path,marker,label\n{row},\n")
    first = run_cohort(TileTask(**COARSE), slide_items([manifest]), tmp_path / "out")
    assert sorted(first.done) == ["c1.HE", "c1.ki67"]
    manifest.write_text(f"case_id,patient_id,he_path,ihc_path,marker,label\n{row},low\n")
    again = run_cohort(TileTask(**COARSE), slide_items([manifest]), tmp_path / "out")
    assert not again.done and sorted(again.skipped) == ["c1.HE", "c1.ki67"]
