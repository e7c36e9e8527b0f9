"""Registration accuracy on the real BIRL pairs and on pairs with known transforms."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import hsafast
from hsafast.registration.quality import rtre
from hsafast.synth.known_pairs import make_known_pair, tissue_points

MPP = 5.0  # the 5%-scale BIRL images record no pixel size; any equal value works


def _landmarks(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1)[:, 1:]


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def mouse(birl_mouse: Path):
    he = hsafast.open_slide(birl_mouse / "Izd2-29-041-w35_HE.jpg", backend="image", mpp=MPP)
    ihc = hsafast.open_slide(birl_mouse / "Izd2-29-041-w35_proSPC.jpg", backend="image", mpp=MPP)
    a = _landmarks(birl_mouse / "Izd2-29-041-w35_HE.csv")
    b = _landmarks(birl_mouse / "Izd2-29-041-w35_proSPC.csv")
    return he, ihc, a, b, float(np.hypot(*he.dimensions))


@pytest.fixture(scope="module")
def mouse_registration(mouse):
    he, ihc, *_ = mouse
    return hsafast.register(he, ihc)


def _affine_floor(a: np.ndarray, b: np.ndarray, diag: float) -> float:
    design = np.column_stack([a, np.ones(len(a))])
    coef, *_ = np.linalg.lstsq(design, b, rcond=None)
    return float(np.median(rtre(design @ coef, b, diag)))


def test_mouse_pair_error_before_and_affine_floor(mouse) -> None:
    _, _, a, b, diag = mouse
    assert len(a) == len(b) == 78
    assert np.median(rtre(a, b, diag)) == pytest.approx(0.057, abs=0.0005)
    assert _affine_floor(a, b, diag) == pytest.approx(0.0051, abs=0.0001)


def test_mouse_pair_landmarks(mouse, mouse_registration) -> None:
    _, _, a, b, diag = mouse
    reg = mouse_registration
    assert reg.ok, reg.reason
    floor = _affine_floor(a, b, diag)
    affine = float(np.median(rtre(reg.map(a, nonrigid=False), b, diag)))
    nonrigid = float(np.median(rtre(reg.map(a), b, diag)))
    assert affine <= 1.05 * floor, f"affine rTRE {affine:.5f} vs floor {floor:.5f}"
    # the smooth field goes below what any affine map can reach (measured: 0.74x forward,
    # 0.73x inverse; the single-threshold field of earlier versions reached 0.78x)
    assert nonrigid <= 0.8 * floor, f"non-rigid rTRE {nonrigid:.5f} vs floor {floor:.5f}"
    # and the inverse maps the IHC landmarks back as well
    back = float(np.median(rtre(reg.inverse_map(b), a, diag)))
    assert back <= 0.8 * floor


def test_kidney_pair_registers_plausibly(birl_kidney: Path) -> None:
    he = hsafast.open_slide(birl_kidney / "Rat-Kidney_HE.jpg", backend="image", mpp=MPP)
    ihc = hsafast.open_slide(
        birl_kidney / "Rat-Kidney_PanCytokeratin.jpg", backend="image", mpp=MPP
    )
    reg = hsafast.register(he, ihc)
    assert reg.ok, reg.reason
    assert reg.quality["dice"] > 0.9
    assert not reg.details["flip"]
    # the sections lie nearly the same way up: the affine is close to a small rotation
    lin = reg.affine[:2, :2]
    assert abs(np.degrees(np.arctan2(lin[1, 0], lin[0, 0]))) < 10
    assert np.allclose(np.linalg.svd(lin, compute_uv=False), 1.0, atol=0.1)


def _known_source(name: str, data_dir: Path) -> np.ndarray:
    paired = data_dir / "paired"
    if name == "cmu":
        from hsafast.data import sample_slide_path

        return hsafast.open_slide(sample_slide_path()).thumbnail(900)[0]
    files = {
        "mouse_he": paired / "birl_mouse_lung_lesion" / "Izd2-29-041-w35_HE.jpg",
        "mouse_ihc": paired / "birl_mouse_lung_lesion" / "Izd2-29-041-w35_proSPC.jpg",
        "kidney_he": paired / "birl_rat_kidney" / "Rat-Kidney_HE.jpg",
    }
    return _rgb(files[name])


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
@pytest.mark.parametrize("source", ["mouse_he", "kidney_he", "mouse_ihc", "cmu"])
def test_known_transform_is_recovered(
    source: str, seed: int, data_dir: Path, tmp_path: Path
) -> None:
    """Any rotation, a flip, translation, mild scale/shear and a smooth field of 1%."""
    rng = np.random.default_rng(100 + seed)
    pair = make_known_pair(_known_source(source, data_dir), rng, field_amplitude=0.01)
    he = hsafast.open_slide(_write(tmp_path / "he.png", pair.he), mpp=2.0)
    ihc = hsafast.open_slide(_write(tmp_path / "ihc.png", pair.ihc), mpp=2.0)
    reg = hsafast.register(he, ihc)
    assert reg.ok, reg.reason
    pts = tissue_points(pair.he, 400, rng)
    truth = pair.truth.map(pts)
    diag = float(np.hypot(*pair.ihc.shape[:2]))
    affine = rtre(reg.map(pts, nonrigid=False), truth, diag)
    full = rtre(reg.map(pts), truth, diag)
    # stated tolerances (rTRE): affine stage median 0.4% (it cannot follow the
    # 1% field); with the field median 0.15% and 90th percentile 0.5%
    assert np.median(affine) < 0.004, np.median(affine)
    assert np.median(full) < 0.0015, np.median(full)
    assert np.percentile(full, 90) < 0.005, np.percentile(full, 90)


def test_inverse_map_inverts_map(mouse_registration) -> None:
    rng = np.random.default_rng(3)
    pts = rng.uniform([0, 0], [880, 720], (500, 2))
    back = mouse_registration.inverse_map(mouse_registration.map(pts))
    np.testing.assert_allclose(back, pts, atol=1e-2, err_msg="worst point of inverse(map(x))")
    affine_back = mouse_registration.inverse_map(
        mouse_registration.map(pts, nonrigid=False), nonrigid=False
    )
    np.testing.assert_allclose(affine_back, pts, atol=1e-8)
