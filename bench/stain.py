"""Stain quantification throughput and accuracy: ``python -m bench stain [--quick]``.

Side by side on the same uint8 tiles (crops of scikit-image's IHC image, flipped
and rotated): scikit-image ``rgb2hed`` plus the same thresholding (tissue, DAB
1+/2+/3+, hematoxylin area, mean DAB) against hsafast's fused kernel, both at
the same thread count (scikit-image over a thread pool of tiles). Also: the
cell-level path (concentration maps + nuclei) in tiles/s, agreement of the
per-tile fractions between the two, and the synthetic-truth validation of the
nuclear and membranous compartments (MAE, Pearson r, slide-label accuracy).
``--figures`` writes the overlay PNGs under bench/figures/.
"""

from __future__ import annotations

import argparse
import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import Table, median_seconds

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def _tiles(n: int, size: int) -> np.ndarray:
    import cv2

    img = np.ascontiguousarray(cv2.imread(str(DATA / "skimage_ihc.png"))[..., ::-1])
    rng = np.random.default_rng(0)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, img.shape[0] - size + 1, 2)
        t = img[y : y + size, x : x + size]
        out[i] = np.rot90(t, i % 4) if i % 8 < 4 else np.rot90(t[::-1], i % 4)
    return out


def skimage_stats(tiles: np.ndarray, threads: int) -> np.ndarray:
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

    if threads == 1:
        return np.array([one(x) for x in tiles])
    with ThreadPoolExecutor(threads) as pool:
        return np.array(list(pool.map(one, tiles)))


def hsafast_stats(tiles: np.ndarray) -> np.ndarray:
    from hsafast.stain import pixel_stats

    px = pixel_stats(tiles)
    n = np.maximum(px[:, 0], 1)
    return np.stack(
        [px[:, 0] / (tiles.shape[1] * tiles.shape[2]), *(px[:, k] / n for k in (1, 2, 3, 4, 6))],
        axis=1,
    )


def rgb2hed_only(tiles: np.ndarray, threads: int) -> None:
    from skimage.color import rgb2hed

    if threads == 1:
        for x in tiles:
            rgb2hed(x)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(rgb2hed, tiles))


def throughput(table: Table, tiles: np.ndarray, threads: list[int], repeats: int) -> None:
    from hsafast._native import core

    mpx = tiles[..., 0].size / 1e6
    before = core.get_num_threads()
    skimage_stats(tiles, 1)  # warm both paths up once before any timing
    hsafast_stats(tiles)
    for t in threads:
        core.set_num_threads(t)
        with _blas_threads(t):
            _throughput_at(table, tiles, t, repeats, mpx)
    core.set_num_threads(before)


def _blas_threads(n: int) -> Any:
    """Limit BLAS (rgb2hed's matrix product) to the same thread count, where possible."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def _throughput_at(table: Table, tiles: np.ndarray, t: int, repeats: int, mpx: float) -> None:
    from hsafast.stain import concentrations

    ref = skimage_stats(tiles, t)
    ours = hsafast_stats(tiles)
    err = float(np.abs(ref - ours).max())
    s_sk = median_seconds(lambda t=t: skimage_stats(tiles, t), repeats, 1)
    s_stats = median_seconds(lambda: hsafast_stats(tiles), repeats * 4, 2)
    s_maps = median_seconds(lambda: concentrations(tiles), repeats, 1)
    s_hed = median_seconds(lambda t=t: rgb2hed_only(tiles, t), repeats, 1)
    table.add(t, "scikit-image rgb2hed alone (no statistics)", mpx / s_hed, s_sk / s_hed, "")
    table.add(t, "scikit-image rgb2hed + thresholds", mpx / s_sk, 1.0, 0.0)
    table.add(t, "hsafast maps (concentrations)", mpx / s_maps, s_sk / s_maps, 0.0)
    table.add(t, "hsafast stats-only (fused kernel)", mpx / s_stats, s_sk / s_stats, err)


def cells_rate(tiles: np.ndarray, repeats: int) -> float:
    from hsafast.stain import concentrations, nuclear_cells

    def run() -> None:
        for tile in tiles:
            c = concentrations(tile)
            nuclear_cells(c[..., 0], c[..., 2], 0.5, (0.2, 0.4, 0.6))

    return len(tiles) / median_seconds(run, repeats, 1)


def validation(n_tiles: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per-tile positive fraction vs truth, and slide labels, on rendered tiles.

    The tiles are made hard on purpose: touching nuclei, weak positives down to
    0.15 OD (below the 0.2 OD 1+ threshold, so truth and reading can differ),
    non-specific background DAB, blur, noise and JPEG.
    """
    from hsafast.stain import concentrations, get_marker, membranous_cells, nuclear_cells
    from hsafast.synth.ihc_tile import render_ihc_tile

    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    for compartment, marker in (("nuclear", "ki67"), ("membranous", "pdl1")):
        m = get_marker(marker)
        fn = nuclear_cells if compartment == "nuclear" else membranous_cells
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
                c = concentrations(tile.rgb)
                cells = fn(c[..., 0], c[..., 2], 0.5, m.dab_thresholds)
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

    from hsafast.stain import concentrations, membranous_cells

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
        rgb = np.ascontiguousarray(cv2.imread(str(path))[..., ::-1])
        c = concentrations(rgb)
        grade = np.searchsorted(np.array([0.2, 0.4, 0.6]), c[..., 2], side="left")
        over = rgb.copy()
        mask = grade > 0
        over[mask] = (0.45 * rgb[mask] + 0.55 * colours[grade[mask]]).astype(np.uint8)
        if cells:
            found = membranous_cells(c[..., 0], c[..., 2], 0.5, (0.2, 0.4, 0.6))
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
    tiles = _tiles(n, args.size)
    threads = [int(t) for t in args.threads.split(",")]

    table = Table("stain", ["threads", "method", "Mpx/s", "speed-up", "max |diff| of fractions"])
    throughput(table, tiles, threads, repeats)
    table.print()
    rate = cells_rate(tiles[: min(n, 16)], 3)
    val = validation(16 if args.quick else 48)
    print(
        f"\ncell-level path (maps + nuclei, 1 tile at a time): {rate:.1f} tiles/s of {args.size} px"
    )
    for comp, v in val.items():
        print(
            f"synthetic {comp}: {int(v['tiles'])} tiles, MAE {v['mae']:.4f}, Pearson r "
            f"{v['pearson_r']:.4f}, slide labels {v['slide_label_accuracy']:.0%} of "
            f"{int(v['slides'])}"
        )
    table.notes.update(
        {"tiles": n, "size": args.size, "cells_tiles_per_s": rate, "validation": val}
    )
    if args.figures:
        for path in figures(ROOT / "bench" / "figures"):
            print(f"wrote {path.relative_to(ROOT)}")
    print(f"saved {table.save(['scikit-image', 'opencv-python-headless'])}")
    return 0
