"""``hsafast embed INPUT ... --out DIR``: tile features, one FeatureFile (HDF5) per slide."""

from __future__ import annotations

import argparse

from hsafast.cli import common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "embed",
        "encode tissue tiles: features HDF5 per slide",
        "Per slide ID.h5, a FeatureFile: 'features' (N x D), 'coords' (level-0 x, y) and the\n"
        "tiles' geometry, with the encoder's name and weight hash and the slide's stain.\n"
        "Tiles come from --coords (files of hsafast tile, TRIDENT or CLAM) or from tissue\n"
        "detection at --target-mpp and --tile-size. A folder holds one encoder's features:\n"
        "other weights are refused unless --overwrite.",
        """
hsafast embed cohort.csv --out features/ --encoder hsafast-cnn-s
hsafast embed slides/ --out features/ --coords coords/ --workers 2
hsafast embed slides/ --out features/ --encoder uni --weights uni.safetensors --device cuda
""",
    )
    common.add_inputs(p)
    common.add_run_options(p)
    p.add_argument("--encoder", default="hsafast-cnn-s", help="tile encoder (hsafast info lists)")
    p.add_argument(
        "--weights", default=None, metavar="FILE", help="local weights file of the encoder"
    )
    p.add_argument(
        "--coords",
        default=None,
        metavar="DIR",
        help="folder of coordinates files (ID.h5 or <slide name>.h5) to encode",
    )
    common.add_tile_options(p)
    common.add_min_tissue(p)
    p.add_argument("--batch-size", type=common.positive_int, default=64, help="tiles per batch")
    common.add_reader_threads(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="bf16: autocast, faster on CPUs with AVX-512 BF16 or AMX; fp16: CUDA only",
    )
    common.add_pixel_options(p)
    common.add_tissue_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast.cohort import slide_items
    from hsafast.cohort.tasks import EmbedTask
    from hsafast.cohort.tasks.embed import with_coords
    from hsafast.embedding import EmbedConfig

    config = EmbedConfig(
        target_mpp=args.target_mpp or 0.5,
        tile_size=args.tile_size,
        min_tissue=args.min_tissue,
        batch_size=args.batch_size,
        workers=args.reader_threads,
        device=args.device,
        precision=args.precision,
    )
    task = EmbedTask.for_encoder(
        args.encoder,
        args.weights,
        config,
        tissue=common.tissue_config(args),
        pixel=common.pixel_size(args),
    )
    items = slide_items(args.inputs, recursive=args.recursive)
    if args.coords is not None:
        items = with_coords(items, args.coords)
    return common.run_task(args, task, items, "slide", "embedded")
