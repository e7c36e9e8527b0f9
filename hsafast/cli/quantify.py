"""``hsafast quantify INPUT ... --out DIR``: IHC stain statistics and slide labels."""

from __future__ import annotations

import argparse

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "quantify",
        "per-tile DAB statistics and slide labels of IHC slides",
        "Per IHC slide: ID.stain.csv (or .stain.h5), one row per tissue tile with its\n"
        "level-0 x, y, and ID.label.json with the slide's class and binary label. From a\n"
        "manifest, each case's IHC slide is read with the case's marker unless --marker.\n"
        "A slide that cannot be labelled (no DAB, mixed stains, a non-nuclear pattern, too\n"
        "few cells) gets label null and the reason in its label.json.",
        """
hsafast quantify ihc/ --marker ki67 --out stain/
hsafast quantify ihc/ --marker p53 --out stain/ --overlay
hsafast quantify cohort.csv --out stain/ --format h5 --workers 2
hsafast quantify ihc/ --marker ttf1 --markers my_markers.toml --out stain/
""",
    )
    common.add_inputs(p, "IHC slide files, folders or manifests")
    common.add_run_options(p)
    p.add_argument(
        "--marker", default=None, help="marker of every slide (ki67, p53, pdl1 or from --markers)"
    )
    p.add_argument(
        "--markers", default=None, metavar="FILE", help="TOML or JSON file defining more markers"
    )
    common.add_tile_options(p)
    p.add_argument("--format", choices=("csv", "h5"), default="csv", help="per-tile table format")
    p.add_argument(
        "--overlay",
        action="store_true",
        help="also write ID.overlay.png: positive and negative nuclei drawn on the IHC",
    )
    common.add_pixel_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.cohort import slide_items
    from hsafast.cohort.tasks import QuantifyTask
    from hsafast.stain.markers import load_markers

    task = QuantifyTask(
        marker=args.marker,
        markers=load_markers(args.markers) if args.markers else {},
        target_mpp=args.target_mpp or 0.5,
        tile_size=args.tile_size,
        format=args.format,
        overlay=args.overlay,
        pixel=common.pixel_size(args),
    )
    items = slide_items(args.inputs, recursive=args.recursive, stains=("ihc",))
    return common.run_task(args, task, items, "slide", "quantified")
