"""The demo's real slide: tissue detection, the tile grid and tile reading on real pixels.

The bundled CMU-1-Small-Region (20x Aperio H&E, OpenSlide test data, CC0) or the user's
slide. The overlay is drawn at up to 2048 pixels on the longer side with every kept
tile outlined, so that what the tile grid covers can be checked by eye.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["OVERLAY_SIDE", "TILE_MPP", "TILE_SIZE", "RealSlideResult", "check_slide", "run_real"]

#: Tiles of the real slide: 256 px at 0.5 um/px (20x), the field's usual tile.
TILE_MPP = 0.5
TILE_SIZE = 256
#: Longer side of the overlay (pixels): large enough to see each 256-px tile of a
#: small region; a whole slide is drawn at this size too.
OVERLAY_SIDE = 2048


@dataclass(frozen=True)
class RealSlideResult:
    slide: str
    mpp: float
    dimensions: tuple[int, int]
    tissue_mm2: float
    tiles: int
    tiles_per_second: float
    seconds: float


def check_slide(slide_path: str | os.PathLike[str]) -> None:
    """Fail before anything is written if ``slide_path`` cannot serve as the real slide:
    unreadable, or without a recorded pixel size (the tiles are cut at 0.5 um/px)."""
    from hsafast.errors import MissingPixelSizeError
    from hsafast.slides import open_slide

    with open_slide(slide_path) as slide:
        try:
            _ = slide.mpp
        except MissingPixelSizeError as exc:
            reason = exc.reason.partition("; pass ")[0]
            raise MissingPixelSizeError(
                f"{reason}; the demo cuts tiles at {TILE_MPP} um/px and needs a slide "
                "that records its pixel size",
                slide_path,
            ) from None


def run_real(slide_path: Path, out_dir: Path) -> RealSlideResult:
    """Tissue mask (PNG, GeoJSON), tile grid (coordinates .h5), tile reading, overlay."""
    from hsafast.features import FeatureFile
    from hsafast.reading import read_tiles
    from hsafast.slides import open_slide
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = slide_path.stem
    with open_slide(slide_path) as slide:
        mask = detect_tissue(slide)
        mask.to_png(out_dir / f"{stem}.mask.png")
        mask.save_geojson(out_dir / f"{stem}.geojson")
        grid = tile_grid(slide, mask, mpp=TILE_MPP, size=TILE_SIZE)
        FeatureFile.from_grid(grid, slide_id=stem, stain="HE").write(out_dir / f"{stem}.h5")
        start = time.perf_counter()
        n = sum(len(batch.coords) for batch in read_tiles(slide, grid, batch_size=64))
        read_seconds = time.perf_counter() - start
        image, downsample = slide.thumbnail(OVERLAY_SIDE)
        overlay = draw_overlay(image, mask.mask, grid.coords, grid.patch_size_level0, downsample)
        from hsafast._fileio import atomic_write_png

        atomic_write_png(out_dir / f"{stem}.overlay.png", overlay)
        return RealSlideResult(
            slide=str(slide_path),
            mpp=float(slide.mpp),
            dimensions=(int(slide.dimensions[0]), int(slide.dimensions[1])),
            tissue_mm2=round(mask.area_mm2(), 3),
            tiles=n,
            tiles_per_second=round(n / read_seconds, 1) if read_seconds > 0 else 0.0,
            seconds=round(time.perf_counter() - t0, 2),
        )


def draw_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    coords: np.ndarray,
    tile_level0: int,
    downsample: float,
) -> np.ndarray:
    """``image`` with glass dimmed, the tissue outlined in green and each tile in blue.

    ``coords`` are level-0 tile corners; ``downsample`` is level-0 pixels per image pixel.
    """
    import cv2

    height, width = image.shape[:2]
    tissue = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    out = image.copy()
    glass = tissue == 0
    out[glass] = (out[glass] * 0.45 + 255 * 0.2).astype(np.uint8)
    line = max(1, round(max(width, height) / 1000))
    contours, _ = cv2.findContours(tissue, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 170, 0), line + 1)
    side = tile_level0 / downsample
    for x, y in np.asarray(coords, dtype=np.float64) / downsample:
        top_left = (round(x), round(y))
        bottom_right = (round(x + side) - 1, round(y + side) - 1)
        cv2.rectangle(out, top_left, bottom_right, (30, 90, 220), line)
    return out
