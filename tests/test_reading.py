"""read_tiles: every tile of the grid, in grid order, equal to a plain region read."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from slide_files import make_pyramid_tiff

import hsafast
from hsafast import TileBatch, TileGrid, read_tiles
from hsafast.errors import InvalidParameterError, SlideError
from hsafast.reading import read_plan


def make_grid(
    path: Path, coords: np.ndarray, read_size: int, size: int, level: int = 0
) -> TileGrid:
    return TileGrid(
        slide_path=path,
        coords=np.asarray(coords, dtype=np.int64),
        tissue_fraction=np.linspace(0.3, 1.0, len(coords)),
        level=level,
        read_size=read_size,
        size=size,
        patch_size_level0=read_size,
        target_mpp=0.499 * read_size / size,
    )


def grid_coords(width: int, height: int, step: int, offset: int = 0) -> np.ndarray:
    xs = np.arange(offset, width, step)
    ys = np.arange(offset, height, step)
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.int64)


@pytest.fixture(scope="module")
def pyramid(cmu_svs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-level YCbCr JPEG TIFF (256-px tiles) of CMU-1's pixels, downsamples 2 and 4."""
    return make_pyramid_tiff(cmu_svs, tmp_path_factory.mktemp("reading") / "pyramid.tif")


def test_tiles_equal_region_reads_in_order(cmu_svs: Path) -> None:
    slide = hsafast.open_slide(cmu_svs)
    ref = hsafast.open_slide(cmu_svs, backend="openslide")
    # 256-px tiles on a file of 240-px tiles: every tile spans up to four file tiles;
    # the last row and column run past the slide edge
    coords = grid_coords(*slide.dimensions, 256, offset=13)
    rng = np.random.default_rng(3)
    coords = coords[rng.permutation(len(coords))]  # any order is kept as given
    grid = make_grid(cmu_svs, coords, 256, 256)
    batches = list(read_tiles(slide, grid, batch_size=17, workers=2))
    assert [b.start for b in batches] == list(range(0, len(coords), 17))
    assert all(isinstance(b, TileBatch) for b in batches)
    got = np.concatenate([b.tiles for b in batches])
    np.testing.assert_array_equal(np.concatenate([b.coords for b in batches]), coords)
    assert got.shape == (len(coords), 256, 256, 3) and got.dtype == np.uint8
    for i in rng.choice(len(coords), 25, replace=False):
        expected = ref.read_region(coords[i], 0, (256, 256))
        diff = np.abs(got[i].astype(int) - expected).max()
        assert diff == 0, f"tile {i} at {coords[i]} differs by {diff}"


def test_worker_counts_give_identical_batches(pyramid: Path) -> None:
    coords = grid_coords(2220, 2964, 256)
    grid = make_grid(pyramid, coords, 256, 256)
    one = np.concatenate([b.tiles for b in read_tiles(pyramid, grid, 32, workers=1)])
    three = np.concatenate([b.tiles for b in read_tiles(pyramid, grid, 32, workers=3)])
    np.testing.assert_array_equal(one, three)


def test_short_batches_are_shared_by_every_worker(pyramid: Path) -> None:
    # a grid smaller than batch_size (a small tissue section, the last batch) is
    # still cut into one chunk per worker, each on its own reader thread
    slide = hsafast.open_slide(pyramid)
    threads: list[str] = []
    read_regions = slide.read_regions

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return read_regions(*args, **kwargs)  # type: ignore[arg-type]

    slide.read_regions = spy  # type: ignore[method-assign]
    coords = grid_coords(1024, 768, 256)[:9]
    batches = list(read_tiles(slide, make_grid(pyramid, coords, 256, 256), 64, workers=2))
    assert len(batches) == 1 and len(batches[0].tiles) == 9
    assert len(threads) == 2 and all(t.startswith("hsafast-read") for t in threads)


@pytest.mark.parametrize("level", [0, 1])
def test_resized_tiles_equal_area_resize(pyramid: Path, level: int) -> None:
    """read_size 384 -> size 256 (no DCT scaling possible): read, then INTER_AREA."""
    ref = hsafast.open_slide(pyramid, backend="openslide")
    ds = int(ref.level_downsamples[level])
    coords = grid_coords(2220, 2964, 384 * ds, offset=40)[:20]
    grid = make_grid(pyramid, coords, 384, 256, level=level)
    slide = hsafast.open_slide(pyramid)
    assert read_plan(slide, grid).resize
    got = np.concatenate([b.tiles for b in read_tiles(slide, grid, 8, workers=2)])
    for i, (x, y) in enumerate(coords):
        region = ref.read_region((x, y), level, (384, 384))
        expected = cv2.resize(region, (256, 256), interpolation=cv2.INTER_AREA)
        assert np.abs(got[i].astype(int) - expected).max() == 0, f"tile {i}"


def test_coarser_target_uses_dct_scaling(pyramid: Path) -> None:
    slide = hsafast.open_slide(pyramid)
    if not slide.native_decoding:  # type: ignore[attr-defined]
        pytest.skip("DCT-domain scaling needs the native libjpeg-turbo decoder")
    coords = grid_coords(2220, 2964, 512)
    grid = make_grid(pyramid, coords, 512, 256)
    plan = read_plan(slide, grid)
    assert plan.reduce == 2 and not plan.resize
    assert read_plan(slide, grid, scaled_decode=False).resize
    scaled = np.concatenate([b.tiles for b in read_tiles(slide, grid, 16, workers=2)])
    full = np.concatenate(
        [b.tiles for b in read_tiles(slide, grid, 16, workers=2, scaled_decode=False)]
    )
    assert scaled.shape == full.shape == (len(coords), 256, 256, 3)
    diff = np.abs(scaled.astype(np.int16) - full.astype(np.int16))
    assert diff.mean() < 2.0, f"mean difference {diff.mean():.2f}"
    # the DCT path reads the same pixels as read_regions(..., reduce=2)
    direct = slide.read_regions(coords, 0, (256, 256), reduce=2)
    np.testing.assert_array_equal(scaled, direct)


def test_plain_image_and_openslide_backends(ihc_png: Path, dicom_jpeg: Path) -> None:
    image = hsafast.open_slide(ihc_png, mpp=0.5)
    coords = grid_coords(512, 512, 128)
    tiles = np.concatenate(
        [b.tiles for b in read_tiles(image, make_grid(ihc_png, coords, 128, 64), 5)]
    )
    expected = cv2.resize(
        image.read_region((128, 256), 0, (128, 128)), (64, 64), interpolation=cv2.INTER_AREA
    )
    index = int(np.flatnonzero((coords == (128, 256)).all(1))[0])
    np.testing.assert_array_equal(tiles[index], expected)
    dicom = hsafast.open_slide(dicom_jpeg)
    coords = grid_coords(1152, 700, 200)
    out = np.concatenate(
        [b.tiles for b in read_tiles(dicom, make_grid(dicom_jpeg, coords, 200, 200), 4)]
    )
    np.testing.assert_array_equal(out[7], dicom.read_region(coords[7], 0, (200, 200)))


def test_stopping_early_releases_the_readers(pyramid: Path) -> None:
    coords = grid_coords(2220, 2964, 128)
    grid = make_grid(pyramid, coords, 128, 128)
    before = threading.active_count()
    gen = read_tiles(pyramid, grid, batch_size=8, workers=3, prefetch=2)
    first = next(gen)
    assert len(first) == 8
    gen.close()  # what a consumer's `break` does
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_empty_grid_and_bad_parameters(pyramid: Path) -> None:
    empty = make_grid(pyramid, np.zeros((0, 2), dtype=np.int64), 256, 256)
    assert list(read_tiles(pyramid, empty)) == []
    grid = make_grid(pyramid, grid_coords(512, 512, 256), 256, 256)
    with pytest.raises(InvalidParameterError, match="batch_size"):
        next(read_tiles(pyramid, grid, batch_size=0))
    bad_level = make_grid(pyramid, grid_coords(512, 512, 256), 256, 256, level=7)
    with pytest.raises(InvalidParameterError, match="level 7"):
        next(read_tiles(pyramid, bad_level))


def test_progress_bar(pyramid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = make_grid(pyramid, grid_coords(2220, 2964, 512), 256, 256)
    n = sum(len(b) for b in read_tiles(pyramid, grid, 7, workers=2, progress=True))
    assert n == len(grid)


def test_corrupt_tile_raises_slide_error_with_location(cmu_svs: Path, tmp_path: Path) -> None:
    import tifffile

    bad = tmp_path / "corrupt.svs"
    data = bytearray(cmu_svs.read_bytes())
    page = tifffile.TiffFile(cmu_svs).pages[0]
    tile = 3 * 10 + 4  # column 4, row 3
    offset, count = page.dataoffsets[tile], page.databytecounts[tile]
    data[offset + count // 3 : offset + count // 3 + 64] = b"\xff" * 64
    bad.write_bytes(bytes(data))
    grid = make_grid(bad, grid_coords(2220, 2967, 240), 240, 240)
    with pytest.raises(SlideError, match=r"corrupt\.svs.*column 4, row 3"):
        for _ in read_tiles(bad, grid, batch_size=16, workers=2):
            pass


@pytest.mark.parametrize("backend", ["openslide", "tifffile", "cucim"])
def test_backends_give_identical_batches(pyramid: Path, backend: str) -> None:
    from hsafast.slides import BACKENDS

    if backend not in BACKENDS:
        pytest.skip(f"backend {backend} is not installed")
    coords = grid_coords(2220, 2964, 300, offset=-20)  # unaligned, crossing every edge
    grid = make_grid(pyramid, coords, 300, 300)
    ref = np.concatenate([b.tiles for b in read_tiles(pyramid, grid, 16, workers=1)])
    slide = hsafast.open_slide(pyramid, backend=backend)
    got = np.concatenate([b.tiles for b in read_tiles(slide, grid, 16, workers=3)])
    np.testing.assert_array_equal(got, ref)
