"""``hsafast demo [--out DIR]``: every stage built so far on bundled and simulated data."""

from __future__ import annotations

import argparse
from pathlib import Path

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "demo",
        "run every stage on the bundled slide and a simulated paired cohort",
        "The bundled real H&E slide (or --slide) through tissue detection, tiling and\n"
        "tile reading; a simulated paired cohort through stain-derived labels and\n"
        "registration, each scored against the simulator's truth.",
        """
hsafast demo --out hsafast-demo
hsafast demo --out demo2 --slide my_slide.svs --cases 3
""",
    )
    p.add_argument(
        "--out", type=Path, default=Path("hsafast-demo"), metavar="DIR", help="output folder"
    )
    p.add_argument("--cases", type=int, default=6, help="simulated cases")
    p.add_argument(
        "--slide-size", type=int, default=3072, metavar="PX", help="simulated slide side"
    )
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    p.add_argument(
        "--slide",
        type=Path,
        default=None,
        help="a real slide (that records its pixel size) instead of CMU-1",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.demo import check_slide, run_demo

    if args.slide is not None:
        check_slide(args.slide)  # before anything is written
    report = run_demo(
        args.out, cases=args.cases, slide_size=args.slide_size, seed=args.seed, slide=args.slide
    )
    real = report.real
    print(
        f"real slide {Path(real.slide).name}: {real.tissue_mm2} mm2 tissue, {real.tiles} tiles "
        f"at 0.5 um/px read at {real.tiles_per_second:,.0f} tiles/s"
    )
    print(f"{'case':10} {'marker':6} {'truth':17} {'derived':17} {'class':15} {'rTRE %':>7}")
    for c in report.cases:
        rtre = "-" if c.rtre_percent is None else f"{c.rtre_percent:.3f}"
        print(
            f"{c.case_id:10} {c.marker:6} {c.true_label:17} {c.derived_label or '-':17} "
            f"{c.derived_class or '-':15} {rtre:>7}"
        )
    print(
        f"hsafast demo: {len(report.cases)} simulated cases, label agreement "
        f"{report.label_accuracy:.0%}, median rTRE {report.median_rtre_percent:.3f}%, "
        f"{report.seconds:.1f} s; outputs in {report.out_dir}"
    )
    return 0
