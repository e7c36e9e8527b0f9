"""Tile reading throughput: hsafast.read_tiles against its peers, side by side.

    python -m bench read                 # CMU-1 SVS + generated 20k x 20k JPEG TIFF
    python -m bench read --size 40000    # the 40k x 40k slide (generated once, cached)
    python -m bench read --quick         # small inputs, a few seconds

Peers, all on the same tiles of the same files, in one process:
  - OpenSlide ``read_region`` in a Python loop (1 thread) and from N threads;
  - cuCIM's batched ``read_region`` (CPU) with N workers, when cucim imports;
  - raw libjpeg-turbo decoding of the same tile bytes already in memory
    (imagecodecs ``jpeg8_decode``), 1 thread and N threads: the decoder's ceiling.
Then a target twice as coarse as level 0 (512-px reads shrunk to 256): full
decoding + area resize against decoding at 1/2 scale in the DCT domain.
Each case runs once to warm up, then the cases run in turns (round robin) for
``--repeats`` rounds, so that load from other processes hits all of them alike;
figures are the medians.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench._common import Table

VERSIONS = [
    "openslide-python",
    "openslide-bin",
    "tifffile",
    "imagecodecs",
    "cucim-cu13",
    "opencv-python-headless",
]


class Cases:
    """Benchmark cases of one input, timed in interleaved rounds."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.cases: list[tuple[str, int, int, Callable[[], object]]] = []

    def add(self, method: str, workers: int, count: int, fn: Callable[[], object]) -> None:
        self.cases.append((method, workers, count, fn))

    def run(self, table: Table, repeats: int) -> None:
        times: list[list[float]] = [[] for _ in self.cases]
        cpu: list[list[float]] = [[] for _ in self.cases]
        for _, _, _, fn in self.cases:
            fn()  # warm-up: page cache, thread pools, decoder tables
        for _ in range(repeats):
            for k, (_, _, _, fn) in enumerate(self.cases):
                c0, t0 = _cpu_seconds(), time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(_cpu_seconds() - c0)
        base = None
        for (method, workers, count, _), ts, cs in zip(self.cases, times, cpu, strict=True):
            seconds, cpu_s = float(np.median(ts)), float(np.median(cs))
            rate = count / seconds
            base = base or rate  # the first case is the reference (OpenSlide loop)
            table.add(
                self.label, method, workers, count, round(seconds, 3), round(rate, 1),
                round(rate / base, 2), round(count / max(cpu_s, 1e-9), 1),
                round(cpu_s / seconds, 2),
            )  # fmt: skip
            print(
                f"  {method:<46} {workers:>2}  {rate:10,.0f} tiles/s  "
                f"{count / max(cpu_s, 1e-9):10,.0f} tiles/CPU-s",
                file=sys.stderr,
            )


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tissue_grid(slide: object, tile: int, limit: int) -> np.ndarray:
    """Level-0 corners of ``tile``-px tiles that are mostly tissue (saturation on a thumbnail)."""
    import cv2

    thumb, ds = slide.thumbnail(1024)  # type: ignore[attr-defined]
    sat = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[..., 1] > 25
    width, height = slide.dimensions  # type: ignore[attr-defined]
    coords = []
    for y in range(0, height - tile + 1, tile):
        for x in range(0, width - tile + 1, tile):
            x0, y0 = int(x / ds), int(y / ds)
            x1, y1 = max(x0 + 1, int((x + tile) / ds)), max(y0 + 1, int((y + tile) / ds))
            if sat[y0:y1, x0:x1].mean() > 0.5:
                coords.append((x, y))
    return np.asarray(coords[:limit], dtype=np.int64).reshape(-1, 2)


def make_grid(path: Path, coords: np.ndarray, read_size: int, size: int, mpp: float) -> object:
    from hsafast.tiling import TileGrid

    return TileGrid(
        slide_path=path,
        coords=coords,
        tissue_fraction=np.ones(len(coords)),
        level=0,
        read_size=read_size,
        size=size,
        patch_size_level0=read_size,
        target_mpp=mpp * read_size / size,
    )


def tile_bytes(slide: object, coords: np.ndarray, tile: int) -> list[bytes]:
    """The compressed bytes (JPEGTables spliced in) of the file tiles under ``coords``."""
    level = slide._levels[0]  # type: ignore[attr-defined]
    tables = level.jpegtables
    out = []
    for x, y in coords.tolist():
        t = (y // level.tile_height) * level.tiles_across + x // level.tile_width
        data = os.pread(level.fd, int(level.bytecounts[t]), int(level.offsets[t]))
        if tables:  # tables without EOI + tile without SOI
            data = tables[:-2] + data[2:]
        out.append(data)
    return out


def run_input(
    table: Table,
    name: str,
    path: Path,
    tile: int,
    limit: int,
    workers: int,
    repeats: int,
    coarse: bool,
    min_tiles: int = 0,
) -> None:
    import imagecodecs
    import openslide

    import hsafast
    from hsafast import read_tiles

    slide = hsafast.open_slide(path)
    rgb_jpeg = slide._pages[0].photometric == 2  # type: ignore[attr-defined]
    coords = tissue_grid(slide, tile, limit)
    if len(coords) < min_tiles:  # small slide: read its tiles several times per run
        coords = np.tile(coords, (-(-min_tiles // max(1, len(coords))), 1))
    n = len(coords)
    grid = make_grid(path, coords, tile, tile, slide.mpp)
    osr = openslide.OpenSlide(str(path))
    print(f"{name}: {n} tissue tiles of {tile} px, {workers} workers", file=sys.stderr)
    locs = [(int(x), int(y)) for x, y in coords]
    cases = Cases(name)

    def openslide_loop() -> None:
        for loc in locs:
            np.asarray(osr.read_region(loc, 0, (tile, tile)))

    def openslide_threads() -> None:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(lambda loc: np.asarray(osr.read_region(loc, 0, (tile, tile))), locs):
                pass

    cases.add("OpenSlide read_region loop", 1, n, openslide_loop)
    if workers > 1:
        cases.add("OpenSlide read_region threads", workers, n, openslide_threads)

    if _cucim_available():
        from cucim import CuImage

        img = CuImage(str(path))
        for w in sorted({1, workers}):

            def cucim_batched(w: int = w) -> None:
                for batch in img.read_region(locs, (tile, tile), 0, num_workers=w, batch_size=64):
                    np.asarray(batch)

            cases.add("cuCIM read_region batched (CPU)", w, n, cucim_batched)

    raws = tile_bytes(slide, coords, tile)
    colorspace = "RGB" if rgb_jpeg else None

    def dec(data: bytes) -> np.ndarray:
        return imagecodecs.jpeg8_decode(data, colorspace=colorspace)

    for w in sorted({1, workers}):

        def raw(w: int = w) -> None:
            if w == 1:
                for data in raws:
                    dec(data)
            else:
                with ThreadPoolExecutor(w) as pool:
                    for _ in pool.map(dec, raws, chunksize=16):
                        pass

        cases.add("raw decode of the tile bytes (imagecodecs)", w, n, raw)

    for w in sorted({1, workers}):

        def ours(w: int = w) -> None:
            for _ in read_tiles(slide, grid, batch_size=64, workers=w):
                pass

        cases.add("hsafast read_tiles", w, n, ours)
    cases.run(table, repeats)
    if coarse:
        run_coarse(table, name, path, slide, osr, workers, repeats, tile, limit)
    osr.close()
    slide.close()


def run_coarse(
    table: Table,
    name: str,
    path: Path,
    slide: object,
    osr: object,
    workers: int,
    repeats: int,
    tile: int,
    limit: int,
) -> None:
    """A target twice as coarse as level 0: 2*tile reads shrunk to tile."""
    import cv2

    from hsafast import read_tiles

    coords = tissue_grid(slide, 2 * tile, max(1, limit // 4))
    n = len(coords)
    grid = make_grid(path, coords, 2 * tile, tile, slide.mpp)  # type: ignore[attr-defined]
    label = f"{name} @ 2x coarser"
    print(f"{label}: {n} tiles of {2 * tile} -> {tile} px", file=sys.stderr)
    locs = [(int(x), int(y)) for x, y in coords]
    cases = Cases(label)

    def openslide_resize() -> None:
        for loc in locs:
            region = np.asarray(osr.read_region(loc, 0, (2 * tile, 2 * tile)))  # type: ignore[attr-defined]
            cv2.resize(region[..., :3], (tile, tile), interpolation=cv2.INTER_AREA)

    cases.add("OpenSlide read_region + area resize loop", 1, n, openslide_resize)
    for w in sorted({1, workers}):

        def full_decode(w: int = w) -> None:
            for _ in read_tiles(slide, grid, batch_size=64, workers=w, scaled_decode=False):
                pass

        def dct_decode(w: int = w) -> None:
            for _ in read_tiles(slide, grid, batch_size=64, workers=w, scaled_decode=True):
                pass

        cases.add("hsafast read_tiles, full decode + area resize", w, n, full_decode)
        cases.add("hsafast read_tiles, DCT-domain 1/2 decode", w, n, dct_decode)
    cases.run(table, repeats)
    rates = {(r[1], r[2]): r[5] for r in table.rows if r[0] == label}
    for w in sorted({1, workers}):
        gain = (
            rates[("hsafast read_tiles, DCT-domain 1/2 decode", w)]
            / rates[("hsafast read_tiles, full decode + area resize", w)]
        )
        table.notes[f"DCT-scaled gain over full decode + resize, {w} worker(s)"] = round(gain, 2)
    a = next(read_tiles(slide, grid, batch_size=64, workers=1, scaled_decode=True)).tiles
    b = next(read_tiles(slide, grid, batch_size=64, workers=1, scaled_decode=False)).tiles
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    table.notes["DCT-scaled vs full decode + area resize, pixel difference"] = {
        "mean": round(float(diff.mean()), 3),
        "p99": float(np.percentile(diff, 99)),
        "max": int(diff.max()),
    }


def save_figure(table: Table, label: str, path: Path) -> Path:
    """A small bar chart (PIL, no plotting library) of one input's rows: tiles/s and per CPU-s."""
    from PIL import Image, ImageDraw

    rows = [r for r in table.rows if r[0] == label]
    width, bar_h, left = 900, 22, 360
    img = Image.new("RGB", (width, 40 + len(rows) * (bar_h + 8) + 30), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), f"{label}: tiles/s (dark) and tiles per CPU-second (light)", fill="black")
    top = max(max(r[5], r[7]) for r in rows)
    for i, r in enumerate(rows):
        y = 40 + i * (bar_h + 8)
        ours = r[1].startswith("hsafast")
        draw.text((10, y + 5), f"{r[1][:44]} ({r[2]})", fill="black")
        scale = (width - left - 80) / top
        draw.rectangle(
            [left, y, left + r[7] * scale, y + bar_h], fill="#f4b6c2" if ours else "#c8c8e8"
        )
        draw.rectangle([left, y + 5, left + r[5] * scale, y + bar_h - 5],
                       fill="#b0306a" if ours else "#4a4a9a")  # fmt: skip
        draw.text((left + max(r[5], r[7]) * scale + 6, y + 5), f"{r[5]:,.0f}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return path


def _cucim_available() -> bool:
    try:
        import cucim  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench read", description=__doc__)
    parser.add_argument("--size", type=int, default=20000, help="generated slide edge (px)")
    parser.add_argument("--tiles", type=int, default=1500, help="tiles per input (max)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8k slide, 400 tiles, 1 repeat")
    parser.add_argument(
        "--figure", type=Path, help="save a bar chart of the generated slide's rows"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.tiles, args.repeats = 8000, 400, 1

    from bench._synthetic_slide import synthetic_slide
    from hsafast.data import sample_slide_path
    from hsafast.slides.tiled_level import native_jpeg_version

    table = Table(
        "read",
        [
            "input",
            "method",
            "workers",
            "tiles",
            "median s",
            "tiles/s",
            "x OpenSlide loop",
            "tiles/CPU-s",
            "CPUs busy",
        ],
    )
    table.notes["native decoder"] = native_jpeg_version() or "not built (imagecodecs fallback)"
    table.notes["workers"] = args.workers
    start = time.perf_counter()
    run_input(
        table,
        "CMU-1 SVS (240-px Q30 tiles)",
        sample_slide_path(),
        240,
        args.tiles,
        args.workers,
        args.repeats,
        coarse=False,
        min_tiles=min(args.tiles, 600),
    )
    synthetic = synthetic_slide(args.size)
    run_input(
        table,
        f"generated {args.size}x{args.size} JPEG TIFF (256-px Q90)",
        synthetic,
        256,
        args.tiles,
        args.workers,
        args.repeats,
        coarse=True,
    )
    table.notes["wall seconds"] = round(time.perf_counter() - start, 1)
    if args.figure:
        label = f"generated {args.size}x{args.size} JPEG TIFF (256-px Q90)"
        print(f"figure: {save_figure(table, label, args.figure)}", file=sys.stderr)
    print()
    table.print()
    for key, value in table.notes.items():
        print(f"{key}: {value}")
    print(f"saved {table.save(VERSIONS)}")
    return 0
