"""Heatmaps: GeoJSON tiles and PNG overlays with a colour bar, from a SlideResult."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hsafast.errors import InvalidParameterError
from hsafast.heatmaps import heatmap_image, save_heatmaps
from hsafast.scoring.results import MarkerResult, SlideResult


def make_result(n_side: int = 30, positivity: bool = True) -> SlideResult:
    ys, xs = np.mgrid[:n_side, :n_side]
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64) * 512
    rng = np.random.default_rng(0)
    pos = (xs.ravel() / (n_side - 1)).astype(np.float32)  # a left-to-right gradient
    att = rng.random(len(coords)).astype(np.float32)
    return SlideResult(
        slide_id="s1",
        markers={
            "ki67": MarkerResult(
                "ki67",
                ("low", "high"),
                np.array([0.3, 0.7]),
                "high",
                attention=att / att.sum(),
                positivity=pos if positivity else None,
            )
        },
        coords=coords,
        patch_size_level0=512,
        target_mpp=0.5,
    )


def test_positivity_overlay_follows_the_values_and_has_a_colour_bar():
    result = make_result()
    size0 = (30 * 512, 30 * 512)
    thumb = np.full((300, 300, 3), 230, np.uint8)
    image = heatmap_image(result, "ki67", "positivity", thumb, size0, max_side=600)
    assert image.dtype == np.uint8 and image.shape[0] == 600 and image.shape[1] > 600
    left, right = image[300, 5].astype(int), image[300, 594].astype(int)
    # viridis: low values are purple (blue > green), high values yellow (green > blue)
    assert left[2] > left[1] and right[1] > right[2]
    bar = image[:, 600:]
    assert (bar.std(axis=(0, 1)) > 10).all()  # the bar and its labels are drawn


def test_save_heatmaps_writes_geojson_and_pngs(tmp_path):
    result = make_result(12)
    written = save_heatmaps(result, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["s1.ki67.attention.png", "s1.ki67.geojson", "s1.ki67.positivity.png"]
    data = json.loads((tmp_path / "s1.ki67.geojson").read_text())
    m = data["features"][5]["properties"]["measurements"]
    assert m["ki67 positivity"] == pytest.approx(float(result.markers["ki67"].positivity[5]), 1e-6)
    assert m["ki67 attention"] == pytest.approx(
        float(result.markers["ki67"].attention[5]) * 144, 1e-5
    )


def test_slide_mode_has_no_positivity_map(tmp_path):
    result = make_result(5, positivity=False)
    with pytest.raises(InvalidParameterError, match="patch-mode"):
        heatmap_image(result, "ki67", "positivity")
    assert [p.name for p in save_heatmaps(result, tmp_path)] == [
        "s1.ki67.geojson",
        "s1.ki67.attention.png",
    ]
    with pytest.raises(InvalidParameterError, match="no marker 'p53'"):
        heatmap_image(result, "p53", "attention")
