"""``hsafast tissue INPUT ... --out DIR``: tissue masks, GeoJSON outlines and overlays."""

from __future__ import annotations

import argparse

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "tissue",
        "detect tissue: mask PNG, GeoJSON outline, overlay",
        "Per slide: ID.mask.png (255 on tissue), ID.geojson (QuPath annotations in level-0\n"
        "pixels) and ID.overlay.png. IDs: <case_id>.HE / <case_id>.<marker> from a\n"
        "manifest, else the file name plus a hash of its path.",
        """
hsafast tissue slides/ --out masks/ --recursive
hsafast tissue cohort.csv --out masks/ --tissue keep_largest=1 --workers 2
""",
    )
    common.add_inputs(p)
    common.add_run_options(p)
    common.add_pixel_options(p)
    common.add_tissue_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.cohort import slide_items
    from hsafast.cohort.tasks import TissueTask

    task = TissueTask(common.tissue_config(args), common.pixel_size(args))
    items = slide_items(args.inputs, recursive=args.recursive)
    return common.run_task(args, task, items, "slide", "masked")
