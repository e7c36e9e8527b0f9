"""Registration speed and accuracy: ``python -m bench register [--quick] [--repeats N]``.

Side by side on the same inputs, 2 threads for OpenCV:
* hsafast.register (affine only, and with the non-rigid field);
* a feature-matching peer: OpenCV SIFT + ratio test + RANSAC affine, on the
  grey images (the classic alternative to intensity-based registration).

Inputs: the two real 5%-scale BIRL pairs (rTRE from the 78 mouse landmarks),
pairs with known transforms made from real images (any rotation, flips, mild
scale/shear, a smooth 1% field), and unless ``--quick`` a generated whole-slide
pair: a pyramidal tiled TIFF (about 14k x 9.4k pixels at level 0) registered
from its low-resolution levels. Writes bench/out/register.json and, with
``--figures``, before/after overlays under bench/figures/.

``--synth N [--size PX] [--seed S]`` instead registers a simulated cohort of N
pairs (``hsafast.synth``, all three markers) from the slides' low-resolution
levels: seconds per pair, the error against the true transform at the landmark
nuclei (median and 90th percentile of the per-pair medians, affine and final
map), failures, and how many H&E slides were accepted as pairs of another
case's IHC (each H&E against the next case's IHC). Writes
bench/out/register_synth.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench._common import Table, median_seconds

ROOT = Path(__file__).resolve().parents[1]
PAIRED = ROOT / "tests" / "data" / "paired"
MOUSE = PAIRED / "birl_mouse_lung_lesion"
KIDNEY = PAIRED / "birl_rat_kidney"
FIGURES = ROOT / "bench" / "figures"


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _landmarks(path: Path) -> np.ndarray:

    return np.loadtxt(path, delimiter=",", skiprows=1)[:, 1:]


def sift_affine(he_rgb: np.ndarray, ihc_rgb: np.ndarray) -> np.ndarray | None:
    """Peer: SIFT keypoints on grey images, Lowe's ratio test, RANSAC affine (H&E -> IHC)."""
    sift = cv2.SIFT_create(nfeatures=4000)
    k1, d1 = sift.detectAndCompute(cv2.cvtColor(he_rgb, cv2.COLOR_RGB2GRAY), None)
    k2, d2 = sift.detectAndCompute(cv2.cvtColor(ihc_rgb, cv2.COLOR_RGB2GRAY), None)
    if d1 is None or d2 is None or len(k1) < 3 or len(k2) < 3:
        return None
    matches = cv2.BFMatcher().knnMatch(d1, d2, k=2)
    good = [m for m, n in (p for p in matches if len(p) == 2) if m.distance < 0.8 * n.distance]
    if len(good) < 3:
        return None
    p1 = np.float32([k1[m.queryIdx].pt for m in good])
    p2 = np.float32([k2[m.trainIdx].pt for m in good])
    matrix, _ = cv2.estimateAffine2D(p1, p2, method=cv2.RANSAC, ransacReprojThreshold=5.0)
    return None if matrix is None else np.vstack([matrix, [0.0, 0.0, 1.0]])


def _apply(matrix: np.ndarray | None, pts: np.ndarray) -> np.ndarray:
    if matrix is None:
        return np.full_like(pts, np.nan)
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


def _median_rtre(pred: np.ndarray, target: np.ndarray, diag: float) -> float:
    from hsafast.registration.quality import rtre

    return float(np.median(rtre(pred, target, diag)))


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _write_figure(path: Path, rgb: np.ndarray) -> None:
    """A PNG with a 256-colour palette, to keep figures in the repository small."""
    from PIL import Image

    Image.fromarray(rgb).quantize(256).save(path, optimize=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench register")
    parser.add_argument("--quick", action="store_true", help="skip the whole-slide pair")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--figures", action="store_true", help="write overlay PNGs")
    parser.add_argument("--synth", type=int, default=0, help="simulated cohort of N pairs")
    parser.add_argument("--size", type=int, default=4096, help="simulated slide side, px")
    parser.add_argument("--seed", type=int, default=0, help="simulated cohort seed")
    args = parser.parse_args(argv)
    cv2.setNumThreads(2)
    if args.synth:
        return synth_cohort(args.synth, args.size, args.seed)

    import hsafast
    from hsafast.registration import RegistrationConfig, register
    from hsafast.registration.quality import rtre
    from hsafast.synth.known_pairs import make_known_pair, tissue_points

    affine_only = RegistrationConfig(nonrigid=False)
    table = Table(
        "register",
        ["pair", "method", "seconds", "median rTRE %", "p90 rTRE %", "verdict"],
    )

    # ---- real pairs --------------------------------------------------------------
    he = hsafast.open_slide(MOUSE / "Izd2-29-041-w35_HE.jpg", backend="image", mpp=5.0)
    ihc = hsafast.open_slide(MOUSE / "Izd2-29-041-w35_proSPC.jpg", backend="image", mpp=5.0)
    a = _landmarks(MOUSE / "Izd2-29-041-w35_HE.csv")
    b = _landmarks(MOUSE / "Izd2-29-041-w35_proSPC.csv")
    diag = float(np.hypot(*he.dimensions))
    design = np.column_stack([a, np.ones(len(a))])
    coef, *_ = np.linalg.lstsq(design, b, rcond=None)
    table.add("mouse lung", "none (identity)", 0.0, 100 * _median_rtre(a, b, diag), None, "")
    table.add(
        "mouse lung",
        "affine fit to landmarks (floor)",
        0.0,
        100 * _median_rtre(design @ coef, b, diag),
        None,
        "",
    )
    for name, cfg in (("hsafast affine", affine_only), ("hsafast affine+field", None)):
        reg = register(he, ihc, cfg)
        secs = median_seconds(lambda cfg=cfg: register(he, ihc, cfg), args.repeats, 1)
        err = rtre(reg.map(a), b, diag)
        table.add(
            "mouse lung",
            name,
            secs,
            100 * np.median(err),
            100 * np.percentile(err, 90),
            reg.verdict,
        )
    he_rgb, ihc_rgb = (
        _rgb(MOUSE / "Izd2-29-041-w35_HE.jpg"),
        _rgb(MOUSE / "Izd2-29-041-w35_proSPC.jpg"),
    )
    m = sift_affine(he_rgb, ihc_rgb)
    secs = median_seconds(lambda: sift_affine(he_rgb, ihc_rgb), args.repeats, 1)
    err = rtre(_apply(m, a), b, diag)
    table.add(
        "mouse lung",
        "peer: SIFT+RANSAC affine",
        secs,
        100 * np.median(err),
        100 * np.percentile(err, 90),
        "",
    )

    khe = hsafast.open_slide(KIDNEY / "Rat-Kidney_HE.jpg", backend="image", mpp=5.0)
    kihc = hsafast.open_slide(KIDNEY / "Rat-Kidney_PanCytokeratin.jpg", backend="image", mpp=5.0)
    for name, cfg in (("hsafast affine", affine_only), ("hsafast affine+field", None)):
        reg = register(khe, kihc, cfg)
        secs = median_seconds(lambda cfg=cfg: register(khe, kihc, cfg), args.repeats, 1)
        table.add(
            "rat kidney (no 1:1 landmarks)",
            name,
            secs,
            None,
            None,
            f"{reg.verdict} dice={reg.quality.get('dice')} ncc={reg.quality.get('ncc')}",
        )

    if args.figures:
        from hsafast.registration.overlay import checkerboard, registered_thumbnails, two_colour

        FIGURES.mkdir(parents=True, exist_ok=True)
        for tag, (s1, s2) in {"mouse": (he, ihc), "kidney": (khe, kihc)}.items():
            reg = register(s1, s2)
            rows = []
            for draw in (checkerboard, two_colour):
                panels = [
                    draw(*registered_thumbnails(s1, s2, r, max_size=320)) for r in (None, reg)
                ]
                sep = np.zeros((panels[0].shape[0], 6, 3), np.uint8)
                rows.append(np.hstack([panels[0], sep, panels[1]]))
            gap = np.zeros((6, rows[0].shape[1], 3), np.uint8)
            _write_figure(FIGURES / f"register_{tag}.png", np.vstack([rows[0], gap, rows[1]]))

    # ---- known transforms --------------------------------------------------------
    sources = {
        "mouse H&E": he_rgb,
        "mouse IHC": ihc_rgb,
        "kidney H&E": _rgb(KIDNEY / "Rat-Kidney_HE.jpg"),
    }
    from hsafast.data import sample_slide_path

    sources["CMU-1"] = hsafast.open_slide(sample_slide_path()).thumbnail(900)[0]
    errs: dict[str, list[np.ndarray]] = {"hsafast affine+field": [], "peer: SIFT+RANSAC affine": []}
    times: dict[str, list[float]] = {k: [] for k in errs}
    failures = 0
    seeds = range(2 if args.quick else 4)
    with tempfile.TemporaryDirectory() as tmp:
        for img in sources.values():
            for seed in seeds:
                rng = np.random.default_rng(seed)
                pair = make_known_pair(img, rng, field_amplitude=0.01)
                s1 = hsafast.open_slide(_write(Path(tmp) / "he.png", pair.he), mpp=2.0)
                s2 = hsafast.open_slide(_write(Path(tmp) / "ihc.png", pair.ihc), mpp=2.0)
                pts = tissue_points(pair.he, 500, rng)
                truth = pair.truth.map(pts)
                d = float(np.hypot(*pair.ihc.shape[:2]))
                t0 = time.perf_counter()
                reg = register(s1, s2)
                times["hsafast affine+field"].append(time.perf_counter() - t0)
                failures += not reg.ok
                errs["hsafast affine+field"].append(rtre(reg.map(pts), truth, d))
                t0 = time.perf_counter()
                m = sift_affine(pair.he, pair.ihc)
                times["peer: SIFT+RANSAC affine"].append(time.perf_counter() - t0)
                errs["peer: SIFT+RANSAC affine"].append(rtre(_apply(m, pts), truth, d))
    n = len(sources) * len(seeds)
    for name in errs:
        per_pair = np.array([np.median(e) for e in errs[name]])
        allpts = np.concatenate(errs[name])
        table.add(
            f"known transforms ({n} pairs)",
            name,
            float(np.median(times[name])),
            100 * float(np.nanmedian(per_pair)),
            100 * float(np.nanpercentile(allpts, 90)),
            f"{failures} failed"
            if name.startswith("hsafast")
            else f"worst pair {100 * np.nanmax(per_pair):.2f}%",
        )

    # ---- generated whole-slide pair ------------------------------------------------
    if not args.quick:
        from hsafast.synth.tiffwrite import write_array_pyramid

        with tempfile.TemporaryDirectory() as tmp:
            rng = np.random.default_rng(11)
            pair = make_known_pair(_rgb(KIDNEY / "Rat-Kidney_HE.jpg"), rng, 0.01)
            up = 12
            big_he = cv2.resize(pair.he, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
            big_ihc = cv2.resize(pair.ihc, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
            write_array_pyramid(Path(tmp) / "he.tif", big_he, 0.5)
            write_array_pyramid(Path(tmp) / "ihc.tif", big_ihc, 0.5)
            s1 = hsafast.open_slide(Path(tmp) / "he.tif", mpp=0.5)
            s2 = hsafast.open_slide(Path(tmp) / "ihc.tif", mpp=0.5)
            reg = register(s1, s2)
            secs = median_seconds(lambda: register(s1, s2), args.repeats, 0)
            pts = tissue_points(pair.he, 500, rng)
            truth = (pair.truth.map(pts) + 0.5) * up - 0.5
            got = reg.map((pts + 0.5) * up - 0.5)
            e = rtre(got, truth, float(np.hypot(*s2.dimensions)))
            dims = "x".join(map(str, s1.dimensions))
            table.add(
                f"generated WSI {dims}, {s1.level_count} levels",
                "hsafast affine+field",
                secs,
                100 * np.median(e),
                100 * np.percentile(e, 90),
                reg.verdict,
            )

    table.notes["threads"] = 2
    table.print()
    print("saved", table.save(["opencv-python-headless", "scipy", "scikit-image", "tifffile"]))
    return 0


def synth_cohort(n_cases: int, size: int, seed: int) -> int:
    """Register a simulated cohort and compare with its true transforms."""
    import csv

    import hsafast
    from hsafast.registration.quality import rtre
    from hsafast.synth import load_truth, make_cohort

    table = Table(
        "register_synth",
        ["pairs", "map", "s / pair", "median rTRE %", "p90 rTRE %", "median um", "result"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_cohort(root, n_cases=n_cases, slide_size=size, seed=seed)
        made = time.perf_counter() - t0
        with open(root / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        seconds, failed, accepted, kept = [], [], 0, 0
        errors: dict[str, list[float]] = {"affine": [], "final": []}
        microns: dict[str, list[float]] = {"affine": [], "final": []}
        nonpair_ncc, pair_ncc = [], []
        for k, row in enumerate(rows):
            he = hsafast.open_slide(root / row["he_path"])
            ihc = hsafast.open_slide(root / row["ihc_path"])
            t0 = time.perf_counter()
            reg = hsafast.register(he, ihc)
            seconds.append(time.perf_counter() - t0)
            pair_ncc.append(reg.quality.get("ncc", float("nan")))
            if not reg.ok:
                failed.append(f"{row['case_id']}: {reg.reason}")
            kept += reg.field is not None
            truth = load_truth(root, row["case_id"])
            he_xy = truth.landmarks[:, :2].astype(np.float64)
            diagonal = float(np.hypot(*ihc.dimensions))
            for name, nonrigid in (("affine", False), ("final", True)):
                err = rtre(reg.map(he_xy, nonrigid=nonrigid), truth.map_he_to_ihc(he_xy), diagonal)
                errors[name].append(float(np.median(err)))
                microns[name].append(float(np.median(err)) * diagonal * ihc.mpp)
            other = rows[(k + 1) % len(rows)]
            wrong = hsafast.register(he, hsafast.open_slide(root / other["ihc_path"]))
            accepted += wrong.ok
            nonpair_ncc.append(wrong.quality.get("ncc", float("nan")))
    for name in ("affine", "final"):
        e = 100 * np.array(errors[name])
        table.add(
            f"{n_cases} simulated {size}x{size}",
            name if name == "affine" else f"affine+field (field kept on {kept})",
            float(np.median(seconds)),
            float(np.median(e)),
            float(np.percentile(e, 90)),
            float(np.median(microns[name])),
            f"{len(failed)} failed, worst pair {e.max():.3f}%",
        )
    table.add(
        f"{n_cases} non-pairs (H&E vs next case's IHC)",
        "verdict",
        None,
        None,
        None,
        None,
        f"{accepted} accepted; score: pairs >= {np.nanmin(pair_ncc):.3f}, "
        f"non-pairs <= {np.nanmax(nonpair_ncc):.3f}",
    )
    table.notes.update(threads=2, cohort_seconds=round(made, 1), failures=failed)
    table.print()
    print("saved", table.save(["opencv-python-headless", "scipy", "tifffile"]))
    return 0
