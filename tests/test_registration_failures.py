"""Inputs that are not a registrable pair get a failed verdict with the reason."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import hsafast
from hsafast.errors import RegistrationError

MPP = 5.0


def _open(path: Path, mpp: float = MPP):
    return hsafast.open_slide(path, backend="image", mpp=mpp)


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_empty_slide(birl_mouse: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(242, 4, (700, 850, 3)), 0, 255).astype(np.uint8)
    reg = hsafast.register(
        _open(birl_mouse / "Izd2-29-041-w35_HE.jpg"), _open(_write(tmp_path / "glass.png", glass))
    )
    assert not reg.ok
    assert "no tissue found on the IHC slide" in reg.reason


def test_not_a_pair(birl_mouse: Path, birl_kidney: Path) -> None:
    reg = hsafast.register(
        _open(birl_kidney / "Rat-Kidney_HE.jpg"), _open(birl_mouse / "Izd2-29-041-w35_proSPC.jpg")
    )
    assert not reg.ok and reg.reason
    with pytest.raises(RegistrationError, match="failed"):
        reg.require_ok()


def test_very_different_pixel_sizes(birl_mouse: Path) -> None:
    reg = hsafast.register(
        _open(birl_mouse / "Izd2-29-041-w35_HE.jpg", mpp=5.0),
        _open(birl_mouse / "Izd2-29-041-w35_proSPC.jpg", mpp=0.5),
    )
    assert not reg.ok
    assert "pixel sizes differ" in reg.reason


def test_control_tissue_dominates_the_ihc(birl_mouse: Path, data_dir: Path, tmp_path: Path) -> None:
    """An IHC slide whose largest tissue is a control piece, not the section."""
    ihc = _rgb(birl_mouse / "Izd2-29-041-w35_proSPC.jpg")
    control = cv2.resize(_rgb(data_dir / "skimage_ihc.png"), (1400, 1400))
    canvas = np.full((1400, ihc.shape[1] + 1450, 3), 250, np.uint8)
    canvas[: ihc.shape[0], : ihc.shape[1]] = ihc
    canvas[:, ihc.shape[1] + 50 :] = control
    reg = hsafast.register(
        _open(birl_mouse / "Izd2-29-041-w35_HE.jpg"), _open(_write(tmp_path / "ihc.png", canvas))
    )
    assert not reg.ok
    assert "control" in reg.reason
