"""``hsafast tile SLIDE ... --out DIR``: tissue tile coordinates, one HDF5 file per slide.

Each ``ID.h5`` holds ``coords`` (N x 2 int64, level-0 top-left x, y) with the
attributes ``patch_size``, ``patch_size_level0``, ``target_mpp``, ``level`` and
``slide_id``, as TRIDENT and CLAM write them, plus ``tissue_fraction`` (N)
(see ``hsafast.features``).
Slides whose file exists are skipped unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from hsafast.cli.tissue import add_tissue_options, tissue_config, usage_error

if TYPE_CHECKING:
    pass


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tile", help="tile the tissue: coordinates HDF5 per slide")
    p.add_argument("inputs", nargs="+", help="slide files, folders or cohort manifests")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--mpp", type=float, default=None, help="tile pixel size (default: 0.5)")
    target.add_argument(
        "--magnification", type=float, default=None, help="tile magnification (20 = 0.5 um/px)"
    )
    p.add_argument("--size", type=int, default=256, help="tile size in pixels (default: 256)")
    p.add_argument("--overlap", type=int, default=0, help="overlap in pixels (default: 0)")
    p.add_argument(
        "--min-tissue", type=float, default=0.25, help="least tissue fraction kept (default: 0.25)"
    )
    add_tissue_options(p)
    p.add_argument("--overwrite", action="store_true", help="redo slides already done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast._fileio import safe_id
    from hsafast.cli.batch import collect_slides, run_batch
    from hsafast.errors import HsafastError, NoTissueError
    from hsafast.features import FeatureFile
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    try:
        config = tissue_config(args)
    except HsafastError as exc:
        return usage_error(str(exc))
    if args.size <= 0:
        return usage_error(f"--size must be positive, got {args.size}")
    if not 0 <= args.overlap < args.size:
        return usage_error(f"--overlap must be in [0, {args.size}), got {args.overlap}")
    if not 0 <= args.min_tissue <= 1:
        return usage_error(f"--min-tissue must be in [0, 1], got {args.min_tissue}")
    for name in ("mpp", "magnification"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            return usage_error(f"--{name} must be positive, got {value}")
    out_dir: Path = args.out
    target_mpp = args.mpp if args.mpp is not None or args.magnification is not None else 0.5

    def step(path: Path) -> bool:
        slide_id = safe_id(path.stem)
        target = out_dir / f"{slide_id}.h5"
        if not args.overwrite and target.exists():
            return False
        with open_slide(path, mpp=args.slide_mpp) as slide:
            mask = detect_tissue(slide, config)
            grid = tile_grid(
                slide,
                mask,
                mpp=target_mpp,
                size=args.size,
                overlap=args.overlap,
                min_tissue=args.min_tissue,
                magnification=args.magnification,
            )
        if len(grid) == 0:
            raise NoTissueError(
                f"no {args.size}-px tile holds at least {args.min_tissue:.0%} tissue", path
            )
        FeatureFile.from_grid(grid, slide_id=slide_id).write(target)
        return True

    out_dir.mkdir(parents=True, exist_ok=True)
    report = run_batch(collect_slides(args.inputs), step, what="slides tiled", out_dir=out_dir)
    return report.exit_code
