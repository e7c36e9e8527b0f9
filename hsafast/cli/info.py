"""``hsafast info [INPUT ...]``: the installation, or what each slide holds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsafast.cli import common

if TYPE_CHECKING:
    from hsafast.cohort.pixels import PixelSize


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = common.add_command(
        sub,
        "info",
        "installation info, or slide metadata",
        "Without inputs: version, compiled features and optional backends. With slides:\n"
        "levels, pixel size (and where it came from), magnification, associated images.",
        """
hsafast info
hsafast info slide.svs --json
hsafast info slides/ --recursive --slide-mpp 0.25
""",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="slide files, folders or manifests")
    p.add_argument("--recursive", action="store_true", help="search folders' subfolders too")
    p.add_argument("--backend", default="auto", help="reader backend")
    common.add_pixel_options(p)
    p.add_argument("--json", action="store_true", help="print JSON (one object per slide)")
    p.set_defaults(func=run)


def slide_summary(path: Path, pixel: PixelSize, backend: str = "auto") -> dict[str, Any]:
    from hsafast.cohort.pixels import open_item_slide
    from hsafast.cohort.task import ItemContext

    ctx = ItemContext(path.parent, {}, pixel.fallbacks())
    with open_item_slide(path, pixel, ctx, backend) as slide:
        source = ctx.facts["pixel_size"][str(path)]["source"]
        return {
            "path": str(path),
            "backend": slide.backend_name,
            "dimensions": slide.dimensions,
            "levels": slide.level_count,
            "level_dimensions": slide.level_dimensions,
            "level_downsamples": [round(d, 4) for d in slide.level_downsamples],
            "mpp": slide.mpp,
            "mpp_source": source,
            "objective_power": slide.objective_power,
            "associated_images": list(slide.associated_image_names),
        }


def run(args: argparse.Namespace) -> int:
    from hsafast.cohort import slide_items
    from hsafast.errors import HsafastError
    from hsafast.info import installation_info

    if not args.inputs:
        info = installation_info()
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"hsafast {info['version']} (python {info['python']}, {info['platform']})")
        build = info["build"]
        print("native core: " + ", ".join(f"{k}={v}" for k, v in build.items()))
        print("optional backends:")
        for name, ok in info["optional"].items():
            print(f"  {'yes' if ok else 'no ':3}  {name}")
        return 0

    pixel = common.pixel_size(args)
    failed = 0
    for item in slide_items(args.inputs, recursive=args.recursive):
        try:
            summary = slide_summary(item.path, pixel, args.backend)
        except HsafastError as exc:
            failed += 1
            print(f"error: {item.path}: {common.speak_cli(exc.reason)}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(summary))
        else:
            source = {"file": "", "slide_mpp": " (--slide-mpp)", "forced": " (forced)"}
            mpp = f"{summary['mpp']:.4f} um/px{source[summary['mpp_source']]}"
            dims = " ".join(f"{w}x{h}" for w, h in summary["level_dimensions"])
            extra = ", ".join(summary["associated_images"]) or "none"
            print(
                f"{item.path}: {summary['backend']}, {mpp}, "
                f"objective {summary['objective_power']}, levels {dims}, associated images: {extra}"
            )
    return 1 if failed else 0
