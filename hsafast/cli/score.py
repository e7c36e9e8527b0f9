"""``hsafast score SLIDE ... --bundle DIR --out DIR``: predictions, heatmaps and a cohort table.

Per slide (named by its manifest case_id or sanitised file stem): ``ID.json`` (the
SlideResult: class probabilities per marker, per-tile attention and positivity, coordinates)
and ``heatmaps/ID.MARKER.*`` (QuPath GeoJSON tiles, PNG overlays); for the run:
``results.parquet`` and ``results.csv`` (one row per slide and marker) and ``failures.csv``.
Slides whose JSON exists are skipped unless ``--overwrite``. Inputs may be slide files,
folders, cohort manifests (their H&E slides) or FeatureFiles (.h5, scored without the encoder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hsafast.cli.common import add_pixel_options, add_tissue_options, tissue_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score H&E slides with a model bundle")
    p.add_argument("inputs", nargs="+", help="slide files, folders, cohort manifests or .h5 files")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--engine",
        choices=["auto", "torch", "onnxruntime", "tensorrt"],
        default="auto",
        help="inference engine (default: auto, the fastest installed; the log says why)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: auto)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per engine call (default: 64 CPU, 256 GPU)",
    )
    p.add_argument("--workers", type=int, default=None, help="tile-decoding threads (default: all)")
    p.add_argument(
        "--min-tissue", type=float, default=0.25, help="least tissue fraction kept (default: 0.25)"
    )
    p.add_argument(
        "--encoder-weights", type=Path, default=None, help="weights file of a registered encoder"
    )
    p.add_argument("--no-heatmaps", action="store_true", help="write no GeoJSON or PNG heatmaps")
    add_pixel_options(p)
    add_tissue_options(p)
    p.add_argument("--overwrite", action="store_true", help="redo slides already done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.scoring import Scorer, ScoringOptions

    options = ScoringOptions(
        batch_size=args.batch_size,
        min_tissue=args.min_tissue,
        workers=args.workers,
        slide_mpp=args.slide_mpp,
    )
    scorer = Scorer(
        args.bundle,
        args.engine,
        args.device,
        options=options,
        tissue=tissue_config(args),
        encoder_weights=args.encoder_weights,
    )
    report = scorer.score_many(
        args.inputs, args.out, heatmaps=not args.no_heatmaps, overwrite=args.overwrite
    )
    print(f"stages: {scorer.stage_summary()}")
    print(report.summary())
    return report.exit_code
