"""Registration files, GeoJSON transfer, configuration and paired tiles."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import hsafast
from hsafast.errors import ConfigError, InvalidParameterError, RegistrationError
from hsafast.registration import Registration, RegistrationConfig, paired_tiles
from hsafast.synth.known_pairs import make_known_pair, random_field
from hsafast.synth.tiffwrite import write_array_pyramid


def _random_registration(rng: np.random.Generator, failed: bool = False) -> Registration:
    affine = np.eye(3)
    t = rng.uniform(0, 2 * np.pi)
    affine[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    affine[:2, 2] = rng.uniform(-500, 500, 2)
    return Registration(
        affine=affine,
        field=random_field((40, 50), 30.0, rng),
        field_scale=(16.0, 16.0),
        verdict="failed" if failed else "ok",
        reason="test reason" if failed else "",
        quality={"dice": 0.9},
        he_path="he.svs",
        ihc_path="ihc.svs",
    )


def test_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reg = _random_registration(rng)
    path = reg.save(tmp_path / "case.json")
    assert (tmp_path / "case.field.npz").exists()
    assert path.stat().st_size < 10_000  # a small JSON; the field lives in the NPZ
    loaded = hsafast.load_registration(path)
    pts = rng.uniform(0, 800, (200, 2))
    np.testing.assert_allclose(loaded.map(pts), reg.map(pts), atol=1e-9)
    np.testing.assert_allclose(loaded.inverse_map(pts), reg.inverse_map(pts), atol=1e-9)
    assert loaded.ok and loaded.quality == {"dice": 0.9}


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RegistrationError, match="bad.json"):
        Registration.load(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(RegistrationError, match="not an hsafast registration"):
        Registration.load(other)
    reg = _random_registration(np.random.default_rng(1))
    reg.save(tmp_path / "case.json")
    (tmp_path / "case.field.npz").write_bytes(b"truncated")
    with pytest.raises(RegistrationError, match="case.field.npz"):
        Registration.load(tmp_path / "case.json")


def test_bad_matrices_and_points() -> None:
    with pytest.raises(InvalidParameterError, match="singular"):
        Registration(affine=np.zeros((3, 3)) + np.diag([0, 0, 1]))
    reg = Registration(affine=np.eye(3))
    with pytest.raises(InvalidParameterError, match="shape"):
        reg.map(np.zeros((4, 3)))


def test_geojson_transfer_round_trip() -> None:
    reg = _random_registration(np.random.default_rng(2))
    square = [[100.0, 100.0], [300.0, 100.0], [300.0, 300.0], [100.0, 300.0], [100.0, 100.0]]
    hole = [[150.0, 150.0], [200.0, 150.0], [200.0, 200.0], [150.0, 150.0]]
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"classification": {"name": "Tumor"}},
                "geometry": {"type": "Polygon", "coordinates": [square, hole]},
            },
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Point", "coordinates": [5, 7]},
            },
        ],
    }
    moved = reg.transfer_geojson(collection, "he_to_ihc")
    ring = np.asarray(moved["features"][0]["geometry"]["coordinates"][0])
    np.testing.assert_allclose(ring, reg.map(np.asarray(square)), atol=1e-9)
    assert moved["features"][0]["properties"] == collection["features"][0]["properties"]
    back = reg.transfer_geojson(moved, "ihc_to_he")
    np.testing.assert_allclose(
        np.asarray(back["features"][0]["geometry"]["coordinates"][1]), hole, atol=1e-3
    )
    assert collection["features"][1]["geometry"]["coordinates"] == [5, 7]  # input untouched
    with pytest.raises(InvalidParameterError, match="direction"):
        reg.transfer_geojson(collection, "sideways")


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="unknown registration options"):
        RegistrationConfig.from_dict({"angle_stpe": 2})
    with pytest.raises(ConfigError, match="angle_step"):
        RegistrationConfig(angle_step=0)
    cfg = RegistrationConfig.from_dict(RegistrationConfig(ecc_levels=(4, 2)).to_dict())
    assert cfg.ecc_levels == (4, 2)
    assert cfg.structure_quantiles == RegistrationConfig().structure_quantiles
    # a file written with a single threshold still loads
    assert RegistrationConfig.from_dict({"structure_quantile": 0.25}).structure_quantiles == (0.25,)
    for bad in ((), (0.3, 1.0), (-0.1,)):
        with pytest.raises(ConfigError, match="structure_quantiles"):
            RegistrationConfig(structure_quantiles=bad)


@pytest.fixture(scope="module")
def known_pair(tmp_path_factory: pytest.TempPathFactory, birl_kidney: Path):
    rng = np.random.default_rng(7)
    he_rgb = cv2.cvtColor(cv2.imread(str(birl_kidney / "Rat-Kidney_HE.jpg")), cv2.COLOR_BGR2RGB)
    pair = make_known_pair(he_rgb, rng, field_amplitude=0.005)
    folder = tmp_path_factory.mktemp("pair")
    for name, rgb in (("he.png", pair.he), ("ihc.png", pair.ihc)):
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    he = hsafast.open_slide(folder / "he.png", mpp=2.0)
    ihc = hsafast.open_slide(folder / "ihc.png", mpp=2.0)
    return pair, he, ihc, hsafast.register(he, ihc)


def _od(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.astype(np.float64) + 1) / 256).sum(axis=2)


def _through_truth(pair, coord: np.ndarray, size: int) -> np.ndarray:
    ys, xs = np.indices((size, size), dtype=np.float64)
    pts = np.column_stack([xs.ravel() + coord[0], ys.ravel() + coord[1]])
    q = pair.truth.map(pts).astype(np.float32)
    return cv2.remap(
        pair.ihc,
        q[:, 0].reshape(size, size),
        q[:, 1].reshape(size, size),
        cv2.INTER_LINEAR,
        borderValue=(255, 255, 255),
    )


def _pyramid(path: Path, rgb: np.ndarray) -> Path:
    write_array_pyramid(path, rgb, mpp=0.5)
    return path


def test_paired_tiles_show_the_same_tissue(known_pair) -> None:
    pair, he, ihc, reg = known_pair
    assert reg.ok, reg.reason
    coords = np.array([[300, 250], [500, 400], [700, 300], [420, 560]])
    pairs = list(paired_tiles(he, ihc, reg, coords, 96, 0))
    assert len(pairs) == len(coords)
    for tile in pairs:
        he_tile, ihc_tile, he_coord, ihc_coord = tile
        assert he_tile.shape == ihc_tile.shape == (96, 96, 3)
        # the IHC tile is resampled into the H&E frame: it matches the tile cut
        # through the true transform, and its centre is within 1.5 px of the truth
        ideal = _through_truth(pair, he_coord, 96)
        r = np.corrcoef(_od(ideal).ravel(), _od(ihc_tile).ravel())[0, 1]
        assert r > 0.65, (he_coord, r)
        true_centre = pair.truth.map(he_coord + 47.5)[0]
        assert np.linalg.norm(reg.map(he_coord + 47.5)[0] - true_centre) < 1.5
        centre = reg.map(he_coord + 47.5)[0]
        np.testing.assert_allclose(ihc_coord + 47.5, centre, atol=1.0)
    # without resampling the IHC tile is read as stored, rotated against the H&E
    plain = next(paired_tiles(he, ihc, reg, coords[:1], 96, 0, resample=False))
    assert plain.ihc_tile.shape == (96, 96, 3)


def test_paired_tiles_refuse_failed_registrations(known_pair) -> None:
    _, he, ihc, reg = known_pair
    failed = Registration(affine=reg.affine, verdict="failed", reason="not a pair")
    with pytest.raises(RegistrationError, match="not a pair"):
        next(paired_tiles(he, ihc, failed, np.array([[300, 250]]), 64))
    forced = next(paired_tiles(he, ihc, failed, np.array([[300, 250]]), 64, force=True))
    assert forced.ihc_tile.shape == (64, 64, 3)


def test_paired_tiles_on_a_pyramid_level(known_pair, tmp_path: Path) -> None:
    """Tiles from level 1 of pyramidal slides (read at 4x coarser) match the truth."""
    from hsafast.synth.known_pairs import errors_against_truth

    pair = known_pair[0]
    up = 4  # level 0 is 4x the known pair, level 1 is the known pair itself
    big = {
        k: cv2.resize(v, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
        for k, v in (("he", pair.he), ("ihc", pair.ihc))
    }
    he = hsafast.open_slide(_pyramid(tmp_path / "he.tif", big["he"]))
    ihc = hsafast.open_slide(_pyramid(tmp_path / "ihc.tif", big["ihc"]))
    assert he.level_count >= 2 and he.level_downsamples[1] == pytest.approx(up, rel=1e-3)
    reg = hsafast.register(he, ihc)
    assert reg.ok, reg.reason

    def truth(points: np.ndarray) -> np.ndarray:
        return (pair.truth.map((points + 0.5) / up - 0.5) + 0.5) * up - 0.5

    rng = np.random.default_rng(0)
    tissue_like = rng.uniform([800, 600], [3600, 2400], (300, 2))
    assert (
        errors_against_truth(reg, truth, tissue_like, float(np.hypot(*ihc.dimensions)))["median"]
        < 0.002
    )
    coords = np.array([[1200, 1000], [2000, 1600]])
    for tile in paired_tiles(he, ihc, reg, coords, 64, 1):
        ys, xs = np.indices((64, 64), dtype=np.float64)
        p0 = np.column_stack(
            [
                tile.he_coord[0] + (xs.ravel() + 0.5) * 4 - 0.5,
                tile.he_coord[1] + (ys.ravel() + 0.5) * 4 - 0.5,
            ]
        )
        q = ((truth(p0) + 0.5) / up - 0.5).astype(np.float32)  # in the known pair's pixels
        ideal = cv2.remap(
            pair.ihc,
            q[:, 0].reshape(64, 64),
            q[:, 1].reshape(64, 64),
            cv2.INTER_LINEAR,
            borderValue=(255, 255, 255),
        )
        r = np.corrcoef(_od(ideal).ravel(), _od(tile.ihc_tile).ravel())[0, 1]
        assert tile.ihc_tile.shape == (64, 64, 3) and r > 0.8, (tile.he_coord, r)


def test_paired_tiles_equal_a_tile_by_tile_reference(known_pair) -> None:
    """The batched reading (both slides through read_tiles) gives, tile by tile, what
    reading each IHC window on its own and resampling it through the map's local
    linear part gives; non-square tiles too."""
    _, he, ihc, reg = known_pair
    coords = np.array([[300, 250], [500, 400], [700, 300], [420, 560], [-20, 100]])
    w, h = 80, 56
    got = list(paired_tiles(he, ihc, reg, coords, (w, h), 0, batch=2, workers=1))
    assert [t.he_coord.tolist() for t in got] == coords.tolist()
    for tile, coord in zip(got, coords, strict=True):
        np.testing.assert_array_equal(tile.he_tile, he.read_region(coord, 0, (w, h)))
        centre_he = coord + np.array([w, h]) / 2.0 - 0.5
        centre = reg.map(centre_he)[0]
        jac = reg.local_linear(centre_he)
        # output pixel o -> IHC level 0: centre + jac @ (o - tile centre)
        ys, xs = np.indices((h, w), dtype=np.float64)
        offs = np.stack([xs - (w - 1) / 2.0, ys - (h - 1) / 2.0], axis=-1)
        q = centre + offs @ jac.T
        x0, y0 = np.floor(q.reshape(-1, 2).min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(q.reshape(-1, 2).max(axis=0)).astype(int) + 3
        window = ihc.read_region((x0, y0), 0, (x1 - x0, y1 - y0))
        ref = cv2.remap(
            window,
            (q[..., 0] - x0).astype(np.float32),
            (q[..., 1] - y0).astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(255, 255, 255),
        )
        diff = np.abs(ref.astype(int) - tile.ihc_tile.astype(int))
        worst = np.unravel_index(int(diff.argmax()), diff.shape)
        # the two resample the same pixels with float32 coordinates of different origins
        assert diff.max() <= 2, f"tile {coord.tolist()}: max diff {diff.max()} at {worst}"
    plain = list(paired_tiles(he, ihc, reg, coords, (w, h), 0, resample=False, batch=3))
    for tile in plain:
        assert tile.ihc_tile.shape == (h, w, 3)
        np.testing.assert_array_equal(tile.ihc_tile, ihc.read_region(tile.ihc_coord, 0, (w, h)))
