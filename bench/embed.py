"""Embedding throughput: hsafast embed's overlapped pipeline against the parts alone and a peer.

    python -m bench embed                       # hsafast-cnn-s, generated 12k x 12k 40x slide
    python -m bench embed --encoder hsafast-vit-t --precision bf16
    python -m bench embed --quick               # a few seconds

All on the same tiles (tissue tiles of 256 px at 0.5 um/px from a generated 40x JPEG TIFF,
so every tile is decoded from a 512-px region and shrunk), the same encoder, the same batch
size and the same thread count (the encoder's torch threads and the reader threads), in one
process, in interleaved rounds; figures are medians:

- ``read``: ``read_tiles`` alone (decode + shrink), no encoding;
- ``encode``: the encoder alone on preprocessed tensors already in memory, the ceiling of
  any pipeline with this encoder on this machine;
- ``sequential``: read a batch, preprocess it, encode it, in turn (reading not overlapped);
- ``hsafast embed``: ``encode_batches`` over ``read_tiles`` (reading, decoding and
  preprocessing overlapped with encoding);
- ``DataLoader + OpenSlide``: the field's usual pipeline (CLAM, TRIDENT): a torch DataLoader
  whose worker processes read each tile with OpenSlide ``read_region``, shrink and normalise
  it, feeding the same encoder.

"input cost" = 1 - tiles/s / encode tiles/s: the share of the encoder's time the input
pipeline adds (0 when reading is fully hidden). On a CPU the stages share the cores, so
reading cannot be hidden entirely: the physical limit is N cores / (CPU seconds per tile of
reading + preprocessing + encoding, each measured alone on one thread), given as the row
``limit (CPU work / cores)``. Everything runs with N threads and again with 1 (the 1-thread
figures stand beside, never instead).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench._common import Table

VERSIONS = ["torch", "timm", "openslide-python", "openslide-bin", "imagecodecs"]


def _tiles(path: Any, size: int, limit: int) -> Any:
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    with open_slide(path) as slide:
        grid = tile_grid(slide, detect_tissue(slide), mpp=0.5, size=size, min_tissue=0.5)
    from dataclasses import replace

    return replace(grid, coords=grid.coords[:limit], tissue_fraction=grid.tissue_fraction[:limit])


class _OpenSlideTiles:
    """A map-style dataset: one tile per item, read with OpenSlide and normalised (the peer)."""

    def __init__(self, path: str, coords: np.ndarray, read_size: int, encoder: Any) -> None:
        self.path, self.coords, self.read_size = path, coords, read_size
        self.mean = np.asarray(encoder.mean, np.float32) * 255.0
        self.std = np.asarray(encoder.std, np.float32) * 255.0
        self.tile_size, self.input_size = 256, encoder.input_size
        self.slide: Any = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> Any:
        import cv2
        import openslide
        import torch

        if self.slide is None:
            self.slide = openslide.OpenSlide(self.path)
        x, y = (int(v) for v in self.coords[i])
        region = self.slide.read_region((x, y), 0, (self.read_size, self.read_size))
        rgb = np.asarray(region.convert("RGB"))
        small = cv2.resize(rgb, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
        out = (small.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(out.transpose(2, 0, 1).copy())


def _cases(args: argparse.Namespace, threads: int) -> list[tuple[str, Callable[[], int]]]:
    import torch

    from hsafast.embedding import EmbedConfig, encode_batches
    from hsafast.encoders import create_encoder
    from hsafast.reading import read_tiles

    device = torch.device(args.device)
    encoder = create_encoder(args.encoder).eval().to(device)
    grid = _tiles(args.slide, 256, args.tiles)
    config = EmbedConfig(
        batch_size=args.batch_size, workers=threads, precision=args.precision, device=args.device
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    first = next(iter(read_tiles(args.slide, grid, batch_size=args.batch_size, workers=threads)))
    ready = encoder.preprocess(first.tiles).to(device)
    batches = max(1, len(grid) // args.batch_size)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def read() -> int:
        return sum(len(b) for b in read_tiles(args.slide, grid, args.batch_size, workers=threads))

    def encode() -> int:
        with torch.inference_mode(), autocast:
            for _ in range(batches):
                encoder(ready)
        sync()
        return batches * len(ready)

    def sequential() -> int:
        count = 0
        with torch.inference_mode(), autocast:
            for b in read_tiles(args.slide, grid, args.batch_size, workers=threads, prefetch=0):
                encoder(encoder.preprocess(b.tiles).to(device))
                count += len(b)
        sync()
        return count

    def pipeline() -> int:
        batches_in = read_tiles(args.slide, grid, args.batch_size, workers=threads)
        return len(encode_batches(encoder, batches_in, config))

    loader = torch.utils.data.DataLoader(
        _OpenSlideTiles(str(args.slide), grid.coords, grid.read_size, encoder),
        batch_size=args.batch_size,
        num_workers=threads,
        persistent_workers=True,
        multiprocessing_context="fork",
    )

    def dataloader() -> int:
        count = 0
        with torch.inference_mode(), autocast:
            for x in loader:
                encoder(x.to(device).contiguous(memory_format=torch.channels_last))
                count += len(x)
        sync()
        return count

    return [
        ("read", read),
        ("encode", encode),
        ("sequential", sequential),
        ("hsafast embed", pipeline),
        ("DataLoader + OpenSlide", dataloader),
    ]


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stage_costs(args: argparse.Namespace) -> dict[str, float]:
    """CPU seconds per tile of reading, preprocessing and encoding, each alone, 1 thread."""
    import torch

    from hsafast.encoders import create_encoder
    from hsafast.reading import read_tiles

    torch.set_num_threads(1)
    encoder = create_encoder(args.encoder).eval()
    grid = _tiles(args.slide, 256, args.tiles)
    tiles = [b.tiles for b in read_tiles(args.slide, grid, args.batch_size, workers=1)]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def read() -> None:
        for _ in read_tiles(args.slide, grid, args.batch_size, workers=1, prefetch=0):
            pass

    def preprocess() -> None:
        for t in tiles:
            encoder.preprocess(t)

    ready = [encoder.preprocess(t) for t in tiles]

    def encode() -> None:
        with torch.inference_mode(), autocast:
            for x in ready:
                encoder(x)

    costs = {}
    for name, fn in (("read", read), ("preprocess", preprocess), ("encode", encode)):
        fn()
        samples = []
        for _ in range(args.repeats):
            start = _cpu_seconds()
            fn()
            samples.append((_cpu_seconds() - start) / len(grid))
        costs[name] = statistics.median(samples)
    return costs


def _run(args: argparse.Namespace, threads: int, table: Table, costs: dict[str, float]) -> None:
    import torch

    torch.set_num_threads(threads)
    cases = _cases(args, threads)
    rates: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _, fn in cases:
        fn()  # warm-up: page cache, oneDNN kernels, reader threads, loader workers
    for _ in range(args.repeats):
        for name, fn in cases:
            time.sleep(0.3)  # let spinning BLAS/OpenMP threads of the previous case settle
            start = time.perf_counter()
            count = fn()
            rates[name].append(count / (time.perf_counter() - start))
    ceiling = statistics.median(rates["encode"])
    if costs:
        table.add(threads, "limit (CPU work / cores)", threads / sum(costs.values()), "")
    for name, _ in cases:
        rate = statistics.median(rates[name])
        cost = "" if name in ("read", "encode") else f"{1 - rate / ceiling:.0%}"
        table.add(threads, name, rate, cost)


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench embed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--encoder", default="hsafast-cnn-s")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--size", type=int, default=12000, help="generated slide side (px)")
    parser.add_argument("--tiles", type=int, default=512, help="tiles per pass")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="where the encoder runs (cpu, cuda)")
    parser.add_argument("--quick", action="store_true", help="small inputs, one round")
    args = parser.parse_args(argv)
    from bench._synthetic_slide import synthetic_slide

    if args.quick:
        args.size, args.tiles, args.repeats = 8000, 128, 1
    args.slide = synthetic_slide(args.size)
    table = Table(
        f"embed_{args.encoder}_{args.precision}", ["threads", "method", "tiles/s", "input cost"]
    )
    table.notes.update(
        encoder=args.encoder,
        precision=args.precision,
        slide=str(args.slide),
        tiles=args.tiles,
        batch_size=args.batch_size,
        favours_hsafast="none known: the generated slide's JPEG tiles are 256 px and aligned "
        "to the 512-px level-0 regions read, which helps every reader alike",
    )
    costs = _stage_costs(args) if args.device == "cpu" else {}
    table.notes["cpu_ms_per_tile_1_thread"] = {k: round(v * 1e3, 3) for k, v in costs.items()}
    table.notes["device"] = _device_name(args.device)
    for threads in sorted({args.threads, 1}, reverse=True):
        _run(args, threads, table, costs)
    table.print()
    print("CPU ms per tile, 1 thread:", table.notes["cpu_ms_per_tile_1_thread"])
    print(f"wrote {table.save(VERSIONS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
