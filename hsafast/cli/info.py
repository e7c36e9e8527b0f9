"""``hsafast info [SLIDE ...]``: the installation, or what a slide holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="installation info, or slide metadata")
    p.add_argument("inputs", nargs="*", help="slide files, folders or cohort manifests")
    p.add_argument("--backend", default="auto", help="reader backend (default: auto)")
    p.add_argument("--mpp", type=float, default=None, help="pixel size override (um/px)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def slide_summary(path: Path, backend: str = "auto", mpp: float | None = None) -> dict[str, Any]:
    from hsafast.errors import MissingPixelSizeError
    from hsafast.slides import open_slide

    with open_slide(path, backend=backend, mpp=mpp) as slide:
        try:
            pixel_size: float | None = slide.mpp
        except MissingPixelSizeError:
            pixel_size = None
        return {
            "path": str(path),
            "backend": slide.backend_name,
            "dimensions": slide.dimensions,
            "levels": slide.level_count,
            "level_dimensions": slide.level_dimensions,
            "level_downsamples": [round(d, 4) for d in slide.level_downsamples],
            "mpp": pixel_size,
            "objective_power": slide.objective_power,
            "associated_images": list(slide.associated_image_names),
        }


def run(args: argparse.Namespace) -> int:
    from hsafast.cli.batch import collect_slides, run_batch
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

    def show(path: Path) -> None:
        summary = slide_summary(path, args.backend, args.mpp)
        if args.json:
            print(json.dumps(summary))
        else:
            mpp = f"{summary['mpp']:.4f} um/px" if summary["mpp"] else "no pixel size"
            dims = " ".join(f"{w}x{h}" for w, h in summary["level_dimensions"])
            print(
                f"{path}: {summary['backend']}, {mpp}, objective {summary['objective_power']}, "
                f"levels {dims}, associated {summary['associated_images']}"
            )

    report = run_batch(collect_slides(args.inputs), show, what="slides described")
    return report.exit_code
