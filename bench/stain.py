"""Stain quantification throughput and accuracy: ``python -m bench stain [--quick]``.

Side by side, on the same decoded uint8 tiles, at the same thread count, every
method on a worker thread (glibc's allocator re-faults large temporaries on the
main thread, which slows the NumPy peers there four-fold) with 0.3 s of idle time
before each timed call (so that one peer's spinning thread pools do not slow the
next):

* pixel statistics: scikit-image ``rgb2hed`` plus the same thresholds (a thread
  pool of tiles) against hsafast's fused kernel, on crops of scikit-image's IHC image;
* cells: the Python reference (OpenCV, SciPy, scikit-image's watershed; a thread
  pool of tiles, OpenCV and BLAS held to one thread per worker) against the native
  kernel (its own threads), alone and with the pixel statistics (the per-tile work
  of ``quantify``), on the real IHC crops and on tiles of a simulated Ki-67 slide;
* ``quantify`` end to end on the simulated Ki-67 slide (reading and decoding
  included), with either cell engine.

Also: agreement of the two cell engines (per-tile counts) and of the pixel
fractions, and the synthetic-truth validation of the nuclear and membranous
compartments. ``--figures`` writes the overlay PNGs under bench/figures/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench._common import Table

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MPP = 0.5  # the real IHC image (20x) and the simulated slides


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path))
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def _tiles(n: int, size: int) -> np.ndarray:
    img = _read_rgb(DATA / "skimage_ihc.png")
    rng = np.random.default_rng(0)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, img.shape[0] - size + 1, 2)
        t = img[y : y + size, x : x + size]
        out[i] = np.rot90(t, i % 4) if i % 8 < 4 else np.rot90(t[::-1], i % 4)
    return out


def skimage_stats(tiles: np.ndarray, pool: ThreadPoolExecutor) -> np.ndarray:
    """The peer: rgb2hed, then the same thresholds as hsafast's kernel (log10 OD)."""
    from skimage.color import rgb2hed

    from hsafast.stain import PixelThresholds

    t = PixelThresholds()

    # Summed log10 OD > t  <=>  r * g * b < 255**3 * 10**-t: one integer product.
    limit = 255.0**3 * 10.0 ** (-t.tissue_od)

    def one(tile: np.ndarray) -> list[float]:
        hed = rgb2hed(tile) * 6.0  # scikit-image's OD scale is log10 OD / 6
        rgb = tile.astype(np.int64)
        tissue = rgb[..., 0] * rgb[..., 1] * rgb[..., 2] < limit
        dab = hed[..., 2][tissue]
        n = max(int(tissue.sum()), 1)
        return [
            tissue.sum() / tissue.size,
            *((dab > thr).sum() / n for thr in t.dab),
            (hed[..., 0][tissue] > t.hematoxylin).sum() / n,
            dab.sum() / n,
        ]

    return np.array(list(pool.map(one, tiles)))


def hsafast_stats(tiles: np.ndarray) -> np.ndarray:
    from hsafast.stain import pixel_stats

    px = pixel_stats(tiles)
    n = np.maximum(px[:, 0], 1)
    return np.stack(
        [px[:, 0] / (tiles.shape[1] * tiles.shape[2]), *(px[:, k] / n for k in (1, 2, 3, 4, 6))],
        axis=1,
    )


def _limits(threads: int) -> Any:
    """BLAS (rgb2hed's matrix product) limited to ``threads``, where threadpoolctl is."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def _timed(
    peers: Mapping[str, Callable[[], object]], worker: ThreadPoolExecutor, repeats: int
) -> dict[str, float]:
    """Median seconds of each peer, run on ``worker`` in turn after 0.3 s of idle time."""
    samples: dict[str, list[float]] = {name: [] for name in peers}

    def once(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    for fn in peers.values():  # warm-up
        worker.submit(fn).result()
    for _ in range(repeats):
        for name, fn in peers.items():
            time.sleep(0.3)
            samples[name].append(worker.submit(once, fn).result())
    return {name: statistics.median(v) for name, v in samples.items()}


def pixel_throughput(table: Table, tiles: np.ndarray, threads: list[int], repeats: int) -> None:
    """Pixel statistics: scikit-image (thread pool) and the fused kernel, same threads."""
    import cv2

    from hsafast._native import core

    mpx = tiles[..., 0].size / 1e6
    before = core.get_num_threads()
    with ThreadPoolExecutor(1) as worker:
        for t in threads:
            core.set_num_threads(t)
            cv2.setNumThreads(1)
            with _limits(1), ThreadPoolExecutor(t) as pool:
                err = float(np.abs(skimage_stats(tiles, pool) - hsafast_stats(tiles)).max())
                peers = {
                    "peer": partial(skimage_stats, tiles, pool),
                    "ours": partial(hsafast_stats, tiles),
                }
                sec = _timed(peers, worker, repeats)
            name = "real IHC"
            table.add(t, "scikit-image rgb2hed + thresholds", name, mpx / sec["peer"], 1.0, "")
            table.add(
                t, "hsafast pixel statistics (fused kernel)", name, mpx / sec["ours"],
                sec["peer"] / sec["ours"], f"max |diff| {err:.1e}",
            )  # fmt: skip
    core.set_num_threads(before)


def _python_cells(tiles: np.ndarray, pool: ThreadPoolExecutor, workers: int) -> list[Any]:
    """The reference, tiles spread over the pool in chunks (Ki-67: a nuclear marker)."""
    from hsafast.stain import HED
    from hsafast.stain.compartments import CellConfig, detect_cells

    cfg = CellConfig(engine="python")
    parts = np.array_split(np.arange(len(tiles)), min(len(tiles), 4 * workers))
    done = pool.map(lambda i: detect_cells(tiles[i], HED, MPP, "ki67", cfg), parts)
    return [c for part in done for c in part]


def _native_cells(tiles: np.ndarray) -> list[Any]:
    from hsafast.stain import HED
    from hsafast.stain.compartments import detect_cells

    return detect_cells(tiles, HED, MPP, "ki67")


def _with_stats(cells: Callable[[], object], tiles: np.ndarray) -> Callable[[], object]:
    """The per-tile work of quantify: pixel statistics, then cells."""
    return lambda: (hsafast_stats(tiles), cells())


def cells_throughput(
    table: Table, sets: dict[str, np.ndarray], threads: list[int], repeats: int
) -> dict[str, Any]:
    """Cells, alone and with the pixel statistics: Python reference and native kernel."""
    import cv2

    from hsafast._native import core

    agreement: dict[str, Any] = {}
    before = core.get_num_threads()
    with ThreadPoolExecutor(1) as worker:
        for name, tiles in sets.items():
            mpx = tiles[..., 0].size / 1e6
            for t in threads:
                core.set_num_threads(t)
                cv2.setNumThreads(1)
                with _limits(1), ThreadPoolExecutor(t) as pool:
                    python = partial(_python_cells, tiles, pool, t)
                    native = partial(_native_cells, tiles)
                    counts = np.array(
                        [[len(a), len(b)] for a, b in zip(python(), native(), strict=True)]
                    )
                    peers: dict[str, Callable[[], object]] = {
                        "python": python,
                        "native": native,
                        "stats+python": _with_stats(python, tiles),
                        "stats+native": _with_stats(native, tiles),
                    }
                    sec = _timed(peers, worker, repeats)
                diff = np.abs(counts[:, 0] - counts[:, 1]) / np.maximum(counts[:, 0], 1)
                agreement[name] = {
                    "tiles": len(tiles),
                    "cells": int(counts[:, 0].sum()),
                    "worst_count_difference": float(diff.max()),
                    "tiles_with_equal_counts": int((counts[:, 0] == counts[:, 1]).sum()),
                }
                py, nat = sec["python"], sec["native"]
                sp, sn = sec["stats+python"], sec["stats+native"]
                table.add(t, "cells: Python reference", name, mpx / py, 1.0, "")
                table.add(t, "cells: native", name, mpx / nat, py / nat, f"counts {diff.max():.0%}")
                table.add(t, "stats + cells: Python reference", name, mpx / sp, 1.0, "")
                table.add(t, "stats + cells: native", name, mpx / sn, sp / sn, "")
    core.set_num_threads(before)
    return agreement


def simulated_ki67(root: Path, size: int, seed: int) -> tuple[Path, np.ndarray]:
    """A simulated Ki-67 slide, and its tissue tiles (256 px, level 0) decoded in memory."""
    from hsafast import open_slide
    from hsafast.stain import pixel_stats
    from hsafast.synth import make_cohort

    cohort = make_cohort(root, 1, markers=("ki67",), slide_size=size, seed=seed, workers=2)
    path = cohort.out_dir / cohort.cases[0].ihc_path
    with open_slide(path) as slide:
        tiles = slide.read_regions(_grid(size), 0, (256, 256))
    tissue = pixel_stats(tiles)[:, 0] >= 0.05 * 256 * 256
    return path, np.ascontiguousarray(tiles[tissue])


def _grid(size: int) -> np.ndarray:
    ys, xs = np.mgrid[0 : size - 255 : 256, 0 : size - 255 : 256]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)


def _quantify(slide: Path, coords: np.ndarray, engine: str, workers: int) -> object:
    import hsafast
    from hsafast.stain import QuantifyConfig
    from hsafast.stain.compartments import CellConfig

    cfg = QuantifyConfig(cells=CellConfig(engine=engine), workers=workers)  # type: ignore[arg-type]
    return hsafast.quantify(slide, coords, "ki67", size=256, config=cfg)


def quantify_throughput(
    table: Table, slide: Path, size: int, threads: list[int], repeats: int
) -> None:
    """``quantify`` end to end (reading and decoding included) with either cell engine."""
    import cv2

    from hsafast._native import core

    coords = _grid(size)
    mpx = len(coords) * 256 * 256 / 1e6
    name = "simulated Ki-67 slide"
    before = core.get_num_threads()
    with ThreadPoolExecutor(1) as worker:
        for t in threads:
            core.set_num_threads(t)
            cv2.setNumThreads(t)
            peers = {e: partial(_quantify, slide, coords, e, t) for e in ("python", "native")}
            with _limits(t):
                sec = _timed(peers, worker, repeats)
            py, nat = sec["python"], sec["native"]
            table.add(t, "quantify, Python cells", name, mpx / py, 1.0, "reading included")
            table.add(t, "quantify, native cells", name, mpx / nat, py / nat, "reading included")
    core.set_num_threads(before)


def validation(n_tiles: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per-tile positive fraction vs truth, and slide labels, on rendered tiles.

    The tiles are made hard on purpose: touching nuclei, weak positives down to
    0.15 OD (below the 0.2 OD 1+ threshold, so truth and reading can differ),
    non-specific background DAB, blur, noise and JPEG.
    """
    from hsafast.stain import HED, get_marker
    from hsafast.stain.compartments import detect_cells
    from hsafast.synth.ihc_tile import render_ihc_tile

    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    pairs: tuple[tuple[Literal["nuclear", "membranous"], str], ...] = (
        ("nuclear", "ki67"),
        ("membranous", "pdl1"),
    )
    for compartment, marker in pairs:
        m = get_marker(marker)
        truth, est, slides_ok, slides = [], [], 0, 0
        per_slide = 4
        for s in range(n_tiles // per_slide):
            f_slide = float(rng.uniform(0, 0.9))
            t_pos = t_all = e_pos = e_all = 0
            for k in range(per_slide):
                f = float(np.clip(f_slide + rng.normal(0, 0.05), 0, 1))
                tile = render_ihc_tile(
                    256, positive_fraction=f, compartment=compartment, density=0.9,
                    spacing=2.0 if compartment == "nuclear" else 2.8, positive_od=(0.15, 0.9),
                    background_dab=0.04, seed=seed * 10_000 + s * per_slide + k,
                )  # fmt: skip
                (cells,) = detect_cells(tile.rgb, HED, MPP, m)
                truth.append(tile.positive.mean())
                est.append(cells.positive().mean() if len(cells) else 0.0)
                t_pos, t_all = t_pos + int(tile.positive.sum()), t_all + len(tile.positive)
                e_pos, e_all = e_pos + int(cells.positive().sum()), e_all + len(cells)
            slides += 1
            slides_ok += m.classify(t_pos / t_all) == m.classify(e_pos / max(e_all, 1))
        a, b = np.array(truth), np.array(est)
        out[compartment] = {
            "tiles": float(len(a)),
            "mae": float(np.abs(a - b).mean()),
            "pearson_r": float(np.corrcoef(a, b)[0, 1]),
            "slide_label_accuracy": slides_ok / slides,
            "slides": float(slides),
        }
    return out


def synth_validation(
    n_cases: int, size: int, seed: int, out_dir: Path | None = None
) -> dict[str, Any]:
    """Per-tile positive fraction vs the simulator's truth, slide labels and confusion.

    Cases come from ``hsafast.synth.make_cohort`` (written to ``out_dir`` or a
    temporary folder); every IHC slide is read on a 256-px grid at level 0. Each
    marker is scored twice: as shipped (tumour-like cells only) and counting all
    detected cells, the reading before tumour-like cells were told apart.
    """
    import tempfile

    from hsafast.stain import CellConfig, QuantifyConfig
    from hsafast.synth import make_cohort
    from hsafast.synth.scoring import score_simulated_case, tile_agreement

    every_cell = QuantifyConfig(
        cells=CellConfig(
            tumour_min_area_um2=0, tumour_min_width_um=0, tumour_min_fill=0, tumour_min_neighbours=0
        )
    )
    with contextlib.ExitStack() as stack:
        root = out_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        cohort = make_cohort(root, n_cases, slide_size=size, seed=seed, workers=2)
        runs = {
            name: [
                score_simulated_case(
                    root, c.case_id, cohort.out_dir / c.ihc_path, c.marker, config=cfg
                )
                for c in cohort.cases
            ]
            for name, cfg in (("tumour-like cells", None), ("all cells", every_cell))
        }
    out: dict[str, Any] = {}
    for name, cases in runs.items():
        per: dict[str, Any] = {}
        for marker in sorted({c.marker for c in cases}):
            mine = [c for c in cases if c.marker == marker]
            confusion: dict[str, int] = {}
            for c in mine:
                key = f"{c.true_class} -> {c.derived_class}"
                confusion[key] = confusion.get(key, 0) + 1
            per[marker] = {
                **tile_agreement(mine),
                "cases": len(mine),
                "binary_accuracy": float(
                    np.mean([c.derived_binary == c.true_binary for c in mine])
                ),
                "class_accuracy": float(np.mean([c.derived_class == c.true_class for c in mine])),
                "confusion": confusion,
                "scores": [(round(c.true_score, 3), round(c.derived_score, 3)) for c in mine],
            }
        per["all"] = {
            "binary_accuracy": float(np.mean([c.derived_binary == c.true_binary for c in cases])),
            "class_accuracy": float(np.mean([c.derived_class == c.true_class for c in cases])),
        }
        out[name] = per
    return out


def _print_synth(result: dict[str, Any]) -> None:
    for name, per in result.items():
        print(f"\nsimulated cohort, scoring {name}:")
        for marker, v in per.items():
            if marker == "all":
                print(f"  all markers: binary labels {v['binary_accuracy']:.0%}, "
                      f"classes {v['class_accuracy']:.0%}")  # fmt: skip
                continue
            print(
                f"  {marker}: {int(v['tiles'])} tiles, MAE {v['mae']:.3f}, Pearson r "
                f"{v['pearson_r']:.3f}; {v['cases']} cases, binary {v['binary_accuracy']:.0%}, "
                f"classes {v['class_accuracy']:.0%}; {v['confusion']}"
            )
            print(f"    (true, derived) scores: {v['scores']}")


def figures(out_dir: Path) -> list[Path]:
    """Overlays on the real IHC images: DAB grades (1+ yellow, 2+ orange, 3+ red), cells.

    scikit-image's image is a membranous/cytoplasmic stain at about 0.5 um/px:
    its cells are read as for PD-L1 (green: ring positive, blue: negative). The
    BIRL sections are at 5 % scale, too coarse for cells: pixel grades only.
    """
    import cv2
    from PIL import Image

    from hsafast.stain import HED, concentrations
    from hsafast.stain.compartments import detect_cells

    paired = DATA / "paired"
    images = {
        "skimage_ihc": (DATA / "skimage_ihc.png", True),
        "birl_prospc": (paired / "birl_mouse_lung_lesion/Izd2-29-041-w35_proSPC.jpg", False),
        "birl_pancytokeratin": (paired / "birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg", False),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    colours = np.array([[0, 0, 0], [255, 230, 0], [255, 140, 0], [220, 0, 0]], np.uint8)
    for name, (path, cells) in images.items():
        rgb = _read_rgb(path)
        c = concentrations(rgb)
        grade = np.searchsorted(np.array([0.2, 0.4, 0.6]), c[..., 2], side="left")
        over = rgb.copy()
        mask = grade > 0
        over[mask] = (0.45 * rgb[mask] + 0.55 * colours[grade[mask]]).astype(np.uint8)
        if cells:
            (found,) = detect_cells(rgb, HED, MPP, "pdl1")
            for (x, y), g in zip(found.xy, found.grade, strict=True):
                col = (0, 200, 0) if g > 0 else (0, 60, 255)
                cv2.circle(over, (round(float(x)), round(float(y))), 6, col, 2, cv2.LINE_AA)
        dab = np.clip(255 - c[..., 2] / 1.0 * 255, 0, 255).astype(np.uint8)
        panel = np.concatenate([rgb, np.repeat(dab[..., None], 3, -1), over], axis=1)
        scale = min(1.0, 1200 / panel.shape[1])
        panel = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        dest = out_dir / f"stain_{name}.png"
        # A 96-colour palette keeps the figures small enough to commit.
        Image.fromarray(panel).quantize(96, dither=Image.Dither.NONE).save(dest, optimize=True)
        written.append(dest)
    return written


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench stain", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer tiles and repeats")
    p.add_argument("--tiles", type=int, default=64, help="tiles of --size px (default 64)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--figures", action="store_true", help="write bench/figures/stain_*.png")
    p.add_argument(
        "--synth", type=int, default=0, metavar="N",
        help="only validate on N simulated cases (e.g. 12) against the simulator's truth",
    )  # fmt: skip
    p.add_argument("--synth-size", type=int, default=4096, help="simulated slide side (px)")
    p.add_argument("--synth-seed", type=int, default=1)
    p.add_argument("--synth-dir", type=Path, default=None, help="keep the simulated cohort here")
    args = p.parse_args(argv)
    if args.synth:
        result = synth_validation(args.synth, args.synth_size, args.synth_seed, args.synth_dir)
        _print_synth(result)
        table = Table("stain_synth", ["marker"])
        table.notes.update(
            {"cases": args.synth, "size": args.synth_size, "seed": args.synth_seed, **result}
        )
        print(f"saved {table.save(['scikit-image', 'opencv-python-headless'])}")
        return 0
    n = 16 if args.quick else args.tiles
    repeats = 3 if args.quick else 5
    threads = [int(t) for t in args.threads.split(",")]
    real = _tiles(n, args.size)
    table = Table("stain", ["threads", "method", "tiles", "Mpx/s", "speed-up", "agreement"])
    table.notes["load_average_before"] = os.getloadavg()
    pixel_throughput(table, real, threads, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        size = 2048 if args.quick else 4096
        slide, simulated = simulated_ki67(Path(tmp), size, args.synth_seed)
        sets = {"real IHC (FHL2, membranous)": real, "simulated Ki-67": simulated}
        agreement = cells_throughput(table, sets, threads, repeats)
        quantify_throughput(table, slide, size, threads, max(repeats // 2, 2))
    table.notes["load_average_after"] = os.getloadavg()
    table.print()
    val = validation(16 if args.quick else 48)
    for comp, v in val.items():
        print(
            f"synthetic {comp}: {int(v['tiles'])} tiles, MAE {v['mae']:.4f}, Pearson r "
            f"{v['pearson_r']:.4f}, slide labels {v['slide_label_accuracy']:.0%} of "
            f"{int(v['slides'])}"
        )
    for name, a in agreement.items():
        print(f"cell engines on {name}: {a}")
    table.notes.update(
        {"tiles": n, "size": args.size, "validation": val, "cell_engine_agreement": agreement,
         "simulated_slide": {"size": size, "seed": args.synth_seed, "tissue_tiles": len(simulated)}}
    )  # fmt: skip
    if args.figures:
        for path in figures(ROOT / "bench" / "figures"):
            print(f"wrote {path.relative_to(ROOT)}")
    print(f"saved {table.save(['scikit-image', 'opencv-python-headless'])}")
    return 0
