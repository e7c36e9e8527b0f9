"""``hsafast embed SLIDE ... --encoder NAME --out DIR``: tile features, one HDF5 file per slide.

Each ``ID.h5`` is a FeatureFile: ``features`` (N x D), ``coords`` and the tiles' geometry,
with the encoder's name and weight hash. Tiles come from ``--coords DIR`` (``hsafast tile``,
TRIDENT or CLAM files named ``ID.h5``) or from tissue detection at ``--target-mpp`` and
``--size``. For a cohort manifest, H&E and IHC slides are marked with their stain. A slide
whose file exists with features of the same encoder and weights is skipped unless
``--overwrite``; one made with another encoder is an error for that slide.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hsafast.cli.common import add_pixel_options, add_tissue_options, tissue_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="encode tissue tiles: features HDF5 per slide")
    p.add_argument("inputs", nargs="+", help="slide files, folders or cohort manifests")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--encoder", default="hsafast-cnn-s", help="tile encoder (default: hsafast-cnn-s)"
    )
    p.add_argument("--weights", type=Path, default=None, help="encoder weights file (local)")
    p.add_argument(
        "--coords", type=Path, default=None, help="folder of coordinates files ID.h5 to encode"
    )
    p.add_argument(
        "--target-mpp", type=float, default=0.5, help="tile pixel size in um (default: 0.5)"
    )
    p.add_argument("--size", type=int, default=256, help="tile size in pixels (default: 256)")
    p.add_argument(
        "--min-tissue", type=float, default=0.25, help="least tissue fraction kept (default: 0.25)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="tiles per batch (default: 64)")
    p.add_argument(
        "--reader-threads", type=int, default=None, help="tile reader threads (default: all cores)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="(default: fp32)"
    )
    add_pixel_options(p)
    add_tissue_options(p)
    p.add_argument("--overwrite", action="store_true", help="redo slides already done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsafast._fileio import safe_id
    from hsafast.cohort import slide_items
    from hsafast.embedding import EmbedConfig, embed_slide
    from hsafast.encoders import create_encoder
    from hsafast.errors import FeatureFileError, HsafastError
    from hsafast.features import read_feature_file

    tissue = tissue_config(args)
    config = EmbedConfig(
        target_mpp=args.target_mpp,
        tile_size=args.size,
        min_tissue=args.min_tissue,
        batch_size=args.batch_size,
        workers=args.reader_threads,
        device=args.device,
        precision=args.precision,
    )
    encoder = create_encoder(args.encoder, weights=args.weights)
    out_dir: Path = args.out
    stains = _manifest_stains(args.inputs)
    encoded = {"tiles": 0, "seconds": 0.0}

    def step(path: Path) -> bool:
        slide_id = safe_id(path.stem)
        target = out_dir / f"{slide_id}.h5"
        if target.exists() and not args.overwrite:
            done = read_feature_file(target)
            if (done.encoder, done.encoder_hash) != (encoder.name, encoder.weights_hash):
                raise FeatureFileError(
                    f"exists with features of encoder {done.encoder!r} "
                    f"({done.encoder_hash[:12] or 'no hash'}); --overwrite replaces it",
                    target,
                )
            return False
        tiles = None
        if args.coords is not None:
            tiles = read_feature_file(args.coords / f"{slide_id}.h5")
        start = time.perf_counter()
        features = embed_slide(
            path,
            encoder,
            tiles,
            config,
            tissue=tissue,
            slide_id=slide_id,
            stain=stains.get(path.resolve(), ""),
            slide_mpp=args.slide_mpp,
        )
        encoded["seconds"] += time.perf_counter() - start
        encoded["tiles"] += len(features)
        features.write(target)
        return True

    out_dir.mkdir(parents=True, exist_ok=True)
    done = skipped = 0
    failed = []
    for item in slide_items(args.inputs):
        try:
            if step(item.path):
                done += 1
            else:
                skipped += 1
        except HsafastError as exc:
            failed.append(item.path)
            print(f"error: {item.path}: {exc.reason}", file=sys.stderr)
    print(f"hsafast embed: {done} slides embedded, {skipped} already done, {len(failed)} failed")
    if encoded["tiles"]:
        rate = encoded["tiles"] / max(encoded["seconds"], 1e-9)
        print(
            f"hsafast: {encoded['tiles']} tiles encoded by {encoder.name} "
            f"(weights {encoder.weights_hash[:12]}) at {rate:.0f} tiles/s"
        )
    return 1 if failed else 0


def _manifest_stains(inputs: list[str]) -> dict[Path, str]:
    """'he' or 'ihc' for every slide named by a cohort manifest among the inputs."""
    from hsafast.manifest import is_manifest, read_manifest

    stains: dict[Path, str] = {}
    for item in inputs:
        path = Path(item)
        if is_manifest(path):
            for case in read_manifest(path).cases:
                stains[case.he_path.resolve()] = "he"
                stains[case.ihc_path.resolve()] = "ihc"
    return stains
