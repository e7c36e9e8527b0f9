"""``hsafast tile INPUT ... --out DIR``: tissue tile coordinates, one HDF5 file per slide."""

from __future__ import annotations

import argparse

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "tile",
        "tile the tissue: coordinates HDF5 per slide",
        "Per slide ID.h5 with 'coords' (N x 2 int64, level-0 top-left x, y) and the\n"
        "attributes patch_size, patch_size_level0, target_mpp, level and slide_id, as\n"
        "TRIDENT and CLAM write them, plus 'tissue_fraction' (N).",
        """
hsafast tile slides/ --out coords/ --target-mpp 0.5 --tile-size 256
hsafast tile cohort.csv --out coords/ --magnification 20 --min-tissue 0.5 --workers 2
hsafast tile scans/ --out coords/ --slide-mpp 0.25      # for files that record no pixel size
""",
    )
    common.add_inputs(p)
    common.add_run_options(p)
    common.add_tile_options(p, magnification=True)
    p.add_argument(
        "--overlap", type=int, default=0, metavar="PX", help="overlap of neighbouring tiles"
    )
    common.add_min_tissue(p)
    common.add_pixel_options(p)
    common.add_tissue_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.cohort import slide_items
    from hsafast.cohort.tasks import TileTask

    task = TileTask(
        target_mpp=args.target_mpp,
        magnification=args.magnification,
        tile_size=args.tile_size,
        overlap=args.overlap,
        min_tissue=args.min_tissue,
        tissue=common.tissue_config(args),
        pixel=common.pixel_size(args),
    )
    items = slide_items(args.inputs, recursive=args.recursive)
    return common.run_task(args, task, items, "slide", "tiled")
