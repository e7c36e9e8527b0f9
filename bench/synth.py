"""Simulator throughput: ``python -m bench synth [--cases N] [--size PX] [--workers W]``.

Two measurements:

1. A whole cohort (``make_cohort``): cases/s, slide megapixels/s and MB/s written.
   The target is 24 cases of 8k x 8k pairs (``--cases 24 --size 8192``) in about
   two minutes on 2 cores; the quick default is 6 cases of 4k x 4k.
2. One slide side by side, in this process, single-threaded: rendering + writing the
   pyramidal JPEG TIFF, against only writing the same (pre-rendered) pixels with the
   same writer. The ratio says how much the simulation costs on top of the I/O floor.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import Table, median_seconds


def _one_slide(size: int, repeats: int) -> tuple[float, float]:
    import cv2

    from hsafast.synth.cohort import plan_cases
    from hsafast.synth.model import build_case
    from hsafast.synth.render import SlideRenderer
    from hsafast.synth.textures import texture_bank
    from hsafast.synth.tiffwrite import write_pyramid

    cv2.setNumThreads(1)
    spec = plan_cases(1, ("ki67",), (size, size), 0.8, seed=0)[0]
    model = build_case(spec)
    texture_bank(round(1 / spec.mpp, 3))
    renderer = SlideRenderer(model, "ihc")
    pixels = np.empty((size, size, 3), np.uint8)
    for y in range(0, size, 512):
        for x in range(0, size, 1000):
            pixels[y : y + 512, x : x + 1000] = renderer.render_block(
                x, y, min(1000, size - x), min(512, size - y)
            )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "slide.tif"

        def simulate() -> None:
            r = SlideRenderer(build_case(spec), "ihc")
            write_pyramid(out, size, size, r.render_block, mpp=spec.mpp, quality=85)

        def write_only() -> None:
            write_pyramid(
                out,
                size,
                size,
                lambda x, y, w, h: pixels[y : y + h, x : x + w],
                mpp=spec.mpp,
                quality=85,
            )

        t_sim = median_seconds(simulate, repeats=repeats, warmup=1)
        t_write = median_seconds(write_only, repeats=repeats, warmup=1)
    return t_sim, t_write


def main(argv: list[str]) -> int:
    from hsafast.synth import make_cohort

    parser = argparse.ArgumentParser(prog="python -m bench synth")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", default=None, help="write the cohort here and keep it")
    args = parser.parse_args(argv)

    t_sim, t_write = _one_slide(min(args.size, 4096), args.repeats)
    side = min(args.size, 4096)
    one = Table("synth_slide", ["what", "seconds", "Mpx/s", "ratio to write-only"])
    one.add("render + write (IHC slide)", t_sim, side * side / 1e6 / t_sim, t_sim / t_write)
    one.add("write-only, same pixels", t_write, side * side / 1e6 / t_write, 1.0)
    one.notes = {"size": side, "threads": 1}
    one.print()
    one.save(["tifffile", "imagecodecs", "opencv-python-headless"])

    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hsafast-synth-"))
    try:
        t0 = time.perf_counter()
        cohort = make_cohort(out, args.cases, slide_size=args.size, seed=0, workers=args.workers)
        seconds = time.perf_counter() - t0
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    mpx = 2 * args.cases * args.size * args.size / 1e6
    table = Table(
        "synth_cohort", ["cases", "size", "seconds", "cases/s", "slide Mpx/s", "MB/s", "MB"]
    )
    table.add(
        args.cases,
        args.size,
        seconds,
        args.cases / seconds,
        mpx / seconds,
        cohort.bytes_written / 1e6 / seconds,
        cohort.bytes_written / 1e6,
    )
    table.notes = {"workers": args.workers, "includes_process_start_and_textures": True}
    print()
    table.print()
    table.save(["tifffile", "imagecodecs", "opencv-python-headless"])
    return 0
