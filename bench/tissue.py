"""Tissue detection speed and masks: hsafast vs a CLAM-style OpenCV pipeline vs histolab.

    python -m bench tissue [--quick] [--repeats N] [--threads N] [--figures]

OpenCV keeps its own default threading for the CLAM-style steps.

Every method gets the same RGB image: the TCGA slide's 2221x1783 level (CLAM's
own segmentation level for it), and for every real file in tests/data the image
``detect_tissue`` reads (8 um/px, at most 2048 px). The CLAM-style pipeline is
CLAM's ``segmentTissue`` with the defaults of its ``create_patches_fp.py``
(HSV saturation, median blur 7, binary threshold 8, closing with a 4x4 square,
contours with area filter a_t=100 and a_h=16 reference 512-px patches,
max_n_holes=8), written here with OpenCV. histolab's slide tissue mask is its
filter chain (grey, Otsu, dilation, small-hole and small-object removal), run
when histolab imports. ``slide_ms`` is ``detect_tissue`` on the slide file, reading
included. ``--figures`` writes bench/figures/tissue_*.png.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench._common import Table

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
FIGURES = Path(__file__).resolve().parent / "figures"

# name, path, pixel size override, figure label
IMAGES = [
    ("cmu1", "hsafast/data/CMU-1-Small-Region.svs", None, "CMU-1 H&E"),
    ("tcga", "tests/data/tcga-cr-7395-01a-01-ts1.svs", None, "TCGA H&E frozen"),
    ("dicom_jpeg", "tests/data/multiframe_camelyon_challenge_image.dcm", None, "DICOM H&E"),
    (
        "dicom_j2k",
        "tests/data/multi_frame_jpeg2000_camelyon_challenge_image.dcm",
        None,
        "DICOM J2K",
    ),
    ("ihc_dab", "tests/data/skimage_ihc.png", 0.5, "IHC DAB (skimage)"),
    (
        "mouse_he",
        "tests/data/paired/birl_mouse_lung_lesion/Izd2-29-041-w35_HE.jpg",
        None,
        "lung H&E",
    ),
    (
        "mouse_prospc",
        "tests/data/paired/birl_mouse_lung_lesion/Izd2-29-041-w35_proSPC.jpg",
        None,
        "lung IHC proSPC",
    ),
    ("kidney_he", "tests/data/paired/birl_rat_kidney/Rat-Kidney_HE.jpg", None, "kidney H&E"),
    (
        "kidney_ck",
        "tests/data/paired/birl_rat_kidney/Rat-Kidney_PanCytokeratin.jpg",
        None,
        "kidney IHC CK",
    ),
]

CLAM_SEG = {"sthresh": 8, "mthresh": 7, "close": 4, "use_otsu": False}
CLAM_FILTER = {"a_t": 100, "a_h": 16, "max_n_holes": 8}
CLAM_REF_PATCH = 512


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


def load_inputs(quick: bool) -> list[tuple[str, str, np.ndarray, float | None, float, Path | None]]:
    """(name, label, rgb, mask mpp or None, level-0 px per image px, slide) per input image."""

    import hsafast
    from hsafast.tissue import TissueConfig, working_image

    config = TissueConfig()
    inputs = []
    with hsafast.open_slide(ROOT / IMAGES[1][1]) as tcga:
        level = tcga.read_level(1)
        inputs.append(("tcga_level1", "TCGA level 1", level, None, tcga.level_downsamples[1], None))
    for name, rel, mpp, label in IMAGES[:3] if quick else IMAGES:
        with hsafast.open_slide(ROOT / rel, mpp=mpp) as slide:
            rgb, mask_mpp, _ = working_image(slide, config)
            ds = slide.dimensions[0] / rgb.shape[1]
        inputs.append((name, label, rgb, mask_mpp, ds, ROOT / rel))
    return inputs


def interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, timed in alternation after one warm-up each.

    Alternating keeps a busy machine's load swings from favouring one method.
    """
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def save_figure(name: str, label: str, rgb: np.ndarray, ours: np.ndarray, clam: np.ndarray) -> Path:
    """Two small panels (hsafast | CLAM-style before its area filter), palette PNG."""
    from PIL import Image, ImageDraw

    height = 180
    scale = height / rgb.shape[0]
    size = (max(1, round(rgb.shape[1] * scale)), height)
    panels = []
    for mask in (ours, clam):
        image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        image[m == 0] = (image[m == 0] * 0.35 + 255 * 0.15).astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, (0, 200, 0), 1)
        panels.append(image)
    gap = np.full((height, 6, 3), 255, np.uint8)
    strip = np.hstack([panels[0], gap, panels[1]])
    canvas = np.full((height + 16, strip.shape[1], 3), 255, np.uint8)
    canvas[16:] = strip
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.text((2, 2), f"{label}: hsafast", fill=(0, 0, 0))
    draw.text((panels[0].shape[1] + 8, 2), "CLAM-style (S>8, before area filter)", fill=(0, 0, 0))
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"tissue_{name}.png"
    image.quantize(colors=48).save(path, optimize=True)
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tissue", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="three images, three repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="native threads (default 1: one slide per worker, as cohort runs use it; 0: all)",
    )
    parser.add_argument("--figures", action="store_true", help="write bench/figures/tissue_*.png")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)

    from hsafast._native import core
    from hsafast.slides import open_slide
    from hsafast.tissue import TissueConfig, detect_tissue, detect_tissue_image

    core.set_num_threads(args.threads)
    logging.getLogger("hsafast.tissue").setLevel(logging.ERROR)  # pixel-unit notices
    config = TissueConfig()
    histolab = histolab_masker()
    table = Table(
        "tissue",
        [
            "image",
            "pixels",
            "hsafast_ms",
            "clam_ms",
            "clam/hsafast",
            "histolab_ms",
            "histolab/hsafast",
            "slide_ms",
            "tissue_hsafast",
            "tissue_clam_raw",
            "clam_kept",
            "iou_clam_raw",
        ],
    )
    started = time.perf_counter()
    for name, label, rgb, mask_mpp, ds, slide_path in load_inputs(args.quick):
        ours = detect_tissue_image(rgb, mask_mpp, config).mask
        clam_raw, clam_kept, _ = clam_style(rgb, ds)
        fns: list[Callable[[], object]] = [
            lambda: detect_tissue_image(rgb, mask_mpp, config),  # noqa: B023
            lambda: clam_style(rgb, ds),  # noqa: B023
        ]
        if histolab is not None:
            fns.append(lambda: histolab(rgb))  # noqa: B023
        medians = interleaved_medians(fns, repeats)
        t_ours, t_clam = medians[0], medians[1]
        t_hl = medians[2] if histolab is not None else float("nan")
        t_slide = float("nan")
        if slide_path is not None:  # reading the thumbnail included
            mpp = next(m for n, _, m, _ in IMAGES if n == name)
            t_slide = interleaved_medians(
                [lambda: detect_tissue(open_slide(slide_path, mpp=mpp), config)],  # noqa: B023
                max(3, repeats // 3),
            )[0]
        table.add(
            name,
            f"{rgb.shape[1]}x{rgb.shape[0]}",
            t_ours * 1e3,
            t_clam * 1e3,
            t_clam / t_ours,
            t_hl * 1e3,
            t_hl / t_ours,
            t_slide * 1e3,
            round(float(ours.mean()), 3),
            round(float((clam_raw > 0).mean()), 3),
            len(clam_kept),
            round(iou(ours, clam_raw > 0), 3),
        )
        if args.figures and name != "tcga_level1":
            save_figure(name, label, rgb, ours, clam_raw > 0)
    table.notes = {
        "command": "python -m bench " + " ".join(["tissue", *argv]),
        "repeats": repeats,
        "threads": core.get_num_threads(),
        "clam_params": {**CLAM_SEG, **CLAM_FILTER, "ref_patch_size": CLAM_REF_PATCH},
        "histolab": "not importable" if histolab is None else "filter chain of histolab.masks",
        "seconds": round(time.perf_counter() - started, 1),
    }
    table.print()
    path = table.save(["opencv-python-headless", "scikit-image", "histolab"])
    print(f"saved {path}")
    return 0
