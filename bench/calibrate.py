"""Where thresholds come from: ``python -m bench calibrate stain|register [--quick]``.

Not a speed benchmark: it measures, on training data that no accuracy figure is
reported on, the two distributions each threshold has to separate, and prints
them next to the default in use, so every threshold's origin can be rerun.

``stain`` (simulated tiles and slides, seeds 1000+; the stain tests and benchmarks
use other seeds, and real images are only ever checked, never fitted):

* eosin-coloured pixels per tile: hematoxylin-DAB tiles (nuclear, membranous and
  cytoplasmic staining, stain vectors drawn as the simulator draws them) against the
  tiles of simulated H&E slides -> ``QuantifyConfig.max_eosin_pixels``;
* DAB 1+ share of the tissue (each slide's own stain vectors) on hematoxylin-only
  tiles against tiles whose nuclei are 1 % stained -> ``no_dab_fraction``;
* unstained nuclei in DAB rings per stained nucleus, nuclear staining against
  cytoplasmic and membranous staining -> ``max_dab_holes``, and the mean DAB of those
  holes' rings -> ``hsafast.stain.pattern.RING_DAB``;
* the positive share's error against the truth as nuclei shrink to a few pixels
  -> ``min_nucleus_px``.

``cells``: the share of each simulated cell type (tumour, immune, stromal) that the
tumour-like rule scores, per marker, with and without its grouping tests
(:func:`cells_calibration`).

``register``: see :func:`register_calibration`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench._common import Table

SEED = 1000


def _ihc_matrix(rng: np.random.Generator) -> object:
    """A stain matrix drawn as the simulator draws an IHC slide's stains."""
    from hsafast.stain import HED, StainMatrix
    from hsafast.synth.optics import random_style

    style = random_style("ihc", rng)
    h, d = (v * s for v, s in zip(style.vectors, style.strength, strict=True))
    return StainMatrix(("hematoxylin", "eosin", "dab"), np.stack([h, HED.rgb_from_stains[1], d]))


def _tiles(compartment: str, n: int, rng: np.random.Generator, **kw: object) -> list[object]:
    from hsafast.synth.ihc_tile import render_ihc_tile

    out = []
    for _ in range(n):
        spacing = float(rng.choice([2.0, 2.3, 2.6, 3.4])) if compartment == "nuclear" else None
        out.append(
            render_ihc_tile(
                256,
                compartment=compartment,  # type: ignore[arg-type]
                spacing=spacing,
                density=float(rng.uniform(0.4, 0.8)),
                matrix=_ihc_matrix(rng),  # type: ignore[arg-type]
                **{"background_dab": float(rng.choice([0.0, 0.03, 0.06])), **kw},  # type: ignore[arg-type]
                seed=int(rng.integers(1 << 30)),
            )
        )
    return out


def _he_tiles(n_cases: int, size: int) -> np.ndarray:
    """Tissue tiles (>= 5 % tissue) of simulated H&E slides."""
    from hsafast.slides import open_slide
    from hsafast.stain.deconvolution import PixelThresholds, pixel_stats
    from hsafast.synth import make_cohort

    with tempfile.TemporaryDirectory() as tmp:
        cohort = make_cohort(tmp, n_cases, slide_size=size, seed=SEED, workers=2)
        found = []
        for case in cohort.cases:
            with open_slide(cohort.out_dir / case.he_path) as slide:
                w, h = slide.dimensions
                gy, gx = np.mgrid[0 : h - 255 : 256, 0 : w - 255 : 256]
                coords = np.stack([gx.ravel(), gy.ravel()], 1)
                tiles = slide.read_regions(coords, 0, (256, 256))
            tissue = pixel_stats(tiles, thresholds=PixelThresholds())[:, 0]
            found.append(tiles[tissue >= 0.05 * 256 * 256])
    return np.concatenate(found)


def stain_calibration(quick: bool) -> Table:
    from hsafast.stain import QuantifyConfig, detect_cells, get_marker, pixel_stats
    from hsafast.stain.deconvolution import PixelThresholds, eosin_share
    from hsafast.stain.pattern import RING_DAB, hole_rings
    from hsafast.stain.vectors import estimate_hdab
    from hsafast.synth.ihc_tile import render_ihc_tile
    from hsafast.synth.scoring import compare_cells

    cfg = QuantifyConfig()
    rng = np.random.default_rng(SEED)
    n = 40 if quick else 120
    columns = ["threshold", "default", "training set", "n", "p50", "p99 or p1", "max or min"]
    table = Table("calibrate_stain", columns)
    ki67 = get_marker("ki67")

    # eosin-coloured pixels per tile
    hdab = [t.rgb for c in ("nuclear", "membranous", "cytoplasmic") for t in _tiles(c, n // 3, rng)]
    e_hdab = eosin_share(np.stack(hdab))
    e_he = eosin_share(_he_tiles(3 if quick else 6, 2048))
    table.add("max_eosin_pixels", cfg.max_eosin_pixels, "H-DAB tiles", len(e_hdab),
              *np.percentile(e_hdab, [50, 99]), float(e_hdab.max()))  # fmt: skip
    table.add("", "", "H&E tiles (simulated slides)", len(e_he),
              *np.percentile(e_he, [50, 1]), float(e_he.min()))  # fmt: skip

    # DAB 1+ share with each slide's own vectors: hematoxylin only vs 1 % stained nuclei
    thr = PixelThresholds()

    def dab1(tiles: list[object]) -> np.ndarray:
        out = []
        for t in tiles:
            rgb = t.rgb[None]  # type: ignore[attr-defined]
            px = pixel_stats(rgb, estimate_hdab(rgb), thr)[0]
            out.append(px[1] / max(px[0], 1.0))
        return np.array(out)

    none = dab1(_tiles("nuclear", n, rng, positive_fraction=0.0, background_dab=0.0))
    one = dab1(_tiles("nuclear", n, rng, positive_fraction=0.01, positive_od=(0.35, 0.9)))
    one = one[one > 0]  # tiles where the 1 % drew no stained nucleus say nothing
    table.add("no_dab_fraction", cfg.no_dab_fraction, "hematoxylin-only tiles", len(none),
              *np.percentile(none, [50, 99]), float(none.max()))  # fmt: skip
    table.add("", "", "tiles with a stained nucleus (1 %)", len(one),
              *np.percentile(one, [50, 1]), float(one.min()))  # fmt: skip

    # nuclear pattern: unstained nuclei in DAB rings per stained nucleus, and the ring DAB
    # of every hole before the floor (as a share of 1+)
    def holes(compartment: str) -> tuple[np.ndarray, np.ndarray]:
        ratios, rings = [], []
        for t in _tiles(compartment, n // 2, rng, positive_fraction=float(rng.uniform(0.05, 0.95))):
            rgb = t.rgb  # type: ignore[attr-defined]
            m = estimate_hdab(rgb)
            cells = detect_cells(rgb, m, 0.5, ki67, cfg.cells)[0]
            stained = int((cells.grade >= 1).sum())
            ring = hole_rings(rgb, m, 0.5, ki67, cfg.cells, stained=cells)[1]
            rings.append(ring)
            h = int((ring >= RING_DAB * ki67.dab_thresholds[0]).sum())  # as dab_holes counts
            if h + stained >= 5:
                ratios.append(h / max(stained, 1))
        return np.array(ratios), np.concatenate(rings) / ki67.dab_thresholds[0]

    (nuc, nuc_rings), (cyto, cyto_rings), (memb, memb_rings) = (
        holes(c) for c in ("nuclear", "cytoplasmic", "membranous")
    )
    other = np.concatenate([cyto, memb])
    table.add("max_dab_holes", cfg.max_dab_holes, "nuclear staining", len(nuc),
              *np.percentile(nuc, [50, 99]), float(nuc.max()))  # fmt: skip
    table.add("", "", "cytoplasmic + membranous", len(other),
              *np.percentile(other, [50, 1]), float(other.min()))  # fmt: skip
    table.add("RING_DAB", RING_DAB, "hole rings, nuclear staining", len(nuc_rings),
              *np.percentile(nuc_rings, [50, 99]), float(nuc_rings.max()))  # fmt: skip
    for name, rings in (("cytoplasmic", cyto_rings), ("membranous", memb_rings)):
        table.add("", "", f"hole rings, {name}", len(rings),
                  *np.percentile(rings, [50, 1]), float(rings.min()))  # fmt: skip

    # resolution: positive share error as nuclei shrink
    every = QuantifyConfig().cells.__class__(
        tumour_min_area_um2=0, tumour_min_width_um=0, tumour_min_fill=0, tumour_min_neighbours=0
    )
    for radius in (2.8, 3.5):
        for mpp in (0.5, 1.0, 1.25, 1.5, 2.0):
            errors = []
            for s in range(4 if quick else 8):
                t = render_ihc_tile(
                    max(64, int(160 / mpp)), mpp=mpp, nucleus_radius_um=radius, seed=SEED + s
                )
                c = detect_cells(t.rgb, estimate_hdab(t.rgb), mpp, ki67, every)[0]
                errors.append(compare_cells(c, t.cells_xy, t.positive, radius / mpp)["abs_error"])
            table.add("min_nucleus_px", cfg.min_nucleus_px,
                      f"{2 * radius:g} um nuclei at {mpp:g} um/px ({2 * radius / mpp:.1f} px)",
                      len(errors), float(np.median(errors)), float(np.max(errors)), "")  # fmt: skip
    return table


def cells_calibration(quick: bool) -> Table:
    """What the tumour-like rule keeps of each simulated cell type (seed 1000 cohorts).

    Every detected nucleus is matched (within 3 um) to the simulator's cell table; the
    rows give, per marker and rule, the share of detected tumour, immune and stromal
    nuclei the rule scores and how much of the scored set is tumour. The limits are
    published sizes and plain geometry (``CellConfig``, ``Marker.tumour_min_area_um2``);
    this shows what they do on slides no accuracy is reported on.
    """
    from dataclasses import replace

    from scipy.spatial import cKDTree

    from hsafast.reading import read_tiles
    from hsafast.slides import open_slide
    from hsafast.stain import CellConfig, QuantifyConfig, detect_cells, get_marker
    from hsafast.stain.quantification import _slide_matrix
    from hsafast.synth import load_truth, make_cohort
    from hsafast.tiling import tissue_grid

    default = CellConfig()
    rules = {
        "size and shape only": replace(default, tumour_min_neighbours=0, tumour_min_group_share=0),
        "+ 2 neighbours (no group share)": replace(default, tumour_min_group_share=0),
        "default (+ group share)": default,
    }
    columns = ["marker", "rule", "cases", "tumour kept", "immune kept", "stromal kept",
               "scored that are tumour (median case)"]  # fmt: skip
    table = Table("calibrate_cells", columns)
    n_cases, size = (6, 2048) if quick else (24, 3072)
    with tempfile.TemporaryDirectory() as tmp:
        cohort = make_cohort(tmp, n_cases, slide_size=size, seed=SEED, workers=2)
        found: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        for case in cohort.cases:
            truth = load_truth(cohort.out_dir, case.case_id)
            present = truth.cells["in_ihc"].astype(int) == 1
            txy = np.stack([truth.cells["ihc_x"], truth.cells["ihc_y"]], 1).astype(float)[present]
            kind = np.asarray(truth.cells["type"])[present]
            scored_for = get_marker(case.marker)
            with open_slide(cohort.out_dir / case.ihc_path) as slide:
                grid = tissue_grid(slide, mpp=slide.mpp, size=256, min_tissue=0.05)
                matrix = _slide_matrix(slide, grid, QuantifyConfig())
                batches = list(read_tiles(slide, grid, batch_size=32))
                mpp = float(slide.mpp or 0.5)
            for name, rule in rules.items():
                xy, scored, k = [], [], 0
                for batch in batches:
                    for j, c in enumerate(detect_cells(batch.tiles, matrix, mpp, scored_for, rule)):
                        xy.append(c.xy + grid.coords[k + j])
                        scored.append(c.scored)
                    k += len(batch.tiles)
                pts = np.concatenate(xy)
                dist, idx = cKDTree(txy).query(pts, distance_upper_bound=3.0 / mpp)
                hit = np.isfinite(dist)
                types = np.where(hit, kind[np.minimum(idx, len(kind) - 1)], "")
                found.setdefault((case.marker, name), []).append((types, np.concatenate(scored)))
    for (marker_name, name), cases in sorted(found.items()):
        all_types = np.concatenate([t for t, _ in cases])
        all_scored = np.concatenate([s for _, s in cases])

        def kept(kind: str, t: np.ndarray = all_types, s: np.ndarray = all_scored) -> float:
            return float(s[t == kind].mean()) if (t == kind).any() else float("nan")

        purity = [float((s & (t == "tumour")).sum() / s.sum()) for t, s in cases if s.any()]
        table.add(marker_name, name, len(cases), kept("tumour"), kept("immune"), kept("stroma"),
                  float(np.median(purity)) if purity else float("nan"))  # fmt: skip
    return table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench calibrate")
    parser.add_argument("what", choices=("stain", "cells", "register"))
    parser.add_argument("--quick", action="store_true", help="smaller training sets")
    args = parser.parse_args(argv)
    if args.what == "stain":
        table = stain_calibration(args.quick)
    elif args.what == "cells":
        table = cells_calibration(args.quick)
    else:
        table = register_calibration(args.quick)
    table.print()
    print(f"wrote {table.save(['opencv-python-headless', 'scipy'])}")
    return 0


def _known_sources() -> dict[str, np.ndarray]:
    """Real images that no registration accuracy figure is reported on."""
    import cv2

    import hsafast

    root = Path(__file__).resolve().parents[1] / "tests" / "data"
    with hsafast.open_slide(root / "tcga-cr-7395-01a-01-ts1.svs", mpp=1.0) as slide:
        tcga = slide.thumbnail(900)[0]
    with hsafast.open_slide(root / "multi_frame_jpeg2000_camelyon_challenge_image.dcm") as slide:
        camelyon = slide.thumbnail(900)[0]
    kidney = cv2.imread(str(root / "paired" / "birl_rat_kidney" / "Rat-Kidney_PanCytokeratin.jpg"))
    return {"TCGA frozen H&E": tcga, "CAMELYON H&E": camelyon, "kidney IHC": kidney[..., ::-1]}


def register_calibration(quick: bool) -> Table:
    """Registration thresholds against pairs and non-pairs no accuracy is reported on.

    Pairs: a simulated cohort (seed 1000; accuracy is reported on other seeds and on the
    BIRL pairs) and known-transform pairs made from real images outside the accuracy set
    (TCGA frozen section, CAMELYON lymph node, BIRL kidney IHC). Non-pairs: each simulated
    H&E with two other cases' IHC, and each real source with another's warped copy. Every
    pair is registered with the quality limits switched off, so each measure is seen on
    all of them; the field test is run with the field forced on, against the truth.
    """
    import cv2

    import hsafast
    from hsafast.registration import RegistrationConfig, register
    from hsafast.synth import make_cohort
    from hsafast.synth.known_pairs import make_known_pair, tissue_points

    open_limits = RegistrationConfig(
        min_ncc=-1.0, min_dice=0.0, min_coverage=0.0, min_he_coverage=0.0
    )
    forced = RegistrationConfig(
        min_ncc=-1.0, min_dice=0.0, min_coverage=0.0, min_he_coverage=0.0, field_significance=-1e9
    )
    measures = ("dice", "he_coverage", "ihc_coverage", "ncc")
    seen: dict[str, dict[str, list[float]]] = {"pair": {}, "non-pair": {}}
    passing: list[float] = []  # NCC of non-pairs that pass every other check
    refused: dict[str, list[str]] = {"pair": [], "non-pair": []}
    gains: list[tuple[str, float, bool]] = []

    def record(kind: str, reg: hsafast.Registration) -> None:
        if not reg.quality:
            refused[kind].append(reg.reason)
            return
        for key in measures:
            seen[kind].setdefault(key, []).append(float(reg.quality[key]))
        q, cfg = reg.quality, RegistrationConfig()
        if kind == "non-pair" and (
            q["dice"] >= cfg.min_dice
            and q["ihc_coverage"] >= cfg.min_coverage
            and q["he_coverage"] >= cfg.min_he_coverage
        ):
            passing.append(float(q["ncc"]))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n = 6 if quick else 12
        cohort = make_cohort(root / "cohort", n, slide_size=3072, seed=SEED, workers=2)
        cases = cohort.cases
        for i, case in enumerate(cases):
            truth = cohort.truth(case.case_id)
            with hsafast.open_slide(cohort.out_dir / case.he_path) as he:
                with hsafast.open_slide(cohort.out_dir / case.ihc_path) as ihc:
                    record("pair", register(he, ihc, open_limits))
                    gains.append(_field_effect(he, ihc, forced, truth.landmarks, "simulated"))
                for k in (1, 2):
                    other = cases[(i + k) % len(cases)]
                    with hsafast.open_slide(cohort.out_dir / other.ihc_path) as ihc:
                        record("non-pair", register(he, ihc, open_limits))
        sources = _known_sources()
        warped: dict[str, Path] = {}
        for j, (name, rgb) in enumerate(sources.items()):
            for seed in range(1 if quick else 2):
                pair = make_known_pair(rgb, np.random.default_rng(SEED + seed))
                he_path, ihc_path = root / f"he{j}_{seed}.png", root / f"ihc{j}_{seed}.png"
                cv2.imwrite(str(he_path), pair.he[..., ::-1])
                cv2.imwrite(str(ihc_path), pair.ihc[..., ::-1])
                warped.setdefault(name, ihc_path)
                points = tissue_points(pair.he, 300, np.random.default_rng(seed))
                marks = np.column_stack([points, pair.truth.map(points)])
                with (
                    hsafast.open_slide(he_path, mpp=5.0) as he,
                    hsafast.open_slide(ihc_path, mpp=5.0) as ihc,
                ):
                    record("pair", register(he, ihc, open_limits))
                    gains.append(_field_effect(he, ihc, forced, marks, "known transform"))
        names = list(sources)
        for j in range(len(names)):
            he_path = root / f"he{j}_0.png"
            other = warped[names[(j + 1) % len(names)]]
            with (
                hsafast.open_slide(he_path, mpp=5.0) as he,
                hsafast.open_slide(other, mpp=5.0) as ihc,
            ):
                record("non-pair", register(he, ihc, open_limits))

    cfg = RegistrationConfig()
    table = Table(
        "calibrate_register", ["threshold", "default", "set", "n", "min", "median", "max"]
    )
    for key, name in zip(
        measures, ("min_dice", "min_he_coverage", "min_coverage", "min_ncc"), strict=True
    ):
        for kind in ("pair", "non-pair"):
            v = np.array(seen[kind].get(key, [np.nan]))
            table.add(name, getattr(cfg, name), kind + "s", len(v), float(np.min(v)),
                      float(np.median(v)), float(np.max(v)))  # fmt: skip
    table.add("min_ncc", cfg.min_ncc, "non-pairs passing the other checks", len(passing),
              *_spread(passing))  # fmt: skip
    for kind in ("pair", "non-pair"):
        table.add(
            "refused before registering",
            "",
            kind + "s",
            len(refused[kind]),
            "",
            "",
            "; ".join(sorted(set(refused[kind]))),
        )
    for source in ("simulated", "known transform"):
        for helped in (True, False):
            z = [g[1] for g in gains if g[0] == source and g[2] == helped]
            table.add(
                "field_significance" if helped else "",
                cfg.field_significance if helped else "",
                f"{source}: field {'helped' if helped else 'hurt'}",
                int(np.isfinite(z).sum()),
                *(_spread(z)),
            )
    table.notes["refused"] = refused
    return table


def _spread(values: list[float]) -> tuple[float, float, float]:
    """Min, median and max of the finite values (a pair refused before registering has no
    field gain)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return (np.nan, np.nan, np.nan)
    return float(v.min()), float(np.median(v)), float(v.max())


def _field_effect(
    he: object, ihc: object, forced: object, marks: np.ndarray, source: str
) -> tuple[str, float, bool]:
    """(source, the field's gain in standard errors, whether the field lowered the error)."""
    from hsafast.registration import RegistrationConfig, register

    with_field = register(he, ihc, forced)  # type: ignore[arg-type]
    affine_only = register(he, ihc, RegistrationConfig(nonrigid=False))  # type: ignore[arg-type]

    def error(reg: object) -> float:
        return float(np.median(np.linalg.norm(reg.map(marks[:, :2]) - marks[:, 2:4], axis=1)))  # type: ignore[attr-defined]

    gain = float(with_field.details.get("field_gain", np.nan))
    return source, gain, error(with_field) < error(affine_only)


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
