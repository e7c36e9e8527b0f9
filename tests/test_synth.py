"""The simulator's files: manifest, slides every reader opens alike, ground truth, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hsafast.errors import ConfigError, InvalidParameterError
from hsafast.manifest import read_manifest
from hsafast.synth import load_truth, make_cohort, plan_cases
from hsafast.synth.model import CaseSpec, build_case
from hsafast.synth.render import SlideRenderer

SIZE = 2048


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cohort")
    return make_cohort(out, 3, slide_size=SIZE, predictability=0.8, seed=5, workers=2)


def test_manifest_and_truth_files(cohort) -> None:
    manifest = read_manifest(cohort.manifest_path)
    assert [c.marker for c in manifest.cases] == ["ki67", "p53", "pdl1"]
    for case in manifest.cases:
        assert case.label in {"low", "intermediate/high"}
        assert case.he_path.name == f"{case.case_id}_HE.tif" and case.he_path.is_file()
        assert case.ihc_path.name == f"{case.case_id}_IHC.tif" and case.ihc_path.is_file()
        folder = cohort.out_dir / "truth" / case.case_id
        for name in (
            "transform.json",
            "displacement.npy",
            "landmarks.csv",
            "cells.csv",
            "tiles.csv",
            "labels.json",
            "stains.json",
        ):
            assert (folder / name).is_file(), name
        labels = json.loads((folder / "labels.json").read_text())
        assert labels["label"] == case.label and labels["marker"] == case.marker


def test_patients_hold_several_cases() -> None:
    specs = plan_cases(30, ("ki67", "p53", "pdl1"), (1024, 1024), 0.8, seed=1)
    per_patient: dict[str, int] = {}
    for s in specs:
        per_patient[s.patient_id] = per_patient.get(s.patient_id, 0) + 1
    assert max(per_patient.values()) >= 2
    assert len(per_patient) > 5
    assert len({s.case_id for s in specs}) == 30


@pytest.mark.parametrize("stain", ["HE", "IHC"])
def test_readers_agree_on_pixels_and_pixel_size(cohort, stain: str) -> None:
    import openslide
    import tifffile

    from hsafast.slides import open_slide

    path = cohort.out_dir / "slides" / f"{cohort.cases[0].case_id}_{stain}.tif"
    osr = openslide.OpenSlide(str(path))
    assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
    assert float(osr.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER]) == pytest.approx(20)
    assert osr.level_dimensions[0] == (SIZE, SIZE)
    assert osr.level_count >= 2 and osr.level_downsamples[1] == pytest.approx(4.0)
    with tifffile.TiffFile(path) as tf:
        levels = tf.series[0].levels
        assert len(levels) == osr.level_count
        page = tf.pages[0]
        assert page.is_tiled and page.compression == 7  # JPEG
        res = page.tags["XResolution"].value
        assert 1e4 / (res[0] / res[1]) == pytest.approx(0.5)  # um per pixel, unit cm
        ref0 = levels[0].asarray()
        for level in range(osr.level_count):
            ref = levels[level].asarray()
            got = np.asarray(osr.read_region((0, 0), level, osr.level_dimensions[level]))[..., :3]
            np.testing.assert_array_equal(got, ref, err_msg=f"level {level}")
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.5)
        assert slide.objective_power == pytest.approx(20)
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (SIZE, SIZE)), ref0)
    osr.close()


def test_cucim_reads_the_same_pixels(cohort) -> None:
    cucim = pytest.importorskip("cucim")
    import tifffile

    path = cohort.cases[0].he_path
    img = cucim.CuImage(str(path))
    got = np.asarray(img.read_region((0, 0), (SIZE, SIZE), 0))[..., :3]
    with tifffile.TiffFile(path) as tf:
        ref = tf.pages[0].asarray()
    assert np.abs(got.astype(int) - ref).max() <= 1
    assert img.resolutions["level_count"] >= 2


def test_pyramid_levels_are_downsampled_level0(cohort) -> None:
    import cv2
    import tifffile

    with tifffile.TiffFile(cohort.cases[1].ihc_path) as tf:
        l0, l1 = (lv.asarray() for lv in tf.series[0].levels[:2])
    small = cv2.resize(l0, (l1.shape[1], l1.shape[0]), interpolation=cv2.INTER_AREA)
    diff = np.abs(small.astype(int) - l1)
    worst = np.unravel_index(diff.argmax(), diff.shape)
    assert diff.mean() < 2.0, f"mean {diff.mean():.2f}, worst {diff.max()} at {worst}"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = make_cohort(tmp_path / "a", 2, markers=("p53",), slide_size=1024, seed=9, workers=1)
    b = make_cohort(tmp_path / "b", 2, markers=("p53",), slide_size=1024, seed=9, workers=2)
    c = make_cohort(tmp_path / "c", 2, markers=("p53",), slide_size=1024, seed=10, workers=2)
    da, db, dc = _digest(a.out_dir), _digest(b.out_dir), _digest(c.out_dir)
    assert len(da) == 1 + 2 * 2 + 2 * 7  # manifest, slides, truth files
    assert da == db
    assert da["slides/case0001_HE.tif"] != dc["slides/case0001_HE.tif"]
    # a rerun resumes: nothing is redone and nothing changes
    again = make_cohort(tmp_path / "a", 2, markers=("p53",), slide_size=1024, seed=9, workers=1)
    assert again.skipped == 2 and _digest(a.out_dir) == da


def test_blocks_join_without_seams() -> None:
    spec = CaseSpec("c", "p", "pdl1", (4, 2), 2048, 2048, morphology=0.5, independent=0.5)
    model = build_case(spec)
    for stain in ("he", "ihc"):
        r = SlideRenderer(model, stain)
        whole = r.render_block(700, 900, 600, 300)
        left = r.render_block(700, 900, 250, 300)
        right_top = r.render_block(950, 900, 350, 120)
        right_bottom = r.render_block(950, 1020, 350, 180)
        parts = np.concatenate([left, np.concatenate([right_top, right_bottom], 0)], 1)
        assert whole.std() > 5  # real tissue, not glass
        np.testing.assert_array_equal(parts, whole, err_msg=stain)


def test_transform_round_trip_and_landmarks(cohort) -> None:
    rng = np.random.default_rng(0)
    for case in cohort.cases:
        truth = load_truth(cohort.out_dir, case.case_id)
        pts = rng.uniform(0, SIZE, (500, 2))
        back = truth.map_ihc_to_he(truth.map_he_to_ihc(pts))
        np.testing.assert_allclose(back, pts, atol=1e-3)
        lm = truth.landmarks
        assert len(lm) >= 20
        # (written with two decimals)
        np.testing.assert_allclose(truth.map_he_to_ihc(lm[:, :2]), lm[:, 2:], atol=0.02)
        # the warp is real: the affine part alone misses by pixels somewhere
        affine_only = lm[:, :2] @ truth.affine[:2, :2].T + truth.affine[:2, 2]
        assert np.abs(affine_only - lm[:, 2:]).max() > 1.0
        transform = json.loads((truth.folder / "transform.json").read_text())
        assert np.asarray(transform["affine"]).shape == (3, 3)
        d = np.load(truth.folder / "displacement.npy")
        assert d.shape == tuple(transform["displacement"]["shape"])


def test_tile_fractions_file_matches_the_function(cohort) -> None:
    import csv

    truth = load_truth(cohort.out_dir, cohort.cases[0].case_id)
    with (truth.folder / "tiles.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["tumour_positive_fraction"]]
    assert rows
    coords = np.array([[int(r["he_x"]), int(r["he_y"])] for r in rows])
    frac = truth.tile_positive_fraction(coords, int(rows[0]["size"]), space="he")
    np.testing.assert_allclose(
        frac, [float(r["tumour_positive_fraction"]) for r in rows], atol=1e-5
    )


def test_labels_follow_the_clinical_rules(cohort) -> None:
    for case in cohort.cases:
        truth = load_truth(cohort.out_dir, case.case_id)
        c, lab = truth.cells, truth.labels
        tumour = (c["type"] == "tumour") & (c["in_ihc"] == 1)
        frac = (tumour & (c["dab_positive"] == 1)).sum() / tumour.sum()
        assert lab["tumour_positive_fraction"] == pytest.approx(frac, abs=1e-6)
        if case.marker == "ki67":
            assert lab["ki67_class"] == ("high" if 100 * frac >= lab["ki67_cutoff"] else "low")
        elif case.marker == "pdl1":
            tps = 100 * frac
            expect = "<1%" if tps < 1 else ("1-49%" if tps < 50 else ">=50%")
            assert lab["pdl1_class"] == expect
            assert case.label == ("low" if tps < 1 else "intermediate/high")
        else:
            assert lab["p53_pattern"] in {"wild-type", "overexpression", "null"}
            high = lab["p53_pattern"] == "overexpression"
            assert case.label == ("intermediate/high" if high else "low")


def test_bad_input_raises_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="markers"):
        make_cohort(tmp_path, 1, markers=("her2",))
    with pytest.raises(InvalidParameterError, match="predictability"):
        make_cohort(tmp_path, 1, predictability=1.5)
    with pytest.raises(InvalidParameterError, match="512"):
        make_cohort(tmp_path, 1, slide_size=100)
    with pytest.raises(ConfigError, match="nope") as err:
        load_truth(tmp_path, "nope")
    assert err.value.path == tmp_path / "truth" / "nope"


def test_pyramid_writer_streams_with_bounded_memory(tmp_path: Path) -> None:
    """A 16k x 12k slide (576 MB of pixels) is written holding a small fraction of it."""
    import tracemalloc

    import openslide

    from hsafast.synth.tiffwrite import write_pyramid

    width, height = 16000, 12000
    rng = np.random.default_rng(0)
    import cv2

    noise = cv2.GaussianBlur(rng.normal(0, 1, (1024, 1024, 3)).astype(np.float32), (0, 0), 6)
    pattern = np.clip(128 + noise * (60 / noise.std()), 0, 255).astype(np.uint8)  # JPEG-friendly
    calls: list[tuple[int, int, int, int]] = []

    def render(x: int, y: int, w: int, h: int) -> np.ndarray:
        calls.append((x, y, w, h))
        return np.roll(pattern, (y % 97, x % 89), axis=(0, 1))[:h, :w]

    tracemalloc.start()
    try:
        write_pyramid(tmp_path / "big.tif", width, height, render, mpp=0.25, quality=70)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 120e6, f"peak {peak / 1e6:.0f} MB"
    assert max(w for _, _, w, _ in calls) <= 1000 and max(h for *_, h in calls) <= 512
    assert [y for _, y, _, _ in calls] == sorted(y for _, y, _, _ in calls)  # strip order
    osr = openslide.OpenSlide(str(tmp_path / "big.tif"))
    assert osr.dimensions == (width, height)
    assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
    assert float(osr.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER]) == pytest.approx(40)
    assert osr.level_downsamples[-1] >= 16
    x, y = width - 300, height - 200
    got = np.asarray(osr.read_region((x, y), 0, (300, 200)))[..., :3].astype(int)
    want = np.roll(pattern, (y - y % 512) % 97, axis=0)  # the block that holds (x, y)
    want = np.roll(want, ((x // 1000) * 1000) % 89, axis=1)
    want = want[y % 512 : y % 512 + 200, x % 1000 : x % 1000 + 300].astype(int)
    assert np.abs(got - want).mean() < 6  # the same content, through JPEG at quality 70
    osr.close()
