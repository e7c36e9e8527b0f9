"""The native kernels on every SIMD path, and against another build: ``python -m bench simd``.

    python -m bench simd                              # every path this CPU runs
    python -m bench simd --reference PATH/_core.so    # plus another build, side by side

The default build is portable (baseline x86-64 plus AVX2 and AVX-512 variants of the hot
loops, chosen at run time); ``--reference`` loads a second ``_core`` extension, for example
one built with ``HSAFAST_NATIVE_ARCH=ON`` (``-march=native``), into the same process, so
both run in turns on the same inputs. A reference build of another revision:

    git archive REV | tar -x -C /tmp/ref && cd /tmp/ref && HSAFAST_NATIVE_ARCH=ON \\
        pip wheel . --no-deps --no-build-isolation -w /tmp/ref-wheel
    python -m zipfile -e /tmp/ref-wheel/hsafast-*.whl /tmp/ref-core

Every kernel runs on one native thread and is timed by the CPU clock of the calling
thread (``time.thread_time``), so load from other processes costs wall time, not the
figure; the cases run in turns for ``--repeats`` rounds and each figure is a median.
Inputs are real images: 256-px crops of scikit-image's IHC image (stain kernels), the
bundled CMU-1 H&E slide at full resolution (tissue kernels), random float32 features
(pooling: the values do not change the work). Outputs of every path and build are
compared with the portable build's widest path; the largest difference is in the notes.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bench._common import Table

ROOT = Path(__file__).resolve().parent.parent
IHC = ROOT / "tests" / "data" / "skimage_ihc.png"

Kernel = Callable[[ModuleType], Any]


def load_core(path: Path) -> ModuleType:
    """Another build's ``_core`` extension, under a name of its own."""
    spec = importlib.util.spec_from_file_location("hsafast_reference._core", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ihc_tiles(n: int, size: int) -> np.ndarray:
    import cv2

    img = np.ascontiguousarray(cv2.imread(str(IHC))[..., ::-1])
    rng = np.random.default_rng(0)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, img.shape[0] - size + 1, 2)
        out[i] = np.rot90(img[y : y + size, x : x + size], i % 4)
    return out


def he_image() -> np.ndarray:
    from hsafast.data import sample_slide_path
    from hsafast.slides import open_slide

    with open_slide(sample_slide_path()) as slide:
        w, h = slide.dimensions
        return np.ascontiguousarray(slide.read_region((0, 0), 0, (w, h)))


def kernels(quick: bool) -> list[tuple[str, float, str, Kernel]]:
    """(name, work per call, unit, call) of each kernel, the call taking a core module."""
    from hsafast.stain import HED, PixelThresholds, od_lut

    tiles = ihc_tiles(16 if quick else 64, 256)
    lut, inv = od_lut(), HED.stains_from_rgb.astype(np.float32)
    t = PixelThresholds()
    dab, hema = HED.index("dab"), HED.index("hematoxylin")
    px = tiles.shape[0] * 256 * 256 / 1e6

    he = he_image()
    if quick:
        he = np.ascontiguousarray(he[:1024, :1024])
    he_px = he.shape[0] * he.shape[1] / 1e6
    background = (230, 230, 230)

    rng = np.random.default_rng(1)
    rows, dim, hidden = (2048 if quick else 8192), 1024, 256
    z = rng.standard_normal((rows, 2 * hidden), dtype=np.float32)
    h = rng.standard_normal((rows, dim), dtype=np.float32)
    bias_v, bias_u, w = (rng.standard_normal(hidden, dtype=np.float32) * 0.1 for _ in range(3))

    def pool(core: ModuleType) -> np.ndarray:
        state = np.zeros(dim + 2, np.float64)
        state[0] = -np.inf
        core.pool_chunk(z, h, bias_v, bias_u, w, 0.1, state)
        return state[2:] / state[1]

    return [
        (
            "stain statistics (stain_tile_stats)",
            px,
            "Mpx",
            lambda core: core.stain_tile_stats(
                tiles, lut, inv, dab, hema, t.dab, t.hematoxylin, t.tissue_od, t.saturation
            ),
        ),
        (
            "stain concentrations (stain_concentrations)",
            px,
            "Mpx",
            lambda core: core.stain_concentrations(tiles, lut, inv, True),
        ),
        ("gated-attention pooling (pool_chunk, D=1024 H=256)", rows / 1e3, "k rows", pool),
        (
            "gated logits (gated_logits, H=256)",
            rows / 1e3,
            "k rows",
            lambda core: core.gated_logits(z, bias_v, bias_u, w, 0.1),
        ),
        ("tissue mask (tissue_mask, defaults)", he_px, "Mpx", lambda core: core.tissue_mask(he)[0]),
        (
            "tissue optical density (tissue_od_map)",
            he_px,
            "Mpx",
            lambda core: core.tissue_od_map(he, background),
        ),
        (
            "tissue dilation, disk r=8 (dilate_disk)",
            he_px,
            "Mpx",
            lambda core: core.dilate_disk(core.tissue_od_threshold(he, background, 8), 8),
        ),
    ]


class Variant:
    """One way to run a kernel: a core module, with a SIMD path forced or its own choice."""

    def __init__(self, build: str, core: ModuleType, path: str | None) -> None:
        self.build, self.core, self.path = build, core, path

    @property
    def label(self) -> str:
        return self.path or str(self.core.build_info()["simd"])

    def run(self, fn: Kernel) -> tuple[float, Any]:
        before = self.core.set_simd(self.path) if self.path else None
        try:
            t0 = time.thread_time()
            out = fn(self.core)
            return time.thread_time() - t0, out
        finally:
            if before is not None:
                self.core.set_simd(None)


def max_difference(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench simd", description=__doc__)
    parser.add_argument("--reference", type=Path, help="another build's _core extension file")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="small inputs, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3

    from hsafast._native import core

    info = core.build_info()
    # Widest path first, the baseline last, the reference (if any) before them all: legacy
    # SSE code timed right after the -march=native reference measured up to 3x slower (the
    # register state its AVX-512 code leaves), which would penalise the baseline path.
    variants = [Variant("this build", core, p) for p in reversed(info["simd_supported"])]
    if args.reference:
        ref = load_core(args.reference)
        native = ref.build_info().get("march_native", False)
        label = "reference, -march=native" if native else "reference"
        variants.insert(0, Variant(label, ref, None))
    cores = {id(v.core): v.core for v in variants}
    before = {k: c.get_num_threads() for k, c in cores.items()}
    for c in cores.values():
        c.set_num_threads(1)

    table = Table(
        "simd",
        ["kernel", "build", "path", "CPU ms", "rate", "unit/s", "x widest path", "x reference"],
    )
    table.notes["this build"] = {
        k: info[k] for k in info if k.startswith("simd") or k == "march_native"
    }
    if args.reference:
        ref_info = variants[-1].core.build_info()
        table.notes["reference build"] = {
            k: ref_info[k] for k in ref_info if k.startswith("simd") or k == "march_native"
        }
    try:
        for name, work, unit, fn in kernels(args.quick):
            times: list[list[float]] = [[] for _ in variants]
            outputs = [v.run(fn)[1] for v in variants]  # warm-up, and the outputs compared
            for _ in range(args.repeats):
                for k, v in enumerate(variants):
                    times[k].append(v.run(fn)[0])
            widest = 1 if args.reference else 0
            medians = [float(np.median(ts)) for ts in times]
            ref_s = medians[0] if args.reference else None
            for v, s in zip(variants, medians, strict=True):
                table.add(
                    name, v.build, v.label, round(s * 1e3, 3), round(work / s, 1), unit,
                    round(medians[widest] / s, 3), round(ref_s / s, 3) if ref_s else "",
                )  # fmt: skip
            table.notes[f"max difference to the widest path: {name}"] = max(
                max_difference(o, outputs[widest]) for o in outputs
            )
            print(f"  {name}: " + ", ".join(f"{v.label} {s * 1e3:.2f} ms" for v, s in
                                             zip(variants, medians, strict=True)))  # fmt: skip
    finally:
        for k, c in cores.items():
            c.set_num_threads(before[k])
    table.notes["repeats"] = args.repeats
    print()
    table.print()
    for key, value in table.notes.items():
        print(f"{key}: {value}")
    print(f"saved {table.save(['scikit-image'])}")
    return 0
