"""Fidelity of the simulator: pixels agree with the ground truth, and the biology link
is as strong as asked (and absent in the negative control)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import spearmanr

from hsafast.slides import open_slide
from hsafast.synth import load_truth, make_cohort, plan_cases
from hsafast.synth.markers import P53_STRONG
from hsafast.synth.model import CaseSpec, build_case

SIZE = 2048
#: DAB concentration (optical density along the slide's own DAB vector) that counts as stained.
DAB_POSITIVE = 0.12
#: Hematoxylin concentration of a counterstained nucleus.
NUCLEUS = 0.25


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("fidelity")
    return make_cohort(out, 3, slide_size=SIZE, predictability=0.8, seed=3, workers=2)


def _deconvolve(rgb: np.ndarray, stains: dict) -> tuple[np.ndarray, np.ndarray]:
    """Two-stain colour deconvolution (Ruifrok-Johnston) with the slide's stain vectors."""
    vectors = np.asarray(stains["vectors"]) * np.asarray(stains["strength"])[:, None]
    od = -np.log10(np.maximum(rgb, 1) / 255.0) - np.asarray(stains["background_od"])
    conc = od.reshape(-1, 3) @ np.linalg.pinv(vectors)
    return conc[:, 0].reshape(rgb.shape[:2]), conc[:, 1].reshape(rgb.shape[:2])


def _ihc(cohort, case):
    truth = load_truth(cohort.out_dir, case.case_id)
    stains = json.loads((truth.folder / "stains.json").read_text())["ihc"]
    with open_slide(case.ihc_path) as slide:
        rgb = slide.read_region((0, 0), 0, slide.dimensions)
    return truth, stains, rgb


def _true_area_fraction(truth, x: int, y: int, tile: int) -> tuple[float, int]:
    """Positive share of the nuclear area of the cells whose centres lie in the tile."""
    c = truth.cells
    inside = (
        (c["in_ihc"] == 1)
        & (c["ihc_x"] >= x)
        & (c["ihc_x"] < x + tile)
        & (c["ihc_y"] >= y)
        & (c["ihc_y"] < y + tile)
    )
    area = c["nucleus_major_px"][inside] * c["nucleus_minor_px"][inside]
    positive = c["dab_positive"][inside] == 1
    return float(area[positive].sum() / max(area.sum(), 1e-9)), int(inside.sum())


@pytest.mark.parametrize("marker", ["ki67", "p53"])
def test_deconvolution_recovers_tile_positive_fraction(cohort, marker: str) -> None:
    """Nuclear markers: per 256-px tile, DAB-positive nuclear area / nuclear area from a
    colour deconvolution matches the true positive fraction of the nuclear area (from the
    cell table) to within 0.2 per tile (overlapping nuclei in crowded tiles count once)
    and 0.06 on average."""
    case = next(c for c in cohort.cases if c.marker == marker)
    truth, stains, rgb = _ihc(cohort, case)
    hema, dab = _deconvolve(rgb, stains)
    tile = 256
    est, true = [], []
    for y in range(0, SIZE, tile):
        for x in range(0, SIZE, tile):
            frac, n = _true_area_fraction(truth, x, y, tile)
            if n < 15:
                continue
            # objects smaller than a 3x3 square (necrotic dust, JPEG ringing) are not nuclei
            pos = ndimage.binary_opening(dab[y : y + tile, x : x + tile] > DAB_POSITIVE)
            nuclei = pos | ndimage.binary_opening(hema[y : y + tile, x : x + tile] > NUCLEUS)
            est.append(pos.sum() / max(nuclei.sum(), 1))
            true.append(frac)
    est_a, true_a = np.asarray(est), np.asarray(true)
    assert len(est_a) >= 5
    err = np.abs(est_a - true_a)
    worst = int(err.argmax())
    assert err.max() <= 0.2, f"tile {worst}: estimated {est_a[worst]:.3f}, true {true_a[worst]:.3f}"
    assert err.mean() <= 0.06, f"mean error {err.mean():.3f}"


def _stained_membrane_px(truth, coords: np.ndarray, tile: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Summed membrane length (px) of the stained tumour and immune cells of each tile:
    each cell's ring is its nucleus outline scaled by the cell body (tumour: 1.45 in
    glands, 1.75 in nests; immune cells 1.35, as the renderer draws them)."""
    c = truth.cells
    kind = np.asarray(c["type"])
    body = 1.45 if truth.labels.get("architecture") == "glandular" else 1.75
    scale = np.where(kind == "tumour", body, 1.35)
    axes = c["nucleus_major_px"].astype(float) + c["nucleus_minor_px"].astype(float)
    length = np.pi * axes / 2 * scale
    stained = (c["in_ihc"].astype(int) == 1) & (c["dab_positive"].astype(float) > 0)
    stained &= kind != "stroma"
    x, y = c["ihc_x"].astype(float), c["ihc_y"].astype(float)
    return np.array(
        [
            length[stained & (x >= x0) & (x < x0 + tile) & (y >= y0) & (y < y0 + tile)].sum()
            for x0, y0 in coords
        ]
    )


def test_membranous_dab_follows_true_fraction(cohort) -> None:
    case = next(c for c in cohort.cases if c.marker == "pdl1")
    truth, stains, rgb = _ihc(cohort, case)
    _, dab = _deconvolve(rgb, stains)
    tile = 256
    gy, gx = np.mgrid[0:SIZE:tile, 0:SIZE:tile]
    coords = np.stack([gx.ravel(), gy.ravel()], 1)
    _, _, _, n_all, _ = truth.tile_counts(coords, tile, space="ihc")
    keep = n_all >= 15
    area = [(dab[y : y + tile, x : x + tile] > DAB_POSITIVE).mean() for x, y in coords[keep]]
    # membranes of large tumour cells and of small immune cells differ in length, so the
    # stained area follows the stained cells' summed membrane length, not their number
    # (on this case the number alone gives 0.64: its stained cells are mostly immune)
    rho = spearmanr(area, _stained_membrane_px(truth, coords[keep], tile))[0]
    assert keep.sum() >= 8 and rho > 0.8, rho


def _on_nucleus(density: np.ndarray, x: float, y: float, radius: int = 15) -> float:
    """Distance from (x, y) to the centroid of the dark blob under it (inf if none)."""
    xi, yi = round(x), round(y)
    win = density[yi - radius : yi + radius + 1, xi - radius : xi + radius + 1]
    if win.shape != (2 * radius + 1, 2 * radius + 1):
        return np.inf
    # a nucleus is the connected region at least 60% as dark as the point's surroundings
    level = max(
        0.5 * NUCLEUS, 0.6 * float(np.median(win[radius - 2 : radius + 3, radius - 2 : radius + 3]))
    )
    labels, _ = ndimage.label(ndimage.binary_fill_holes(win > level))
    blob = labels[radius, radius]
    if blob == 0:
        return np.inf
    if win[labels == blob].mean() < NUCLEUS:  # stroma, not a nucleus
        return np.inf
    cy, cx = ndimage.center_of_mass(labels == blob)
    return float(np.hypot(cx - radius + (xi - x), cy - radius + (yi - y)))


def test_landmarks_land_on_the_same_nuclei(cohort) -> None:
    for case in cohort.cases:
        truth = load_truth(cohort.out_dir, case.case_id)
        stains = json.loads((truth.folder / "stains.json").read_text())
        densities = {}
        for stain, path in (("he", case.he_path), ("ihc", case.ihc_path)):
            with open_slide(path) as slide:
                rgb = slide.read_region((0, 0), 0, slide.dimensions)
            c1, c2 = _deconvolve(rgb, stains[stain])
            # a nucleus is dark in hematoxylin, or in DAB when stained (IHC)
            densities[stain] = c1 + (np.maximum(c2, 0) if stain == "ihc" else 0)
        lm = truth.landmarks
        he = [_on_nucleus(densities["he"], x, y) for x, y in lm[:, :2]]
        ihc = [_on_nucleus(densities["ihc"], x, y) for x, y in lm[:, 2:]]
        # and the same check fails for points off by one nucleus diameter
        off = [_on_nucleus(densities["ihc"], x + 14, y) for x, y in lm[:, 2:]]
        he_ok, ihc_ok = np.mean(np.asarray(he) < 4), np.mean(np.asarray(ihc) < 4)
        assert he_ok >= 0.8 and ihc_ok >= 0.8, (case.case_id, he_ok, ihc_ok)
        assert np.mean(np.asarray(off) < 4) < 0.5 * ihc_ok  # neighbours are hit less often


def _visible_grade(model) -> float:
    """A morphology score a pathologist sees: tumour nuclear size and hyperchromasia."""
    tumour = model.cells.kind == 0
    area = (model.cells.a * model.cells.b)[tumour]
    return float(np.log(area.mean()) + model.cells.darkness[tumour].mean())


@pytest.mark.parametrize("predictability", [0.0, 0.9])
def test_predictability_sets_the_link_from_morphology_to_labels(predictability: float) -> None:
    specs = plan_cases(150, ("ki67", "p53", "pdl1"), (1024, 1024), predictability, seed=11)
    grade, fraction, high = [], [], []
    for spec in specs:
        model = build_case(spec)
        if (model.cells.kind == 0).sum() < 10:
            continue
        grade.append(_visible_grade(model))
        fraction.append(model.labels["tumour_positive_fraction"])
        high.append(model.labels["label"] == "intermediate/high")
    assert len(grade) >= 100
    assert 0.2 < np.mean(high) < 0.8  # both classes present
    rho_fraction = spearmanr(grade, fraction)[0]
    rho_label = spearmanr(grade, high)[0]
    if predictability == 0.0:
        # negative control: nothing H&E shows predicts the label (|rho| < ~2.5 sd under H0)
        assert abs(rho_fraction) < 0.25 and abs(rho_label) < 0.25, (rho_fraction, rho_label)
    else:
        assert rho_fraction > 0.4 and rho_label > 0.4, (rho_fraction, rho_label)


def _p53_case(independent: float, seed: int) -> object:
    spec = CaseSpec(
        "c", "p", "p53", (seed, 0), 1536, 1536, predictability=0.0, independent=independent
    )
    return build_case(spec)


def test_p53_patterns() -> None:
    found: dict[str, object] = {}
    for seed in range(40):
        model = _p53_case(2.0 if seed % 4 else -1.5, seed)
        found.setdefault(model.labels["p53_pattern"], model)
        if len(found) == 3:
            break
    assert set(found) == {"wild-type", "overexpression", "null"}
    for pattern, model in found.items():
        c, e, present = model.cells, model.expression, model.present
        tumour = (c.kind == 0) & present
        control = (c.kind != 0) & present
        pos_t = (e.positive & tumour).sum() / tumour.sum()
        strong_t = (e.positive & tumour & (e.intensity >= P53_STRONG)).sum() / tumour.sum()
        if pattern == "overexpression":
            assert strong_t >= 0.8
            assert model.labels["label"] == "intermediate/high"
        elif pattern == "null":
            assert pos_t == 0 and (e.positive & control).sum() > 0  # internal control
            assert model.labels["label"] == "low" and model.labels["p53_aberrant"]
        else:
            assert 0 < pos_t < 0.8
            # scattered and variable: weak to moderate, never uniformly strong
            assert e.intensity[e.positive & tumour].std() > 0.05
