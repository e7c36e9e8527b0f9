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
    """The slide's tissue tiles at ``target_mpp`` (detected tissue, default thresholds)."""
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    return tile_grid(slide, detect_tissue(slide), mpp=target_mpp, size=size)
