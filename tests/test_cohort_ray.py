"""The Ray executor on a local cluster of 2 workers: the same bytes as the local executor,
a worker killed mid-item, a failing worker setup, the command line, and Ray missing.

A local 2-worker cluster started here in 3-9 s (2 cores shared by other jobs, load 6-7),
so these tests are in the default tier; one cluster serves the whole module.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from cohort_helpers import PIXEL, SLIDES, FailingSetupTask, KillingTileTask

from hsafast.cohort import WorkerSetupError, path_id, run_cohort, slide_items
from hsafast.cohort.journal import read_records
from hsafast.cohort.ray_executor import RayExecutor, start_local_cluster
from hsafast.cohort.tasks import TileTask, TissueTask

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> object:
    start = time.perf_counter()
    start_local_cluster(2)
    print(f"local Ray cluster of 2 workers started in {time.perf_counter() - start:.1f} s")
    yield ray
    ray.shutdown()


def test_ray_gives_the_bytes_of_the_local_executor(cluster: object, tmp_path: Path) -> None:
    items = slide_items(SLIDES)
    for task in (TissueTask(pixel=PIXEL), TileTask(target_mpp=32.0, tile_size=16, pixel=PIXEL)):
        local = run_cohort(task, items, tmp_path / "local")
        remote = run_cohort(task, items, tmp_path / "ray", executor=RayExecutor(2))
        assert sorted(remote.done) == sorted(local.done) and len(local.done) == len(items)
    local_files = (tmp_path / "local").iterdir()
    names = sorted(p.name for p in local_files if p.is_file() and p.suffix != ".jsonl")
    assert len(names) == 4 * len(items) + 1  # 3 tissue files + 1 coordinates file each, CSV
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    records = [r for _, r in read_records(tmp_path / "ray" / "journal.jsonl")]
    workers = {r["worker"] for r in records if r.get("task") == "tile" and "worker" in r}
    assert len(workers) == 2  # both actors worked


def test_ray_worker_killed_mid_item_is_retried(cluster: object, tmp_path: Path) -> None:
    items = slide_items(SLIDES)
    task = KillingTileTask(
        target_mpp=32.0, tile_size=16, pixel=PIXEL, kill_item=items[1].id, marker_dir=str(tmp_path)
    )
    report = run_cohort(task, items, tmp_path / "out", executor=RayExecutor(2))
    assert sorted(report.done) == sorted(i.id for i in items) and not report.failed
    assert (tmp_path / f"killed-{items[1].id}").exists()  # the worker really died once

    always = KillingTileTask(
        target_mpp=32.0, tile_size=16, pixel=PIXEL, kill_item=items[0].id, always=True
    )
    two = items[:2]
    report = run_cohort(always, two, tmp_path / "out2", executor=RayExecutor(2, max_retries=1))
    assert report.done == [items[1].id]
    (failure,) = report.failed
    assert failure.item == items[0].id and "Ray worker died" in failure.reason
    assert "2 times" in failure.reason


def test_ray_worker_setup_failure_stops_the_run(cluster: object, tmp_path: Path) -> None:
    with pytest.raises(WorkerSetupError, match="no model bundle here"):
        run_cohort(
            FailingSetupTask(target_mpp=32.0, tile_size=16),
            slide_items(SLIDES[:1]),
            tmp_path,
            executor=RayExecutor(2),
        )


def test_command_line_on_ray(
    cluster: object, tmp_path: Path, cmu_svs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hsafast.cli import main

    args = ["tile", str(cmu_svs), "--target-mpp", "32", "--tile-size", "16"]
    assert main([*args, "--out", str(tmp_path / "r"), "--executor", "ray", "--workers", "2"]) == 0
    assert "1 slide tiled" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "l")]) == 0
    name = f"{path_id(cmu_svs)}.h5"
    assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "l" / name).read_bytes()


def test_embed_and_score_give_the_bytes_of_the_local_executor(
    cluster: object, tmp_path: Path
) -> None:
    """Each actor builds its own encoder / opens its own scorer (per-worker state); the
    features, results, heatmaps and cohort table equal the inline run's, byte for byte."""
    from scoring_helpers import random_bundle

    from hsafast.cohort.tasks import EmbedTask, ScoreTask
    from hsafast.cohort.tasks.score import score_items
    from hsafast.embedding import EmbedConfig
    from hsafast.scoring import Scorer

    slides = [SLIDES[0], SLIDES[2]]  # SVS and a JPEG without a pixel size
    embed = EmbedTask.for_encoder(
        "hsafast-test-tiny", config=EmbedConfig(target_mpp=16.0, tile_size=16), pixel=PIXEL
    )
    random_bundle(tmp_path / "bundle", target_mpp=16.0, tile_size=16)
    scorer = Scorer(tmp_path / "bundle", engine="torch", device="cpu")
    score = ScoreTask.for_scorer(scorer, pixel=PIXEL)
    for name, task, items in (
        ("embed", embed, slide_items(slides)),
        ("score", score, score_items(slides)),
    ):
        local = run_cohort(task, items, tmp_path / name / "local")
        remote = run_cohort(task, items, tmp_path / name / "ray", executor=RayExecutor(2))
        assert sorted(remote.done) == sorted(local.done) and len(local.done) == len(items)
        names = sorted(p.name for p in (tmp_path / name / "local").iterdir() if p.is_file())
        names.remove("journal.jsonl")
        assert len(names) > len(items)
        for file in names:
            ray_bytes = (tmp_path / name / "ray" / file).read_bytes()
            assert ray_bytes == (tmp_path / name / "local" / file).read_bytes(), file


def test_missing_ray_names_the_extra(tmp_path: Path, cmu_svs: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"  # import ray now raises ImportError
        "from hsafast.cli import main\n"
        f"sys.exit(main(['tile', {str(cmu_svs)!r}, '--out', {str(tmp_path)!r}, "
        "'--executor', 'ray']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "hsafast tile: error: the ray executor needs Ray: pip install 'hsafast[ray]'"
    )
    assert not any(tmp_path.iterdir())
