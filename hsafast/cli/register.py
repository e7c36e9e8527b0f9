"""``hsafast register HE IHC --out DIR`` or ``hsafast register MANIFEST ... --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "register",
        "register IHC sections to their H&E neighbours",
        "Per pair: ID.json (transform, quality and verdict), ID.field.npz (displacement\n"
        "field, when kept) and with --overlay ID.overlay.png. A failed verdict is written\n"
        "too and counted as a failure. IDs: <case_id>.<marker> from a manifest, else both\n"
        "file names plus a hash of their paths (each H&E/IHC pair apart).",
        """
hsafast register he.svs ki67.svs --out reg/ --overlay
hsafast register cohort.csv --out reg/ --workers 2 --affine-only
hsafast register cohort.csv --out reg/ --config registration.json --executor ray
""",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="two slides (H&E, then IHC), or cohort manifests (CSV)",
    )
    common.add_run_options(p)
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON of RegistrationConfig fields",
    )
    p.add_argument("--affine-only", action="store_true", help="skip the non-rigid stage")
    p.add_argument("--overlay", action="store_true", help="also write ID.overlay.png")
    common.add_pixel_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.cohort import pair_items
    from hsafast.cohort.tasks import RegisterTask, registration_config

    changes = {"nonrigid": False} if args.affine_only else {}
    task = RegisterTask(
        registration_config(args.config, **changes),
        overlay=args.overlay,
        pixel=common.pixel_size(args),
    )
    return common.run_task(args, task, pair_items(args.inputs), "pair", "registered")
