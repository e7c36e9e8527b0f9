"""Every backend returns the same pixels as OpenSlide for the same region.

The tile decoders follow OpenSlide's libjpeg settings, so JPEG and JPEG 2000
tiles are expected to match exactly; the tolerance allowed anywhere is 1 grey
level (different JPEG decoders may round differently) and the tests below
check for 0 where we measured 0. Regions are deliberately not aligned to the
files' tiles, cross tile and slide edges and lie partly outside the slide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from slide_files import make_pyramid_tiff

import hsafast
from hsafast.errors import MissingPixelSizeError, SlideError
from hsafast.slides import BACKENDS
from hsafast.slides import tiled_level as tiled_level_module

TIFF_BACKENDS = ["tifffile"] + (["cucim"] if "cucim" in BACKENDS else [])


def assert_pixels_equal(got: np.ndarray, ref: np.ndarray, tol: int, what: str) -> None:
    """Fail with the worst pixel (index, values) when |got - ref| exceeds ``tol``."""
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    assert diff.max() <= tol, (
        f"{what}: max difference {diff.max()} at {worst} (got {got[worst]}, expected "
        f"{ref[worst]}), {int((diff > tol).sum())} values above {tol}"
    )


def unaligned_locations(width: int, height: int, ds: float, tile: int) -> np.ndarray:
    """Level-0 corners: inside, across tile edges, at the slide edge, partly outside."""
    level = [
        (0, 0),
        (tile - 17, tile - 5),
        (3 * tile + 101, tile + 7),
        (width // int(ds) - 100, height // int(ds) - 60),
        (-37, 45),
        (width // int(ds) // 2, -80),
    ]
    return np.array([(round(x * ds), round(y * ds)) for x, y in level], dtype=np.int64)


@pytest.fixture(scope="module")
def pyramid(cmu_svs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pyramid_tiff(cmu_svs, tmp_path_factory.mktemp("pyr") / "cmu_pyramid.tif")


def compare_with_openslide(
    path: Path, backend: str, size: tuple[int, int], mpp: float | None
) -> None:
    ref = hsafast.open_slide(path, backend="openslide", mpp=mpp)
    with hsafast.open_slide(path, backend=backend, mpp=mpp) as slide:
        assert slide.level_dimensions == ref.level_dimensions
        np.testing.assert_allclose(slide.level_downsamples, ref.level_downsamples, rtol=1e-6)
        assert slide.mpp == pytest.approx(ref.mpp)
        for level in range(slide.level_count):
            ds = ref.level_downsamples[level]
            tile = 240 if path.suffix == ".svs" and "CMU" in path.name else 256
            locs = unaligned_locations(*ref.dimensions, ds if ds == int(ds) else 1, tile)
            got = slide.read_regions(locs, level, size, workers=2)
            for i, loc in enumerate(locs):
                expected = ref.read_region(loc, level, size)
                assert_pixels_equal(got[i], expected, 0, f"{backend} level {level} at {loc}")
                single = slide.read_region(loc, level, size)
                assert_pixels_equal(single, expected, 0, f"{backend} read_region at {loc}")
    ref.close()


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_cmu_svs_same_pixels(cmu_svs: Path, backend: str) -> None:
    compare_with_openslide(cmu_svs, backend, (300, 200), None)


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_generated_pyramid_same_pixels(pyramid: Path, backend: str) -> None:
    compare_with_openslide(pyramid, backend, (256, 256), None)


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_tcga_jpeg2000_same_pixels(tcga_svs: Path, backend: str) -> None:
    ref = hsafast.open_slide(tcga_svs, backend="openslide", mpp=0.25)
    slide = hsafast.open_slide(tcga_svs, backend=backend, mpp=0.25)
    assert slide.level_dimensions == ref.level_dimensions
    assert slide.mpp == 0.25
    # level 0: unaligned regions; level 1 (downsample 2.0005): OpenSlide interpolates
    # when x / downsample is fractional, so use corners where it is (nearly) whole
    ds1 = ref.level_downsamples[1]
    cases = [
        (0, unaligned_locations(*ref.dimensions, 1, 256)),
        (1, np.array([[0, 0], [2 * 5, 2 * 3], [3959, 0]], dtype=np.int64)),
    ]
    for level, locs in cases:
        if level == 1:
            frac = np.abs(locs / ds1 - np.rint(locs / ds1))
            assert frac.max() < 1 / 256, "test corners must map to whole level-1 pixels"
        got = slide.read_regions(locs, level, (260, 190))
        for i, loc in enumerate(locs):
            expected = ref.read_region(loc, level, (260, 190))
            assert_pixels_equal(got[i], expected, 0, f"{backend} J2K level {level} at {loc}")


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_metadata_and_associated_images(cmu_svs: Path, backend: str) -> None:
    ref = hsafast.open_slide(cmu_svs, backend="openslide")
    with hsafast.open_slide(cmu_svs, backend=backend) as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert slide.objective_power == 20
        assert set(slide.associated_image_names) == set(ref.associated_image_names)
        for name in ref.associated_image_names:
            assert_pixels_equal(
                slide.associated_image(name), ref.associated_image(name), 0, f"{backend} {name}"
            )
        with pytest.raises(SlideError, match="no associated image"):
            slide.associated_image("nonexistent")


def test_tcga_without_pixel_size(tcga_svs: Path) -> None:
    slide = hsafast.open_slide(tcga_svs, backend="tifffile")
    with pytest.raises(MissingPixelSizeError, match="tcga-cr-7395"):
        _ = slide.mpp
    assert slide.objective_power is None
    assert slide.associated_image_names == ("thumbnail",)


def test_python_decoder_matches_native(
    cmu_svs: Path, pyramid: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The imagecodecs fallback (used without libjpeg-turbo) gives the same pixels."""
    for path in (cmu_svs, pyramid):
        native = hsafast.open_slide(path, backend="tifffile")
        monkeypatch.setattr(tiled_level_module, "_FORCE_PYTHON", True)
        fallback = hsafast.open_slide(path, backend="tifffile")
        monkeypatch.setattr(tiled_level_module, "_FORCE_PYTHON", False)
        assert not fallback.native_decoding  # type: ignore[attr-defined]
        for level in range(native.level_count):
            locs = unaligned_locations(*native.dimensions, native.level_downsamples[level], 240)
            assert_pixels_equal(
                fallback.read_regions(locs, level, (250, 230), workers=2),
                native.read_regions(locs, level, (250, 230), workers=2),
                0,
                f"{path.name} level {level}: imagecodecs vs native",
            )


@pytest.mark.parametrize(
    "name",
    [
        "multiframe_camelyon_challenge_image.dcm",
        "multi_frame_jpeg2000_camelyon_challenge_image.dcm",
    ],
)
def test_dicom_matches_its_frames(data_dir: Path, name: str) -> None:
    """OpenSlide's DICOM reading (JPEG and JPEG 2000 frames) against frames decoded apart."""
    pydicom = pytest.importorskip("pydicom")
    import imagecodecs

    path = data_dir / name
    ds = pydicom.dcmread(path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    width, height = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
    across = -(-width // cols)
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    decode = imagecodecs.jpeg2k_decode if frames[0][:2] == b"\xff\x4f" else imagecodecs.jpeg8_decode
    full = np.full((-(-height // rows) * rows, across * cols, 3), 255, dtype=np.uint8)
    for k, frame in enumerate(frames):
        r, c = divmod(k, across)
        full[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols] = decode(frame)
    full = full[:height, :width]
    spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    with hsafast.open_slide(path) as slide:
        assert slide.backend_name == "openslide"
        assert slide.dimensions == (width, height)
        assert slide.mpp == pytest.approx(float(spacing[1]) * 1000, rel=1e-3)
        for x, y, w, h in [(0, 0, 300, 200), (250, 130, 333, 301), (1000, 600, 152, 100)]:
            got = slide.read_region((x, y), 0, (w, h))
            expected = np.full((h, w, 3), 255, dtype=np.uint8)
            inside = full[y : y + h, x : x + w]
            expected[: inside.shape[0], : inside.shape[1]] = inside
            assert_pixels_equal(got, expected, 1, f"{name} at {x},{y}")
        batch = slide.read_regions(np.array([[250, 130], [0, 0]]), 0, (300, 200), workers=2)
        assert_pixels_equal(batch[1], full[:200, :300], 1, f"{name} batched")


def test_auto_backend_choice(cmu_svs: Path, pyramid: Path, dicom_jpeg: Path, ihc_png: Path) -> None:
    assert hsafast.open_slide(cmu_svs).backend_name == "tifffile"
    assert hsafast.open_slide(pyramid).backend_name == "tifffile"
    assert hsafast.open_slide(dicom_jpeg).backend_name == "openslide"
    assert hsafast.open_slide(ihc_png, mpp=0.5).backend_name == "image"


def test_resolution_units_and_non_square_pixels(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    cases = {
        "square_cm.tif": ((40000.0, 40000.0), "CENTIMETER", 0.25),
        "square_inch.tif": ((101600.0, 101600.0), "INCH", 0.25),
        "screen_dpi.tif": ((72.0, 72.0), "INCH", None),
        "no_unit.tif": ((1.0, 1.0), "NONE", None),
    }
    for name, (res, unit, mpp) in cases.items():
        path = tmp_path / name
        tifffile.imwrite(path, img, tile=(256, 256), resolution=res, resolutionunit=unit)
        slide = hsafast.open_slide(path, backend="tifffile")
        if mpp is None:
            with pytest.raises(MissingPixelSizeError):
                _ = slide.mpp
        else:
            assert slide.mpp == pytest.approx(mpp)
        assert_pixels_equal(slide.read_level(0), img, 0, name)
    path = tmp_path / "non_square.tif"
    tifffile.imwrite(
        path, img, tile=(256, 256), resolution=(40000.0, 20000.0), resolutionunit="CENTIMETER"
    )
    with pytest.raises(SlideError, match="non-square"):
        _ = hsafast.open_slide(path, backend="tifffile").mpp


def test_reduced_reading_is_close_to_area_resize(pyramid: Path) -> None:
    """DCT-domain 1/2 and 1/4 decoding against full decoding + area averaging."""
    import cv2

    slide = hsafast.open_slide(pyramid, backend="tifffile")
    if not slide.native_decoding:  # type: ignore[attr-defined]
        pytest.skip("DCT-domain scaling needs the native libjpeg-turbo decoder")
    generic = hsafast.open_slide(pyramid, backend="openslide")
    locs = np.array([[512, 512], [1024, 1536], [300, 700]], dtype=np.int64)
    for reduce in (2, 4):
        assert slide.decodes_reduced(0, reduce)
        fast = slide.read_regions(locs, 0, (128, 128), reduce=reduce)
        slow = generic.read_regions(locs, 0, (128, 128), reduce=reduce)  # read + INTER_AREA
        for i, (x, y) in enumerate(locs):
            full = generic.read_region((x, y), 0, (128 * reduce, 128 * reduce))
            area = cv2.resize(full, (128, 128), interpolation=cv2.INTER_AREA)
            assert_pixels_equal(slow[i], area, 0, "fallback reduce")
        diff = np.abs(fast.astype(np.int16) - slow.astype(np.int16))
        # scaled IDCT is a different low-pass than a box filter: close, not identical
        assert diff.mean() < 2.0, f"reduce {reduce}: mean difference {diff.mean():.2f}"
        assert np.percentile(diff, 99) <= 12, f"reduce {reduce}: p99 {np.percentile(diff, 99)}"


def test_closed_slide_refuses_reads(cmu_svs: Path) -> None:
    slide = hsafast.open_slide(cmu_svs, backend="tifffile")
    slide.close()
    slide.close()  # closing twice is harmless
    with pytest.raises(SlideError, match="closed"):
        slide.read_region((0, 0), 0, (10, 10))
