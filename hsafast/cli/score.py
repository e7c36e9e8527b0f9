"""``hsafast score INPUT ... --bundle DIR --out DIR``: predictions, heatmaps, a cohort table."""

from __future__ import annotations

import argparse

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "score",
        "score H&E slides with a model bundle",
        "Per slide: ID.json (class probabilities per marker, per-tile attention and\n"
        "positivity, coordinates) and per marker ID.<marker>.geojson (QuPath tiles) with PNG\n"
        "overlays; for the run results.parquet and results.csv (one row per slide and\n"
        "marker). Inputs: slides, folders, manifests (their H&E slides) or FeatureFiles\n"
        "(.h5, scored without the encoder). A folder holds one bundle's results: another\n"
        "bundle or engine is refused unless --overwrite.",
        """
hsafast score slides/ --bundle runs/demo/models/patch/fold0 --out scores/
hsafast score cohort.csv --bundle B --out scores/ --engine onnxruntime --workers 2
hsafast score features/ --bundle B --out scores/ --no-heatmaps
""",
    )
    common.add_inputs(p, "slide files, folders, manifests or FeatureFiles (.h5)")
    common.add_run_options(p)
    p.add_argument("--bundle", required=True, metavar="DIR", help="model bundle folder")
    p.add_argument(
        "--engine",
        choices=["auto", "torch", "onnxruntime", "tensorrt"],
        default="auto",
        help="inference engine; auto: the fastest installed (-v says why)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N; auto: CUDA if present")
    p.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=None,
        help="tiles per engine call (default: 64 on a CPU, 256 on a GPU)",
    )
    common.add_reader_threads(p)
    common.add_min_tissue(p)
    p.add_argument(
        "--encoder-weights",
        default=None,
        metavar="FILE",
        help="weights file of the bundle's registered encoder (bundles that name it)",
    )
    p.add_argument("--no-heatmaps", action="store_true", help="write no GeoJSON or PNG heatmaps")
    common.add_pixel_options(p)
    common.add_tissue_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.cohort.tasks.score import ScoreTask, score_items
    from hsafast.scoring import Scorer, ScoringOptions

    pixel = common.pixel_size(args)
    items = score_items(args.inputs, recursive=args.recursive)
    options = ScoringOptions(
        batch_size=args.batch_size, min_tissue=args.min_tissue, workers=args.reader_threads
    )
    scorer = Scorer(
        args.bundle,
        args.engine,
        args.device,
        options=options,
        tissue=common.tissue_config(args),
        encoder_weights=args.encoder_weights,
    )
    task = ScoreTask.for_scorer(scorer, heatmaps=not args.no_heatmaps, pixel=pixel)
    return common.run_task(args, task, items, "slide", "scored")
