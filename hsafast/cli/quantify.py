"""``hsafast quantify SLIDE|FOLDER|MANIFEST --marker ki67 --out DIR``: IHC stain statistics.

Writes, per slide, ``<id>.stain.csv`` (or ``.stain.h5``) with one row per tile
(level-0 ``x, y`` next to its statistics) and ``<id>.label.json`` with the slide
label. With a manifest, each case's IHC slide is read with the case's marker
unless ``--marker`` is given. Finished slides are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hsafast.slides import Slide
    from hsafast.stain.markers import Marker
    from hsafast.tiling import TileGrid


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantify", help="per-tile DAB statistics and slide labels of IHC slides")
    p.add_argument("inputs", nargs="+", help="IHC slide files, folders or cohort manifests")
    p.add_argument("--marker", default=None, help="marker name (ki67, p53, pdl1 or from --markers)")
    p.add_argument("--markers", default=None, help="TOML or JSON file defining more markers")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mpp", type=float, default=None, help="pixel size override (um/px)")
    p.add_argument("--target-mpp", type=float, default=0.5, help="tile pixel size (um/px)")
    p.add_argument("--tile-size", type=int, default=256, help="tile side at --target-mpp")
    p.add_argument("--format", choices=("csv", "h5"), default="csv", help="per-tile table format")
    p.add_argument("--overwrite", action="store_true", help="redo slides already done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.cli.batch import collect_slides, run_batch
    from hsafast.errors import ConfigError
    from hsafast.manifest import is_manifest, read_manifest
    from hsafast.stain.markers import get_marker, load_markers

    try:
        extra = load_markers(args.markers) if args.markers else {}
    except ConfigError as exc:
        raise SystemExit(f"hsafast quantify: {exc}") from None
    jobs: dict[Path, str | None] = {}
    for item in args.inputs:
        path = Path(item)
        if path.is_file() and is_manifest(path):
            for case in read_manifest(path).cases:
                jobs.setdefault(case.ihc_path, args.marker or case.marker)
        else:
            for slide in collect_slides([path]):
                jobs.setdefault(slide, args.marker)
    if any(m is None for m in jobs.values()):
        raise SystemExit("hsafast quantify: give --marker (or a manifest with a marker column)")
    for name in set(jobs.values()):
        try:
            get_marker(str(name), extra)
        except ConfigError as exc:
            raise SystemExit(f"hsafast quantify: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def step(path: Path) -> bool:
        return quantify_one(path, get_marker(str(jobs[path]), extra), out, args)

    return run_batch(list(jobs), step, what="slides quantified", out_dir=out).exit_code


def quantify_one(path: Path, marker: Marker, out: Path, args: argparse.Namespace) -> bool:
    from hsafast._fileio import atomic_path, atomic_write_text, safe_id
    from hsafast.slides import open_slide
    from hsafast.stain.quantification import quantify, slide_label

    sid = safe_id(path.stem)
    table = out / f"{sid}.stain.{args.format}"
    label_path = out / f"{sid}.label.json"
    if table.exists() and label_path.exists() and not args.overwrite:
        return False
    with open_slide(path, mpp=args.mpp) as slide:
        grid = slide_grid(slide, args.target_mpp, args.tile_size)
        stats = quantify(slide, grid, marker)
    label = slide_label(stats, marker)
    cols = stats.columns()
    with atomic_path(table) as tmp:
        if args.format == "csv":
            with tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(list(cols))
                w.writerows(zip(*(_fmt(v) for v in cols.values()), strict=True))
        else:
            import h5py

            with h5py.File(tmp, "w") as h5:
                h5["coords"] = stats.coords
                for name, values in cols.items():
                    if name not in ("x", "y"):
                        h5[name] = values
                h5.attrs.update(
                    marker=marker.name, level=stats.level, size=stats.size, slide=str(path)
                )
    payload = {"slide": str(path), "tile_grid": _grid_info(grid), **label.to_dict()}
    atomic_write_text(label_path, json.dumps(payload, indent=2) + "\n")
    return True


def _fmt(values: np.ndarray) -> list[str]:
    if np.issubdtype(values.dtype, np.integer):
        return [str(int(v)) for v in values]
    return [f"{float(v):.6g}" for v in values]


def _grid_info(grid: TileGrid) -> dict[str, object]:
    return {
        "tiles": len(grid),
        "level": grid.level,
        "read_size": grid.read_size,
        "size": grid.size,
        "target_mpp": grid.target_mpp,
    }


def slide_grid(slide: Slide, target_mpp: float, size: int) -> TileGrid:
    """The slide's tissue tile grid; a plain regular grid when tiling is unavailable.

    The regular grid covers the whole slide (blank tiles are flagged and
    excluded by the quantification itself).
    """
    from hsafast import tiling

    make = getattr(tiling, "tile_grid", None)
    if make is not None:
        grid: TileGrid = make(slide, target_mpp=target_mpp, size=size)
        return grid
    return regular_grid(slide, target_mpp, size)


def regular_grid(slide: Slide, target_mpp: float, size: int) -> TileGrid:
    from hsafast.tiling import TileGrid

    downsample = target_mpp / slide.mpp
    level = slide.best_level_for_downsample(max(downsample, 1.0))
    read_size = max(1, round(size * downsample / slide.level_downsamples[level]))
    step0 = max(1, round(read_size * slide.level_downsamples[level]))
    width, height = slide.dimensions
    xs = np.arange(0, max(width - step0, 0) + 1, step0)
    ys = np.arange(0, max(height - step0, 0) + 1, step0)
    coords = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.int64)
    return TileGrid(
        slide_path=slide.path,
        coords=coords,
        tissue_fraction=np.full(len(coords), np.nan),
        level=level,
        read_size=read_size,
        size=size,
        patch_size_level0=step0,
        target_mpp=target_mpp,
    )
