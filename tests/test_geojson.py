"""The shared QuPath GeoJSON writer: tile heatmaps and polygons (tissue masks)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hsafast.errors import InvalidParameterError
from hsafast.geojson import (
    feature_collection,
    polygon_feature,
    stable_id,
    write_geojson,
    write_tiles,
)


def test_tiles_parse_back_with_their_measurements(tmp_path):
    rng = np.random.default_rng(0)
    n = 20_000  # more than one block of the writer
    coords = rng.integers(0, 3_000_000, size=(n, 2))  # level-0 coordinates above 1e6
    values = rng.random(n)
    tiny = rng.random(n) * 1e-6
    values[7] = np.nan
    path = write_tiles(tmp_path / "t.geojson", coords, 512, {"a b": values, "t": tiny}, key="s/k")
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == n
    for i in (0, 7, 8191, 8192, n - 1):
        f = data["features"][i]
        x, y = (int(v) for v in coords[i])
        ring = f["geometry"]["coordinates"][0]
        assert ring == [[x, y], [x + 512, y], [x + 512, y + 512], [x, y + 512], [x, y]]
        assert f["properties"]["objectType"] == "tile"
        m = f["properties"]["measurements"]
        if i == 7:
            assert m["a b"] is None
        else:
            assert m["a b"] == pytest.approx(values[i], rel=1e-6)
        assert m["t"] == pytest.approx(tiny[i], rel=1e-6)
        assert f["id"] == stable_id(f"s/k/{i}")
    assert len({f["id"] for f in data["features"]}) == n


def test_tiles_reject_mismatched_input(tmp_path):
    with pytest.raises(InvalidParameterError, match="3 values for 2 tiles"):
        write_tiles(tmp_path / "x", np.zeros((2, 2)), 8, {"v": np.ones(3)}, key="k")
    with pytest.raises(InvalidParameterError, match="N x 2"):
        write_tiles(tmp_path / "x", np.zeros(4), 8, {}, key="k")
    with pytest.raises(InvalidParameterError, match="objectType"):
        write_tiles(tmp_path / "x", np.zeros((1, 2)), 8, {}, key="k", object_type="cell")
    assert not (tmp_path / "x").exists()


def test_polygon_features_reproduce_tissue_mask_geojson(cmu_svs, tmp_path):
    """TissueMask can switch to the shared writer without changing a byte of its output."""
    from hsafast.tissue import detect_tissue

    mask = detect_tissue(cmu_svs)
    expected = mask.to_geojson()
    stem = mask.slide_path.name
    features = [
        polygon_feature(
            rings,
            key=f"tissue/{stem}/{i}",
            name=f"Tissue {i + 1}",
            classification="Tissue",
            color=(0, 170, 0),
        )
        for i, rings in enumerate(mask.contours())
    ]
    assert feature_collection(features) == expected
    path = write_geojson(tmp_path / "m.geojson", feature_collection(features))
    assert json.loads(path.read_text()) == expected
