"""Gated-attention pooling: hsafast's fused kernels against eager PyTorch and the matmul floor.

    python -m bench pool                    # CPU: N=20k, D=1024, H=256, fp32, 2 threads
    python -m bench pool --quick            # smaller bag, fewer repeats
    python -m bench pool --device cuda      # GPU: N=100k, D=1024, H=256, bf16, CUDA events

Every row pools the same bag with the same head in the same process; the table gives each
peer's median time and its ratio to hsafast. The "matmul alone" rows are the floor: the
h @ [V; U]^T product that every implementation has to do. On CUDA the table names each hsafast
path (projection by cuBLAS, by hsafast's tensor-core kernel or fused with everything else in
one Triton kernel; one-pass or three-kernel epilogue) and which one `gated_attention_pool`
takes by default; the Triton kernel is also timed with each of its candidate tile shapes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from bench._common import Table

_CPU_PAUSE_S = 0.3  # idle time before each timed CPU call (see _interleaved)


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench pool", description=__doc__)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--n", type=int, help="rows (default 20000 on cpu, 100000 on cuda)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every peer")
    ap.add_argument("--chunk", type=int, default=None, help="rows per CPU chunk")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smaller bag and fewer repeats")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed by the thread's CPU clock: stable ratios on a loaded machine",
    )
    return ap.parse_args(argv)


def _bag(n: int, dim: int, hidden: int) -> tuple[np.ndarray, Any]:
    from hsafast.pooling import GatedAttentionParams

    rng = np.random.default_rng(0)
    h = (rng.normal(0, 1, size=dim) + rng.standard_normal((n, dim))).astype(np.float32)
    return h, GatedAttentionParams.random(dim, hidden, seed=1)


def run_cpu(a: argparse.Namespace) -> Table:
    import torch
    from threadpoolctl import threadpool_limits

    from hsafast._native import core
    from hsafast.pooling import gated_attention_pool
    from hsafast.pooling.cpu import default_chunk
    from hsafast.pooling.reference import gated_attention_pool_numpy, gated_attention_pool_torch

    n = a.n or (5000 if a.quick else 20000)
    repeats = a.repeats or (3 if a.quick else 7)
    if a.cpu_time:
        a.threads = 1
    h, params = _bag(n, a.dim, a.hidden)
    chunk = a.chunk or default_chunk(a.dim)
    torch.set_num_threads(a.threads)
    core.set_num_threads(a.threads)
    th = torch.from_numpy(h)
    stacked = params.stacked()
    w_t = torch.from_numpy(stacked)
    z_buf = np.empty((chunk, stacked.shape[0]), np.float32)

    def numpy_chunked_matmul() -> None:
        for s in range(0, n, chunk):
            rows = h[s : s + chunk]
            np.matmul(rows, stacked.T, out=z_buf[: len(rows)])

    peers: list[tuple[str, Callable[[], object]]] = [
        ("hsafast fused (cpu)", lambda: gated_attention_pool(h, params, engine="cpu", chunk=chunk)),
        (
            "hsafast fused + weights",
            lambda: gated_attention_pool(h, params, True, engine="cpu", chunk=chunk),
        ),
        (
            "hsafast fused, torch input",
            lambda: gated_attention_pool(th, params, engine="cpu", chunk=chunk),
        ),
        ("eager PyTorch (fp32)", lambda: gated_attention_pool_torch(th, params)),
        ("matmul alone, PyTorch", lambda: th @ w_t.T),
        (f"matmul alone, NumPy, chunks of {chunk}", numpy_chunked_matmul),
    ]
    # the physical limit on this machine: the best rate of this BLAS on a large square product
    square = np.random.default_rng(2).random((2048, 2048), dtype=np.float32)
    peak = "BLAS peak: NumPy sgemm 2048^3, scaled to these FLOPs"
    peers.append((peak, lambda: square @ square))
    if not a.quick or n <= 20000:
        peers.append(("NumPy reference (fp64)", lambda: gated_attention_pool_numpy(h, params)))
    name = "pool_cpu_cputime" if a.cpu_time else "pool_cpu"
    table = Table(name, ["implementation", "median ms", "x hsafast", "GFLOP/s"])
    flops = 2.0 * n * a.dim * 2 * a.hidden
    with threadpool_limits(limits=a.threads):
        clock = time.thread_time if a.cpu_time else time.perf_counter
        times = _interleaved(peers, repeats, clock, pause=_CPU_PAUSE_S)
    times[peak] *= flops / (2.0 * 2048**3)
    base = times[peers[0][0]]
    for name, _ in peers:
        t = times[name]
        table.add(name, t * 1e3, t / base, flops / t / 1e9)
    table.notes.update(
        clock="thread CPU time" if a.cpu_time else "wall",
        n=n,
        dim=a.dim,
        hidden=a.hidden,
        threads=a.threads,
        chunk=chunk,
        dtype="float32",
        repeats=repeats,
        pause_s=_CPU_PAUSE_S,
    )
    return table


def _interleaved(
    peers: list[tuple[str, Callable[[], object]]],
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
    pause: float = 0.0,
) -> dict[str, float]:
    """Median seconds per peer, timing the peers in turn so that load drifts hit all alike.

    `pause` seconds of idle time before each timed call let the previous peer's thread pools
    go to sleep: OpenBLAS workers spin for about 0.1 s after a call (2^28 cycles) and GNU
    OpenMP's for a shorter while, and a spinning worker takes half a core from whatever runs
    next. Without the pause each peer's time depends on which peer ran before it.
    """
    samples: dict[str, list[float]] = {name: [] for name, _ in peers}
    for _name, fn in peers:
        fn()
    for _ in range(repeats):
        for name, fn in peers:
            time.sleep(pause)
            t0 = clock()
            fn()
            samples[name].append(clock() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


def run_cuda(a: argparse.Namespace) -> Table:
    import torch

    from hsafast.pooling import cuda as pc
    from hsafast.pooling import gated_attention_pool
    from hsafast.pooling.engines import cuda_built
    from hsafast.pooling.reference import gated_attention_pool_torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU visible to PyTorch")
    n = a.n or (20000 if a.quick else 100000)
    repeats = a.repeats or (20 if a.quick else 100)
    h_np, params = _bag(n, a.dim, a.hidden)
    h = torch.from_numpy(h_np).to("cuda", torch.bfloat16)
    w_t = torch.from_numpy(params.stacked()).to("cuda", torch.bfloat16)
    z = h @ w_t.T

    # estimated HBM traffic of each path (bytes): h and Z = h @ [V; U]^T in bf16
    h_bytes, z_bytes = 2.0 * n * a.dim, 2.0 * n * 2 * a.hidden
    traffic = {
        "cublas": h_bytes + 2 * z_bytes + h_bytes,  # GEMM reads h, writes Z; epilogue reads both
        "tensor-cores": 2 * h_bytes,  # projection reads h (slabs share it in L2), then the sum
        "epilogue": z_bytes + h_bytes,
        "triton": h_bytes,  # h once from HBM; its re-reads hit L2
    }
    default = f"{pc.DEFAULT_PROJECTION} + {pc.DEFAULT_EPILOGUE}"
    peers: list[tuple[str, Callable[[], object], float]] = []
    if cuda_built():
        peers.append(
            (
                f"hsafast gated_attention_pool, auto ({default})",
                lambda: gated_attention_pool(h, params),
                traffic[pc.DEFAULT_PROJECTION],
            )
        )
        peers.append(
            (
                "  same, return_weights=True",
                lambda: gated_attention_pool(h, params, return_weights=True),
                traffic[pc.DEFAULT_PROJECTION] + 8.0 * n,
            )
        )
        for proj in pc.PROJECTIONS:
            for epi in pc.EPILOGUES if proj != "triton" else (None,):
                peers.append(
                    (
                        f"hsafast state: {proj} projection + {epi or 'fused'} epilogue",
                        partial(pc.pool_state_cuda, h, params, projection=proj, epilogue=epi),
                        traffic[proj],
                    )
                )
        for epi in pc.EPILOGUES:
            peers.append(
                (
                    f"hsafast {epi} epilogue alone (Z given)",
                    partial(pc.pool_state_cuda, h, params, epilogue=epi, z=z),
                    traffic["epilogue"],
                )
            )
    peers.extend(_triton_tiles(h, params, traffic["triton"]))
    peers.append(("eager PyTorch (bf16)", lambda: gated_attention_pool_torch(h, params), 0.0))
    try:
        compiled = torch.compile(gated_attention_pool_torch)
        compiled(h, params)
        peers.append(("torch.compile (bf16)", lambda: compiled(h, params), 0.0))
    except Exception as exc:  # any compiler failure just drops the peer
        print(f"torch.compile unavailable: {type(exc).__name__}: {exc}")
    peers.append(("matmul alone (bf16, cuBLAS)", lambda: h @ w_t.T, h_bytes + z_bytes))

    flops = 2.0 * n * a.dim * 2 * a.hidden + 4.0 * n * a.hidden + 2.0 * n * a.dim
    min_bytes = 2.0 * n * a.dim + 2.0 * 2 * a.hidden * a.dim
    table = Table(
        "pool_cuda",
        ["implementation", "median ms", "x hsafast", "TFLOP/s", "GB/s (h once)", "GB/s (est.)"],
    )
    times = {name: _cuda_median(fn, repeats) for name, fn, _ in peers}
    base = times[peers[0][0]]
    for name, _, nbytes in peers:
        t = times[name]
        table.add(name, t * 1e3, t / base, flops / t / 1e12, min_bytes / t / 1e9, nbytes / t / 1e9)
    table.notes.update(
        n=n,
        dim=a.dim,
        hidden=a.hidden,
        dtype="bfloat16",
        repeats=repeats,
        gpu=torch.cuda.get_device_name(),
        flops=flops,
        min_bytes=min_bytes,
        default_path=default,
        note=(
            "'auto' is the public call (pooled vector, one 4-byte read-back for the NaN check); "
            "'state' rows launch the kernels only; 'epilogue alone' is everything after the "
            "projection; GB/s (est.) counts the path's estimated HBM traffic (0: not estimated)"
        ),
    )
    return table


def _triton_tiles(
    h: Any, params: Any, nbytes: float
) -> list[tuple[str, Callable[[], object], float]]:
    """The fused Triton kernel with each candidate tile shape (skipped without Triton)."""
    from hsafast.pooling import cuda as pc
    from hsafast.pooling import triton_fused as tf

    if not tf.available():
        print("Triton not installed: no Triton rows")
        return []
    p = pc.device_params(params, h.device, h.dtype)
    args = (p["weights"], p["bV"], p["bU"], p["w"])
    # each shape's result is checked against fp32 arithmetic on the same 16-bit operands
    from hsafast.pooling import GatedAttentionParams
    from hsafast.pooling.reference import gated_attention_pool_torch

    rounded = args[0].float().cpu().numpy()
    exact = gated_attention_pool_torch(
        h.float(),
        GatedAttentionParams(
            rounded[: params.hidden], params.bV, rounded[params.hidden :], params.bU, params.w
        ),
    )
    rows = []
    for t in tf.CANDIDATE_TILES:
        name = (
            f"  triton tiles BM={t.rows} BH={t.hidden} BK={t.depth} warps={t.warps} "
            f"stages={t.stages} sum={t.weighted_sum}"
        )
        fn = partial(
            tf.launch, h, *args, params.b_w, want_logits=False, want_weights=False, tiles=t
        )
        try:
            pooled = fn()["pooled"]
        except Exception as exc:  # a shape that does not compile here is reported, not fatal
            print(f"{name.strip()}: {type(exc).__name__}: {exc}")
            continue
        error = float((pooled - exact).abs().max() / exact.abs().max())
        print(f"{name.strip()}: relative error {error:.1e}")
        rows.append((name, fn, nbytes))
    only = partial(tf.launch, h, *args, params.b_w, want_logits=True, want_weights=False)
    rows.append(
        (
            "  triton default tiles, logits only (no weighted sum)",
            partial(only, logits_only=True),
            nbytes,
        )
    )
    return rows


def _cuda_median(fn: Callable[[], object], repeats: int) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    a = _args(argv)
    table = run_cuda(a) if a.device == "cuda" else run_cpu(a)
    print(", ".join(f"{k}={v}" for k, v in table.notes.items()))
    table.print()
    print(f"saved {table.save(['torch', 'threadpoolctl'])}")
    return 0
