"""Slide scoring: end to end (slide file -> SlideResult) against the encoder alone.

    python -m bench score                          # CPU, 2 threads: small encoders, torch and ORT
    python -m bench score --quick                  # a smaller slide, fewer repeats
    python -m bench score --device cuda --encoders timm:vit_small_patch16_224 --compile
    python -m bench score --stream-tiles 100000    # streaming memory and heatmap time

Rows per encoder and engine, all on the same slide in the same process:
- "encoder alone": the engine on the slide's tiles already decoded and preprocessed, in
  memory (on the device for CUDA): the ceiling any pipeline can reach;
- "hsafast Scorer": `Scorer.score(path)`: tissue detection, grid, reading and decoding,
  preprocessing, encoding, pooling and classification, overlapped in the pipeline;
- "sequential": the same steps one after the other in one thread (read a batch, preprocess,
  encode, pool), as a simple script does: what the overlap is worth.
Ratios are to the encoder alone of the same engine. The CPU peers are timed in turn with
0.3 s of idle time before each call (see bench.pool). The slide is the synthetic 40x JPEG
TIFF of the reading benchmark, tiled at 0.5 um/px into 256-px tiles (512-px reads decoded at
half scale): not aligned with the file's tiles, so it does not favour hsafast.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import OUT_DIR, Table
from bench.pool import _interleaved

_CPU_PAUSE_S = 0.3


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench score", description=__doc__)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--encoders",
        nargs="+",
        default=None,
        help="registry names (default: hsafast-cnn-s hsafast-vit-t)",
    )
    ap.add_argument(
        "--engines",
        nargs="+",
        default=None,
        help="default: torch onnxruntime (CPU); torch tensorrt (CUDA, if installed)",
    )
    ap.add_argument("--size", type=int, default=None, help="slide side in px (default 20000)")
    ap.add_argument(
        "--slides", type=int, default=None, help="copies of the slide per run (default 1; GPU 8)"
    )
    ap.add_argument(
        "--target-mpp",
        type=float,
        default=None,
        help="tile pixel size (default 0.5; on CUDA the slide's 0.25, so tiles are file tiles "
        "and decode on the GPU)",
    )
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every peer")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile on CUDA")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread everywhere, timed by the process's CPU clock (all threads): the CPU "
        "work per tile, a stable ratio on a loaded machine",
    )
    ap.add_argument(
        "--stream-tiles",
        type=int,
        default=0,
        help="instead: stream this many simulated tiles, report memory",
    )
    return ap.parse_args(argv)


def bench_bundle(encoder: str, tile_size: int = 256, target_mpp: float = 0.5) -> Path:
    """A randomly initialised two-marker patch-mode bundle (cached under bench/out)."""
    import torch

    from hsafast.bundle import EncoderSpec, ModelBundle, Preprocessing
    from hsafast.encoders import create_encoder
    from hsafast.models import SlideModel, SlideModelConfig

    name = f"{encoder.replace(':', '_')}-{tile_size}px-{target_mpp:g}mpp"
    path = OUT_DIR / "score_bundles" / name
    if (path / "config.json").is_file():
        return path
    torch.manual_seed(0)
    enc = create_encoder(encoder)
    in_bundle = enc.weights_hash != ""
    config = SlideModelConfig(in_dim=enc.dim, positivity_outputs=1)
    models = {m: SlideModel(config) for m in ("ki67", "p53")}
    ModelBundle(
        mode="patch",
        encoder=EncoderSpec.from_encoder(enc, in_bundle=in_bundle),
        models=models,
        preprocessing=Preprocessing(target_mpp=target_mpp, tile_size=tile_size),
        tile_encoder=enc if in_bundle else None,
    ).save(path)
    return path


def _set_threads(n: int) -> None:
    import torch

    from hsafast._native import core

    torch.set_num_threads(n)
    core.set_num_threads(n)


def run_slide(a: argparse.Namespace) -> Table:
    import torch

    from bench._synthetic_slide import synthetic_slide
    from hsafast.engines import installed
    from hsafast.scoring import Scorer, ScoringOptions

    gpu = a.device == "cuda"
    size = a.size or (8000 if a.quick else 20000)
    repeats = a.repeats or (2 if a.quick else (5 if gpu else 3))
    copies = a.slides or (8 if gpu else 1)
    target_mpp = a.target_mpp or (0.25 if gpu else 0.5)
    encoders = a.encoders or ["hsafast-cnn-s", "hsafast-vit-t"]
    engines = a.engines or (
        ["torch"]
        + (["tensorrt"] if gpu and installed("tensorrt") else [])
        + ([] if gpu else ["onnxruntime"])
    )
    if a.cpu_time:
        a.threads = 1
    if not gpu:
        _set_threads(a.threads)
    clock = time.process_time if a.cpu_time else time.perf_counter
    slide = synthetic_slide(size)
    slides = [(f"copy{i}", slide) for i in range(copies)]
    table = Table(
        "score" + ("_cuda" if gpu else ""),
        ["encoder", "engine", "peer", "tiles", "s", "tiles/s", "x encoder alone"],
    )
    notes: dict[str, Any] = {
        "slide": slide.name,
        "size": size,
        "copies": copies,
        "target_mpp": target_mpp,
        "repeats": repeats,
        "threads": None if gpu else a.threads,
        "device": a.device,
        "clock": "process CPU time" if a.cpu_time else "wall",
    }
    for encoder in encoders:
        bundle = bench_bundle(encoder, target_mpp=target_mpp)
        for engine in engines:
            options = ScoringOptions(batch_size=a.batch_size, workers=None if gpu else a.threads)
            engine_options: dict[str, Any] = {}
            if engine == "onnxruntime":
                engine_options["threads"] = a.threads
            if engine == "torch" and gpu and a.compile:
                engine_options["compile"] = True
            scorer = Scorer(
                bundle, engine, a.device, options=options, engine_options=engine_options
            )
            tiles, xs = _preloaded(scorer, slide)
            n = len(tiles) * copies
            sync = torch.cuda.synchronize if gpu else (lambda: None)

            def alone(scorer: Any = scorer, xs: list[Any] = xs, sync: Any = sync) -> None:
                for _ in range(copies):
                    for x in xs:
                        scorer.engine.run(x)
                sync()

            def e2e(scorer: Any = scorer) -> None:
                for _, result in scorer.score_iter(slides):
                    if isinstance(result, BaseException):
                        raise result

            def sequential(scorer: Any = scorer, sync: Any = sync) -> None:
                for _ in range(copies):
                    _sequential(scorer, slide)
                sync()

            peers = [("encoder alone", alone), ("hsafast Scorer", e2e), ("sequential", sequential)]
            times = _interleaved(peers, repeats, clock, pause=0.0 if gpu else _CPU_PAUSE_S)
            e2e()
            stages = {k: v.to_dict() for k, v in scorer.stats.items()}
            base = times["encoder alone"]
            for name, _ in peers:
                t = times[name]
                table.add(encoder, scorer.engine.describe(), name, n, t, n / t, base / t)
            pool = stages.get("pool", {}).get("busy_s") or 0.0
            encode = stages.get("encode", {}).get("busy_s") or 1.0
            notes[f"{encoder}/{engine}/stages"] = stages
            notes[f"{encoder}/{engine}/pool_share_of_encoder"] = round(pool / encode, 4)
            if not gpu:
                notes[f"{encoder}/{engine}/pool_alone_ms"] = _pool_alone_ms(scorer, xs)
    table.notes.update(notes)
    return table


def _preloaded(scorer: Any, slide: Path) -> tuple[np.ndarray, list[Any]]:
    """The slide's tiles as the Scorer cuts them, decoded, and preprocessed on its device."""
    from hsafast.reading import read_tiles
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    model = scorer.model
    with open_slide(slide) as s:
        grid = tile_grid(s, detect_tissue(s), mpp=model.target_mpp, size=model.tile_size)
        tiles = np.concatenate([b.tiles for b in read_tiles(s, grid, batch_size=256)])
    import torch

    xs = []
    for i in range(0, len(tiles), scorer.batch_size):
        part = torch.from_numpy(tiles[i : i + scorer.batch_size]).to(scorer.device)
        xs.append(model.encoder.preprocess(part).to(scorer.engine.input_dtype))
    return tiles, xs


def _sequential(scorer: Any, slide: Path) -> None:
    """Read, preprocess, encode and pool one batch after another in this thread."""
    from hsafast.reading import read_tiles
    from hsafast.scoring.accumulate import SlideAccumulator, SlideInfo
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    model = scorer.model
    with open_slide(slide) as s:
        grid = tile_grid(s, detect_tissue(s), mpp=model.target_mpp, size=model.tile_size)
        acc = SlideAccumulator(model, SlideInfo("seq", grid.patch_size_level0))
        for b in read_tiles(
            s, grid, batch_size=scorer.batch_size, prefetch=0, workers=scorer.options.workers
        ):
            import torch

            x = model.encoder.preprocess(torch.from_numpy(b.tiles).to(scorer.device))
            acc.absorb(scorer.engine.run(x), b.coords)
    acc.result()


def _pool_alone_ms(scorer: Any, xs: list[Any]) -> float:
    """Median ms to pool the slide's h of every marker with PoolState (as the pool stage)."""
    import statistics

    from hsafast.pooling import PoolState

    outs = [scorer.engine.run(x) for x in xs]
    times = []
    for _ in range(5):
        time.sleep(_CPU_PAUSE_S)
        t0 = time.perf_counter()
        for name, m in scorer.model.markers.items():
            if m.pool is None:
                continue
            state = PoolState(m.pool, keep_logits=True)
            for o in outs:
                state.update(o[f"{name}.h"])
            state.result(return_weights=True)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 3)


def run_stream(a: argparse.Namespace) -> Table:
    """Streams N simulated tiles through a scorer; peak resident memory and heatmap time."""
    from hsafast.heatmaps import save_heatmaps
    from hsafast.scoring import Scorer, ScoringOptions, SlideInfo

    _set_threads(a.threads)
    encoder = (a.encoders or ["hsafast-test-tiny"])[0]
    tile = 64
    bundle = bench_bundle(encoder, tile_size=tile)
    scorer = Scorer(
        bundle,
        (a.engines or ["torch"])[0],
        "cpu",
        options=ScoringOptions(batch_size=a.batch_size or 512),
    )
    rng = np.random.default_rng(0)
    pool = rng.integers(60, 230, size=(512, tile, tile, 3), dtype=np.uint8)
    side = int(np.ceil(np.sqrt(a.stream_tiles)))
    n = a.stream_tiles
    stream = scorer.stream(SlideInfo("simulated", patch_size_level0=2 * tile))
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    for start in range(0, n, 512):
        idx = np.arange(start, min(n, start + 512))
        coords = np.stack([idx % side, idx // side], 1) * 2 * tile
        stream.push(pool[: len(idx)], coords)
    result = stream.result()
    seconds = time.perf_counter() - t0
    rss1 = _rss_mb()
    t1 = time.perf_counter()
    files = save_heatmaps(result, OUT_DIR / "score_heatmaps")
    heat_s = time.perf_counter() - t1
    table = Table(
        "score_stream",
        ["encoder", "tiles", "s", "tiles/s", "peak RSS MB", "RSS before MB", "heatmaps s"],
    )
    table.add(encoder, n, seconds, n / seconds, rss1, rss0, heat_s)
    table.notes.update(
        threads=a.threads,
        heatmap_files=[f.name for f in files],
        heatmap_bytes=sum(f.stat().st_size for f in files),
    )
    return table


def _rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str]) -> int:
    a = _args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    table = run_stream(a) if a.stream_tiles else run_slide(a)
    table.print()
    print(f"wrote {table.save(['torch', 'onnxruntime', 'tensorrt'])}")
    return 0
