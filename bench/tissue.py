"""Tissue detection, accuracy and speed: hsafast vs a CLAM-style OpenCV pipeline vs histolab.

    python -m bench tissue [--quick] [--repeats N] [--figures]

Accuracy: IoU of each method's mask with the outline drawn by hand on every real
image (tests/data/masks/), the images given the pixel sizes the tests use
(tests/tissue_truth.py), plus the mouse lung IHC read at 10 um/px.

Speed: every method gets the same RGB image: for every real file the image
``detect_tissue`` reads (8 um/px, at most 2048 px), and the TCGA slide's
2221x1783 level (CLAM's own segmentation level for it). Each call runs on one
worker thread (not the main thread, whose glibc heap re-faults the large
temporaries of OpenCV and NumPy), methods timed in alternation after a warm-up,
medians of the repeats, wall time and the worker's CPU time. hsafast and OpenCV
get the same number of threads: one (the figure a cohort run with one slide per
worker sees), then every core; histolab's filters are single-threaded NumPy and
scikit-image. ``slide_ms`` is ``detect_tissue`` on the file, reading included.

Peers: CLAM's ``segmentTissue`` with the defaults of its ``create_patches_fp.py``
(HSV saturation, median blur 7, binary threshold 8, closing with a 4x4 square,
contours with area filter a_t=100 and a_h=16 reference 512-px patches,
max_n_holes=8), written here with OpenCV; histolab's slide tissue mask is its
filter chain (grey, Otsu, dilation, small-hole and small-object removal), run
when histolab imports (``pip install --no-deps histolab``: it pins old NumPy).
CLAM's area filter drops every contour of these images (smaller than 100
reference patches), so its IoU is given for the mask before the filter.
``--figures`` writes bench/figures/tissue_*.png.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench._common import Table

ROOT = Path(__file__).resolve().parent.parent
FIGURES = Path(__file__).resolve().parent / "figures"

CLAM_SEG = {"sthresh": 8, "mthresh": 7, "close": 4, "use_otsu": False}
CLAM_FILTER = {"a_t": 100, "a_h": 16, "max_n_holes": 8}
CLAM_REF_PATCH = 512


def truth_module() -> Any:
    """tests/tissue_truth.py: the hand-drawn outlines and how to score against them."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tissue_truth

    return tissue_truth


@dataclass
class Input:
    name: str
    rgb: np.ndarray
    mask_mpp: float | None
    """um per image pixel; None: pixel units."""
    downsample: float
    """Level-0 pixels per image pixel (CLAM's reference patch is in level-0 pixels)."""
    truth: np.ndarray | None
    path: Path | None
    slide_mpp: float | None
    """The pixel size the file was opened with (None: its own)."""


def clam_style(rgb: np.ndarray, downsample: float) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """CLAM's segmentation with its defaults: (binary before filtering, kept contours, mask)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    saturation = cv2.medianBlur(hsv[:, :, 1], CLAM_SEG["mthresh"])
    if CLAM_SEG["use_otsu"]:
        _, binary = cv2.threshold(saturation, 0, 255, cv2.THRESH_OTSU + cv2.THRESH_BINARY)
    else:
        _, binary = cv2.threshold(saturation, CLAM_SEG["sthresh"], 255, cv2.THRESH_BINARY)
    if CLAM_SEG["close"] > 0:
        kernel = np.ones((CLAM_SEG["close"], CLAM_SEG["close"]), np.uint8)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    ref_area = int(CLAM_REF_PATCH**2 / (downsample * downsample))
    a_t, a_h = CLAM_FILTER["a_t"] * ref_area, CLAM_FILTER["a_h"] * ref_area
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    kept: list[Any] = []
    mask = np.zeros(binary.shape, np.uint8)
    if hierarchy is None:
        return binary, kept, mask
    links = hierarchy[0]
    for i in np.flatnonzero(links[:, 3] == -1):
        holes = [contours[j] for j in np.flatnonzero(links[:, 3] == i)]
        area = cv2.contourArea(contours[i]) - sum(cv2.contourArea(h) for h in holes)
        if area == 0 or area <= a_t:
            continue
        holes = sorted(holes, key=cv2.contourArea, reverse=True)[: CLAM_FILTER["max_n_holes"]]
        holes = [h for h in holes if cv2.contourArea(h) > a_h]
        kept.append((contours[i], holes))
        cv2.drawContours(mask, [contours[i]], -1, 1, -1)
        if holes:
            cv2.drawContours(mask, holes, -1, 0, -1)
    return binary, kept, mask


def histolab_masker() -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        from histolab.filters.compositions import FiltersComposition
        from histolab.slide import Slide
        from PIL import Image
    except Exception:  # histolab pins old numpy/scikit-image; absent or broken is expected
        return None
    chain = FiltersComposition(Slide).tissue_mask_filters

    def run(rgb: np.ndarray) -> np.ndarray:
        return np.asarray(chain(Image.fromarray(rgb)))

    return run


def load_inputs(quick: bool) -> list[Input]:
    import hsafast
    from hsafast.tissue import TissueConfig, working_image

    truths = truth_module()
    config = TissueConfig()
    inputs = []
    images = truths.IMAGES[:4] if quick else truths.IMAGES
    for image in images:
        with hsafast.open_slide(image.path, mpp=image.mpp) as slide:
            rgb, mask_mpp, _ = working_image(slide, config)
            ds = slide.dimensions[0] / rgb.shape[1]
        truth = truths.truth_mask(image.truth)
        inputs.append(Input(image.name, rgb, mask_mpp, ds, truth, image.path, image.mpp))
    lung = next(im for im in truths.IMAGES if im.name == "lung_prospc")
    with hsafast.open_slide(lung.path, mpp=10.0) as slide:  # the report's reading
        rgb, mask_mpp, _ = working_image(slide, config)
    inputs.append(
        Input("lung_prospc_10um", rgb, mask_mpp, 1.0, truths.truth_mask(lung.truth), None, 10.0)
    )
    with hsafast.open_slide(ROOT / "tests/data/tcga-cr-7395-01a-01-ts1.svs") as tcga:
        level = tcga.read_level(1)
        inputs.append(
            Input("tcga_level1", level, None, tcga.level_downsamples[1], None, None, None)
        )
    return inputs


def timed_in_worker(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """(median wall s, median CPU s of the worker) per function: each call on one worker
    thread, in alternation after one warm-up each, 0.2 s idle before every call."""
    results: list[list[tuple[float, float]]] = [[] for _ in fns]

    def call(fn: Callable[[], object]) -> tuple[float, float]:
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        return time.perf_counter() - t0, time.thread_time() - c0

    with ThreadPoolExecutor(max_workers=1) as pool:
        for fn in fns:
            pool.submit(call, fn).result()
        for _ in range(repeats):
            for fn, bucket in zip(fns, results, strict=True):
                time.sleep(0.2)
                bucket.append(pool.submit(call, fn).result())
    return [
        (float(np.median([w for w, _ in b])), float(np.median([c for _, c in b]))) for b in results
    ]


def save_figure(item: Input, ours: np.ndarray, clam: np.ndarray) -> Path:
    """hsafast | CLAM-style before its area filter, the hand-drawn outline in red."""
    from PIL import Image, ImageDraw

    rgb = item.rgb
    height = 200
    scale = height / rgb.shape[0]
    size = (max(1, round(rgb.shape[1] * scale)), height)
    outline = None
    if item.truth is not None:
        t = cv2.resize(item.truth.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        outline, _ = cv2.findContours(t, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    panels = []
    for mask in (ours, clam):
        image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        image[m == 0] = (image[m == 0] * 0.35 + 255 * 0.15).astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, (0, 200, 0), 1)
        if outline is not None:
            cv2.drawContours(image, outline, -1, (220, 0, 0), 1)
        panels.append(image)
    gap = np.full((height, 6, 3), 255, np.uint8)
    strip = np.hstack([panels[0], gap, panels[1]])
    canvas = np.full((height + 16, strip.shape[1], 3), 255, np.uint8)
    canvas[16:] = strip
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.text((2, 2), f"hsafast: {item.name}", fill=(0, 0, 0))
    draw.text((panels[0].shape[1] + 8, 2), "CLAM-style (raw)", fill=(0, 0, 0))
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"tissue_{item.name}.png"
    image.quantize(colors=64).save(path, optimize=True)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tissue", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="four images, three repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method")
    parser.add_argument("--figures", action="store_true", help="write bench/figures/tissue_*.png")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)

    import os

    from hsafast._native import core
    from hsafast.slides import open_slide
    from hsafast.tissue import TissueConfig, detect_tissue, detect_tissue_image

    truths = truth_module()
    cores = os.cpu_count() or 1
    logging.getLogger("hsafast.tissue").setLevel(logging.ERROR)  # pixel-unit notices
    config = TissueConfig()
    histolab = histolab_masker()
    columns = ["image", "pixels", "iou_hsafast", "iou_clam_raw", "iou_histolab"]
    columns += ["hsafast_ms", "clam_ms", "clam/hsafast", "histolab_ms", "histolab/hsafast"]
    columns += [f"hsafast_ms_{cores}t", f"clam_ms_{cores}t", f"clam/hsafast_{cores}t"]
    columns += ["hsafast_cpu_ms", "clam_cpu_ms", "slide_ms"]
    table = Table("tissue", columns)
    started = time.perf_counter()
    for item in load_inputs(args.quick):
        rgb, mpp, ds = item.rgb, item.mask_mpp, item.downsample
        ours = detect_tissue_image(rgb, mpp, config).mask
        clam_raw = clam_style(rgb, ds)[0] > 0
        hl_mask = histolab(rgb) if histolab is not None else None

        def score(mask: np.ndarray | None, truth: np.ndarray | None = item.truth) -> float:
            if mask is None or truth is None:
                return float("nan")
            return round(truths.iou(mask.astype(bool), truth), 3)

        fns: list[Callable[[], object]] = [
            lambda: detect_tissue_image(rgb, mpp, config),  # noqa: B023
            lambda: clam_style(rgb, ds),  # noqa: B023
        ]
        times: dict[int, list[tuple[float, float]]] = {}
        for threads in (1, cores):
            core.set_num_threads(threads)
            cv2.setNumThreads(threads)
            peers = fns + ([lambda: histolab(rgb)] if histolab and threads == 1 else [])  # noqa: B023
            times[threads] = timed_in_worker(peers, repeats)
        core.set_num_threads(1)
        cv2.setNumThreads(1)
        (ours_1, clam_1), hl_1 = times[1][:2], times[1][2] if histolab else (float("nan"),) * 2
        ours_n, clam_n = times[cores][:2]
        slide_ms = float("nan")
        if item.path is not None:  # reading the thumbnail included
            path, slide_mpp = item.path, item.slide_mpp
            slide_ms = (
                1e3
                * timed_in_worker(
                    [lambda: detect_tissue(open_slide(path, mpp=slide_mpp), config)],  # noqa: B023
                    max(3, repeats // 3),
                )[0][0]
            )
        table.add(
            item.name,
            f"{rgb.shape[1]}x{rgb.shape[0]}",
            score(ours),
            score(clam_raw),
            score(hl_mask),
            ours_1[0] * 1e3,
            clam_1[0] * 1e3,
            clam_1[0] / ours_1[0],
            hl_1[0] * 1e3,
            hl_1[0] / ours_1[0],
            ours_n[0] * 1e3,
            clam_n[0] * 1e3,
            clam_n[0] / ours_n[0],
            ours_1[1] * 1e3,
            clam_1[1] * 1e3,
            slide_ms,
        )
        if args.figures and item.truth is not None:
            save_figure(item, ours, clam_raw)
    table.notes = {
        "command": "python -m bench " + " ".join(["tissue", *argv]),
        "repeats": repeats,
        "threads": [1, cores],
        "clam_params": {**CLAM_SEG, **CLAM_FILTER, "ref_patch_size": CLAM_REF_PATCH},
        "histolab": "not importable" if histolab is None else "filter chain of histolab.masks",
        "timing": "each call on one worker thread, alternating, 0.2 s idle before each, medians",
        "load_average": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    table.print()
    path = table.save(["opencv-python-headless", "scikit-image", "histolab"])
    print(f"saved {path}")
    return 0
