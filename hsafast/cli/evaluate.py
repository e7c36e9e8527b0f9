"""``hsafast evaluate RUN_DIR [--out DIR]``: the evaluation report of a training run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "evaluate",
        "metrics with bootstrap intervals, model comparisons, alignment and a report",
        "Writes report.md, report.html, summary.json and PNG figures into RUN_DIR/report\n"
        "(or --out): per marker and mode the metrics with bootstrap intervals, the paired\n"
        "comparison against --baseline, the linear probe and the H&E/IHC alignment.",
        """
hsafast evaluate runs/demo
hsafast evaluate runs/demo --out report/ --probe paper --resample cases
hsafast evaluate runs/demo --embedding-map pca --examples 0 --no-register
""",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory of hsafast train")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="report folder (default: RUN_DIR/report)",
    )
    p.add_argument(
        "--resamples", type=common.positive_int, default=1000, help="bootstrap resamples"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the probe")
    p.add_argument(
        "--resample",
        choices=("patients", "cases"),
        default="patients",
        help="unit of hsafast's bootstrap (the paper's protocol always resamples cases)",
    )
    p.add_argument(
        "--on-mismatch",
        choices=("error", "note"),
        default="error",
        help="cases without a label: stop, or leave them out and list them in the report",
    )
    p.add_argument("--baseline", default="classification-only", help="mode compared against")
    p.add_argument(
        "--probe",
        choices=("hsafast", "paper", "none"),
        default="hsafast",
        help="linear probe search: hsafast's grid by patient, the paper's exact search, or none",
    )
    p.add_argument(
        "--embedding-map", choices=("umap", "pca", "none"), default="umap", help="2-D map method"
    )
    p.add_argument(
        "--examples", type=int, default=3, metavar="N", help="patch-mode example figures"
    )
    p.add_argument(
        "--no-register",
        action="store_true",
        help="do not register slides for the example figures (maps drawn on white)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.evaluation import EvaluationConfig, ProbeConfig, ReportConfig, write_report

    t0 = time.perf_counter()
    probe = {"hsafast": ProbeConfig(seed=args.seed), "paper": ProbeConfig.paper(), "none": None}
    config = ReportConfig(
        evaluation=EvaluationConfig(
            n_resamples=args.resamples,
            seed=args.seed,
            resample=args.resample,
            on_mismatch=args.on_mismatch,
        ),
        probe=probe[args.probe],
        baseline=args.baseline,
        embedding_map=args.embedding_map,
        examples=args.examples,
        register_examples=not args.no_register,
    )
    with common.RichStatus() as status:
        report = write_report(args.run_dir, args.out, config=config, progress=status)
    markers = len(report.analysis.markers)
    print(
        f"hsafast evaluate: {markers} marker{'s' if markers != 1 else ''} evaluated in "
        f"{time.perf_counter() - t0:.1f} s -> {report.markdown} (with report.html, "
        f"summary.json and {len(report.figures)} figures)"
    )
    return 0
