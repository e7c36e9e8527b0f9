"""Tile reading throughput: hsafast.read_tiles against its peers, side by side.

    python -m bench read                 # CMU-1 SVS + generated 20k x 20k JPEG TIFF
    python -m bench read --size 40000    # the 40k x 40k slide (generated once, cached)
    python -m bench read --quick         # small inputs, one round

Peers, all on the same regions of the same files, in one process:
  - OpenSlide ``read_region`` in a loop (1 thread) and from N threads;
  - cuCIM's batched ``read_region`` (CPU) with 1 and N workers, when cucim imports;
  - raw libjpeg-turbo decoding of the same file tiles' bytes, already in memory
    (imagecodecs ``jpeg8_decode``), 1 and N threads: the decoder's ceiling, with no
    region assembly;
  - hsafast ``read_tiles`` with 1 and N workers.
Ratios are given against OpenSlide at the same thread count (its loop for 1 thread, its
N-thread pool for N) and, beside them, against the 1-thread OpenSlide loop.

Equal footing:
  - Two grids per input. *Aligned*: each region is one file tile (the best case for a
    tile-batched reader such as hsafast's). *Unaligned*: regions shifted by half a tile
    and spaced two tiles apart, so each covers four file tiles that no other region
    shares. In both, every method decodes exactly the same file tiles, each once per
    pass: no region shares a tile with another, and OpenSlide's tile cache is switched
    off (capacity 0) and cuCIM's is left off, so no reader serves a tile from memory.
  - An input with few tissue tiles (CMU-1) is read in several passes per timed call,
    each pass a separate call of each method over the unique regions, so that repeats
    are decoded again by every method alike (never merged within one hsafast call).
  - Every timed call runs on one worker thread (``bench._common.WorkerThread``), never
    the main thread; the 1-thread OpenSlide loop is also timed on the main thread, to show
    what that costs it.
  - The cases run once to warm up (page cache, thread pools), then in turns (round robin)
    for ``--repeats`` rounds, so that load from other processes hits all of them alike;
    figures are medians. Under load, the tiles per CPU-second column is the fair one.
Then a target twice as coarse as level 0 (512-px reads shrunk to 256, aligned): full
decoding + area resize against decoding at 1/2 scale in the DCT domain.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import Table, WorkerThread, cpu_seconds

VERSIONS = [
    "openslide-python",
    "openslide-bin",
    "tifffile",
    "imagecodecs",
    "cucim-cu13",
    "opencv-python-headless",
]

COLUMNS = [
    "input",
    "grid",
    "method",
    "workers",
    "regions",
    "file tiles decoded",
    "median s",
    "regions/s",
    "x OpenSlide, same threads",
    "x OpenSlide 1-thread loop",
    "regions/CPU-s",
    "CPUs busy",
]

OPENSLIDE_LOOP = "OpenSlide read_region loop"
OPENSLIDE_THREADS = "OpenSlide read_region threads"


@dataclass
class Case:
    method: str
    workers: int
    fn: Callable[[], object]
    main_thread: bool = False


class Cases:
    """Benchmark cases of one input and grid, timed in interleaved rounds."""

    def __init__(self, label: str, grid: str, regions: int, decodes: int) -> None:
        self.label, self.grid, self.regions, self.decodes = label, grid, regions, decodes
        self.cases: list[Case] = []

    def add(self, method: str, workers: int, fn: Callable[[], object], main: bool = False) -> None:
        self.cases.append(Case(method, workers, fn, main))

    def run(self, table: Table, repeats: int, runner: WorkerThread) -> None:
        def timed(case: Case) -> tuple[float, float]:
            call = case.fn if case.main_thread else lambda: runner.call(case.fn)
            c0, t0 = cpu_seconds(), time.perf_counter()
            call()
            return time.perf_counter() - t0, cpu_seconds() - c0

        for case in self.cases:
            timed(case)  # warm-up: page cache, thread pools, decoder tables
        samples: list[list[tuple[float, float]]] = [[] for _ in self.cases]
        for _ in range(repeats):
            for k, case in enumerate(self.cases):
                samples[k].append(timed(case))
        rates = {}
        for case, sample in zip(self.cases, samples, strict=True):
            wall = float(np.median([s[0] for s in sample]))
            cpu = float(np.median([s[1] for s in sample]))
            rates[(case.method, case.workers, case.main_thread)] = (wall, cpu)
        loop = self.regions / rates[(OPENSLIDE_LOOP, 1, False)][0]
        for case in self.cases:
            wall, cpu = rates[(case.method, case.workers, case.main_thread)]
            rate = self.regions / wall
            peer = OPENSLIDE_LOOP if case.workers == 1 else OPENSLIDE_THREADS
            same = self.regions / rates[(peer, case.workers, False)][0]
            method = case.method + (" (main thread)" if case.main_thread else "")
            table.add(
                self.label, self.grid, method, case.workers, self.regions, self.decodes,
                round(wall, 3), round(rate, 1), round(rate / same, 2), round(rate / loop, 2),
                round(self.regions / max(cpu, 1e-9), 1), round(cpu / wall, 2),
            )  # fmt: skip
            print(
                f"  {method:<50} {case.workers:>2}  {rate:9,.0f} regions/s  "
                f"{self.regions / max(cpu, 1e-9):9,.0f} /CPU-s  x{rate / same:.2f} same threads",
                file=sys.stderr,
            )


def grid_coords(slide: Any, size: int, offset: int, stride: int, limit: int) -> np.ndarray:
    """Level-0 corners offset + k * stride of size-px regions that are mostly tissue
    (saturation on a thumbnail), at most ``limit``."""
    import cv2

    thumb, ds = slide.thumbnail(1024)
    sat = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[..., 1] > 25
    width, height = slide.dimensions
    coords = []
    for y in range(offset, height - size + 1, stride):
        for x in range(offset, width - size + 1, stride):
            x0, y0 = int(x / ds), int(y / ds)
            x1, y1 = max(x0 + 1, int((x + size) / ds)), max(y0 + 1, int((y + size) / ds))
            if sat[y0:y1, x0:x1].mean() > 0.5:
                coords.append((x, y))
    return np.asarray(coords[:limit], dtype=np.int64).reshape(-1, 2)


def make_grid(path: Path, coords: np.ndarray, read_size: int, size: int, mpp: float) -> Any:
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


def file_tiles(slide: Any, coords: np.ndarray, size: int) -> list[int]:
    """Indices of the level-0 file tiles that the regions cover (with repeats, if shared)."""
    level = slide._levels[0]
    tw, th = level.tile_width, level.tile_height
    out = []
    for x, y in coords.tolist():
        for ty in range(y // th, (y + size - 1) // th + 1):
            for tx in range(x // tw, (x + size - 1) // tw + 1):
                out.append(ty * level.tiles_across + tx)
    return out


def tile_bytes(slide: Any, tiles: list[int]) -> list[bytes]:
    """The compressed bytes of file tiles, JPEGTables spliced in (as a decoder needs them)."""
    level = slide._levels[0]
    tables = level.jpegtables
    out = []
    for t in tiles:
        data = os.pread(level.fd, int(level.bytecounts[t]), int(level.offsets[t]))
        if tables:  # tables without EOI + tile without SOI
            data = tables[:-2] + data[2:]
        out.append(data)
    return out


def open_uncached(path: Path) -> Any:
    """OpenSlide with its tile cache off, so that it decodes every tile it is asked for."""
    import openslide

    osr = openslide.OpenSlide(str(path))
    osr.set_cache(openslide.OpenSlideCache(0))
    return osr


def run_grid(
    table: Table,
    runner: WorkerThread,
    label: str,
    path: Path,
    grid_name: str,
    coords: np.ndarray,
    size: int,
    passes: int,
    workers: int,
    repeats: int,
) -> None:
    import imagecodecs

    import hsafast
    from hsafast import read_tiles

    slide = hsafast.open_slide(path)
    tiles = file_tiles(slide, coords, size)
    if len(set(tiles)) != len(tiles):
        raise SystemExit(f"{label}: regions of the {grid_name} grid share file tiles")
    n = len(coords) * passes
    grid = make_grid(path, coords, size, size, slide.mpp)
    osr = open_uncached(path)
    locs = [(int(x), int(y)) for x, y in coords]
    print(
        f"{label}, {grid_name}: {len(coords)} regions x {passes} passes, "
        f"{len(tiles) * passes} file tiles decoded, {workers} workers",
        file=sys.stderr,
    )
    cases = Cases(label, grid_name, n, len(tiles) * passes)

    def openslide_loop() -> None:
        for _ in range(passes):
            for loc in locs:
                np.asarray(osr.read_region(loc, 0, (size, size)))

    def openslide_threads() -> None:
        with ThreadPoolExecutor(workers) as pool:
            for _ in range(passes):
                for _ in pool.map(
                    lambda loc: np.asarray(osr.read_region(loc, 0, (size, size))), locs
                ):
                    pass

    cases.add(OPENSLIDE_LOOP, 1, openslide_loop)
    cases.add(OPENSLIDE_LOOP, 1, openslide_loop, main=True)
    if workers > 1:
        cases.add(OPENSLIDE_THREADS, workers, openslide_threads)

    if _cucim_available():
        from cucim import CuImage

        img = CuImage(str(path))
        for w in sorted({1, workers}):

            def cucim_batched(w: int = w) -> None:
                for _ in range(passes):
                    for batch in img.read_region(
                        locs, (size, size), 0, num_workers=w, batch_size=64
                    ):
                        np.asarray(batch)

            cases.add("cuCIM read_region batched (CPU)", w, cucim_batched)

    raws = tile_bytes(slide, tiles)
    colorspace = "RGB" if slide._pages[0].photometric == 2 else None

    def dec(data: bytes) -> np.ndarray:
        return imagecodecs.jpeg8_decode(data, colorspace=colorspace)

    for w in sorted({1, workers}):

        def raw(w: int = w) -> None:
            for _ in range(passes):
                if w == 1:
                    for data in raws:
                        dec(data)
                else:
                    with ThreadPoolExecutor(w) as pool:
                        for _ in pool.map(dec, raws, chunksize=16):
                            pass

        cases.add("raw decode of the same file tiles (imagecodecs)", w, raw)

    for w in sorted({1, workers}):

        def ours(w: int = w) -> None:
            for _ in range(passes):
                for _ in read_tiles(slide, grid, batch_size=64, workers=w):
                    pass

        cases.add("hsafast read_tiles", w, ours)
    cases.run(table, repeats, runner)
    osr.close()
    slide.close()


def run_input(
    table: Table,
    runner: WorkerThread,
    label: str,
    path: Path,
    limit: int,
    workers: int,
    repeats: int,
    min_regions: int = 0,
) -> None:
    """The aligned and the unaligned grid of one input."""
    import hsafast

    with hsafast.open_slide(path) as slide:
        level = slide._levels[0]
        tile = int(level.tile_width)
        if level.tile_height != tile:
            raise SystemExit(f"{path}: non-square file tiles")
        aligned = grid_coords(slide, tile, 0, tile, limit)
        # each region covers four file tiles of its own: as many decodes as the aligned grid
        unaligned = grid_coords(slide, tile, tile // 2, 2 * tile, max(1, limit // 4))
    for name, coords in (
        (f"aligned ({tile}-px regions on the {tile}-px file tiles)", aligned),
        (f"unaligned (shifted {tile // 2} px, 4 file tiles per region)", unaligned),
    ):
        passes = max(1, -(-min_regions // max(1, len(coords))))
        run_grid(table, runner, label, path, name, coords, tile, passes, workers, repeats)


def run_coarse(
    table: Table,
    runner: WorkerThread,
    label: str,
    path: Path,
    workers: int,
    repeats: int,
    limit: int,
) -> None:
    """A target twice as coarse as level 0: aligned 2*tile reads shrunk to tile."""
    import cv2

    import hsafast
    from hsafast import read_tiles

    slide = hsafast.open_slide(path)
    tile = int(slide._levels[0].tile_width)
    coords = grid_coords(slide, 2 * tile, 0, 2 * tile, max(1, limit // 4))
    n = len(coords)
    grid = make_grid(path, coords, 2 * tile, tile, slide.mpp)
    osr = open_uncached(path)
    label = f"{label} @ 2x coarser"
    print(f"{label}: {n} regions of {2 * tile} -> {tile} px", file=sys.stderr)
    locs = [(int(x), int(y)) for x, y in coords]
    cases = Cases(label, f"aligned ({2 * tile}-px reads)", n, 4 * n)

    def shrink_region(loc: tuple[int, int]) -> np.ndarray:
        region = np.asarray(osr.read_region(loc, 0, (2 * tile, 2 * tile)))
        return cv2.resize(region[..., :3], (tile, tile), interpolation=cv2.INTER_AREA)

    def openslide_loop() -> None:
        for loc in locs:
            shrink_region(loc)

    def openslide_threads() -> None:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(shrink_region, locs):
                pass

    cases.add(OPENSLIDE_LOOP, 1, openslide_loop)
    if workers > 1:
        cases.add(OPENSLIDE_THREADS, workers, openslide_threads)
    full_label = "hsafast read_tiles, full decode + area resize"
    dct_label = "hsafast read_tiles, DCT-domain 1/2 decode"
    for w in sorted({1, workers}):

        def full_decode(w: int = w) -> None:
            for _ in read_tiles(slide, grid, batch_size=64, workers=w, scaled_decode=False):
                pass

        def dct_decode(w: int = w) -> None:
            for _ in read_tiles(slide, grid, batch_size=64, workers=w, scaled_decode=True):
                pass

        cases.add(full_label, w, full_decode)
        cases.add(dct_label, w, dct_decode)
    cases.run(table, repeats, runner)
    rates = {(r[2], r[3]): r[7] for r in table.rows if r[0] == label}
    for w in sorted({1, workers}):
        gain = rates[(dct_label, w)] / rates[(full_label, w)]
        table.notes[f"DCT-scaled gain over full decode + resize, {w} worker(s)"] = round(gain, 2)
    a = next(read_tiles(slide, grid, batch_size=64, workers=1, scaled_decode=True)).tiles
    b = next(read_tiles(slide, grid, batch_size=64, workers=1, scaled_decode=False)).tiles
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    table.notes["DCT-scaled vs full decode + area resize, pixel difference"] = {
        "mean": round(float(diff.mean()), 3),
        "p99": float(np.percentile(diff, 99)),
        "max": int(diff.max()),
    }
    osr.close()
    slide.close()


def save_figure(table: Table, label: str, path: Path) -> Path:
    """A small bar chart (PIL, no plotting library) of one input's rows: regions/s and per CPU-s."""
    from PIL import Image, ImageDraw

    rows = [r for r in table.rows if r[0] == label]
    width, bar_h, left = 1000, 22, 460
    img = Image.new("RGB", (width, 40 + len(rows) * (bar_h + 8) + 30), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), f"{label}: regions/s (dark) and per CPU-second (light)", fill="black")
    top = max(max(r[7], r[10]) for r in rows)
    for i, r in enumerate(rows):
        y = 40 + i * (bar_h + 8)
        ours = r[2].startswith("hsafast")
        draw.text((10, y + 5), f"{r[1].split()[0]}: {r[2][:48]} ({r[3]})", fill="black")
        scale = (width - left - 80) / top
        draw.rectangle(
            [left, y, left + r[10] * scale, y + bar_h], fill="#f4b6c2" if ours else "#c8c8e8"
        )
        draw.rectangle([left, y + 5, left + r[7] * scale, y + bar_h - 5],
                       fill="#b0306a" if ours else "#4a4a9a")  # fmt: skip
        draw.text((left + max(r[7], r[10]) * scale + 6, y + 5), f"{r[7]:,.0f}", fill="black")
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
    parser.add_argument("--tiles", type=int, default=1500, help="file tiles decoded per grid")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8k slide, 400 tiles, 1 repeat")
    parser.add_argument("--figure", type=Path, help="save a bar chart of the generated slide")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.tiles, args.repeats = 8000, 400, 1

    from bench._synthetic_slide import synthetic_slide
    from hsafast.data import sample_slide_path
    from hsafast.slides.tiled_level import native_jpeg_version

    table = Table("read", COLUMNS)
    table.notes["native decoder"] = native_jpeg_version() or "not built (imagecodecs fallback)"
    table.notes["workers"] = args.workers
    table.notes["OpenSlide tile cache"] = "off (capacity 0): every method decodes every tile"
    if _cucim_available():
        from cucim import CuImage

        table.notes["cuCIM"] = f"CPU reader, tile cache {CuImage.cache().type}"
    else:
        table.notes["cuCIM"] = "not installed"
    start = time.perf_counter()
    runner = WorkerThread()
    try:
        run_input(
            table, runner, "CMU-1 SVS (240-px Q30 tiles)", sample_slide_path(), args.tiles,
            args.workers, args.repeats, min_regions=min(args.tiles, 600),
        )  # fmt: skip
        generated = f"generated {args.size}x{args.size} JPEG TIFF (256-px Q90 tiles)"
        path = synthetic_slide(args.size)
        run_input(table, runner, generated, path, args.tiles, args.workers, args.repeats)
        run_coarse(table, runner, generated, path, args.workers, args.repeats, args.tiles)
    finally:
        runner.close()
    table.notes["wall seconds"] = round(time.perf_counter() - start, 1)
    if args.figure:
        print(f"figure: {save_figure(table, generated, args.figure)}", file=sys.stderr)
    print()
    table.print()
    for key, value in table.notes.items():
        print(f"{key}: {value}")
    print(f"saved {table.save(VERSIONS)}")
    return 0
