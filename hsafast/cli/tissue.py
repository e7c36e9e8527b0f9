"""``hsafast tissue SLIDE ... --out DIR``: tissue masks, GeoJSON outlines and overlays.

Per slide (named by the sanitised file stem): ``ID.mask.png`` (255 on tissue,
one pixel per mask pixel), ``ID.geojson`` (polygons in level-0 pixels, QuPath
annotations classified "Tissue") and ``ID.overlay.png`` (thumbnail with the
outline). Slides whose three files exist are skipped unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hsafast.tissue import TissueConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tissue", help="detect tissue: mask PNG, GeoJSON outline, overlay")
    p.add_argument("inputs", nargs="+", help="slide files, folders or cohort manifests")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_tissue_options(p)
    p.add_argument("--overwrite", action="store_true", help="redo slides already done")
    p.set_defaults(func=run)


def add_tissue_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that detect tissue."""
    p.add_argument(
        "--slide-mpp",
        type=float,
        default=None,
        help="level-0 pixel size (um/px) for files without one",
    )
    p.add_argument(
        "--working-mpp", type=float, default=8.0, help="pixel size of the mask (default: 8 um/px)"
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="fixed OD threshold (default: automatic)"
    )
    p.add_argument(
        "--min-area-mm2", type=float, default=0.02, help="drop smaller pieces (default: 0.02)"
    )
    p.add_argument(
        "--keep-largest", type=int, default=None, help="keep only the K largest pieces of tissue"
    )


def tissue_config(args: argparse.Namespace) -> TissueConfig:
    from hsafast.tissue import TissueConfig

    return TissueConfig(
        mpp=args.working_mpp,
        threshold=args.threshold,
        min_area_mm2=args.min_area_mm2,
        keep_largest=args.keep_largest,
    )


def usage_error(message: str) -> int:
    """Report a bad command-line value before any slide is touched."""
    print(f"hsafast: error: {message}", file=sys.stderr)
    return 2


def outputs(out_dir: Path, slide: Path) -> dict[str, Path]:
    from hsafast._fileio import safe_id

    stem = safe_id(slide.stem)
    return {
        "mask": out_dir / f"{stem}.mask.png",
        "geojson": out_dir / f"{stem}.geojson",
        "overlay": out_dir / f"{stem}.overlay.png",
    }


def run(args: argparse.Namespace) -> int:
    from hsafast.cli.batch import collect_slides, run_batch
    from hsafast.errors import HsafastError
    from hsafast.slides import open_slide
    from hsafast.tissue import detect_tissue

    try:
        config = tissue_config(args)
    except HsafastError as exc:
        return usage_error(str(exc))
    out_dir: Path = args.out

    def step(path: Path) -> bool:
        files = outputs(out_dir, path)
        if not args.overwrite and all(f.exists() for f in files.values()):
            return False
        with open_slide(path, mpp=args.slide_mpp) as slide:
            mask = detect_tissue(slide, config)
        mask.to_png(files["mask"])
        mask.save_geojson(files["geojson"])
        mask.save_overlay(files["overlay"])
        return True

    out_dir.mkdir(parents=True, exist_ok=True)
    report = run_batch(collect_slides(args.inputs), step, what="slides masked", out_dir=out_dir)
    return report.exit_code
