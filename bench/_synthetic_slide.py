"""A generated pyramidal JPEG TIFF with tissue-like content, for reading benchmarks.

Content is procedural and continuous across tiles: smooth tissue sections (a
low-frequency field thresholded into blobs) stained eosin pink with a fibrous
texture, crowded with hematoxylin-purple nuclei, on a near-white background.
Each tile is rendered on its own (a few MB of state at most), so a 40k x 40k
slide is written with bounded memory. Every level is rendered at its own scale
(a real pyramid is downsampled from the scan; both give plausible H&E levels).

    python -m bench._synthetic_slide --size 20000 --out bench/out/synthetic_20000.tif
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TILE = 256
MPP = 0.25  # a 40x scan
#: Colours (RGB) of the stains.
BACKGROUND = np.array([242.0, 240.0, 243.0])
EOSIN = np.array([236.0, 160.0, 200.0])
EOSIN_DARK = np.array([200.0, 110.0, 170.0])
HEMATOXYLIN = np.array([85.0, 55.0, 140.0])
NUCLEUS_BLOCK = 64  # level-0 pixels per nucleus-placement cell


class TissueModel:
    """The procedural slide: fields at coarse scales, nuclei placed per block."""

    def __init__(self, width: int, height: int, seed: int = 0) -> None:
        from scipy import ndimage

        self.width, self.height, self.seed = width, height, seed
        rng = np.random.default_rng(seed)
        # tissue field: 1 sample per 128 px, smoothed over ~12 samples -> sections of mm size
        self.coarse = 128
        shape = (height // self.coarse + 3, width // self.coarse + 3)
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 6.0, mode="wrap")
        field = (field - field.mean()) / (field.std() + 1e-9)
        self.tissue = field.astype(np.float32)
        # texture field: 1 sample per 8 px, anisotropic smoothing -> fibres
        self.fine = 8
        fshape = (height // self.fine + 3, width // self.fine + 3)
        tex = ndimage.gaussian_filter(rng.standard_normal(fshape).astype(np.float32), (0.8, 2.5))
        self.texture = (tex / (tex.std() + 1e-9)).astype(np.float32)

    def _sample(self, field: np.ndarray, step: int, x0: float, y0: float, ds: float) -> np.ndarray:
        """Bilinear samples of a coarse field over one tile (level pixel grid, downsample ds)."""
        import cv2

        xs = ((x0 + np.arange(TILE, dtype=np.float32) + 0.5) * ds) / step
        ys = ((y0 + np.arange(TILE, dtype=np.float32) + 0.5) * ds) / step
        map_x = np.broadcast_to(xs[None, :], (TILE, TILE)).astype(np.float32)
        map_y = np.broadcast_to(ys[:, None], (TILE, TILE)).astype(np.float32)
        return cv2.remap(field, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def render(self, col: int, row: int, ds: float) -> np.ndarray:
        """Tile (col, row) of the level with downsample ``ds`` as (256, 256, 3) uint8."""
        import cv2

        x0, y0 = col * TILE, row * TILE
        density = self._sample(self.tissue, self.coarse, x0, y0, ds)
        tissue = np.clip((density - 0.35) * 2.5, 0.0, 1.0)  # soft section edges
        texture = self._sample(self.texture, self.fine, x0, y0, ds)
        fibre = np.clip(0.5 + 0.25 * texture, 0.0, 1.0)[..., None]
        stain = EOSIN * (1 - fibre) + EOSIN_DARK * fibre
        alpha = tissue[..., None]
        img = BACKGROUND * (1 - alpha) + stain * alpha
        if tissue.max() > 0:
            img = self._draw_nuclei(img, x0, y0, ds, density)
        rng = np.random.default_rng((self.seed, int(ds * 8), col, row))
        # fine structure inside tissue (fibrils, granules): smooth noise at 1/2-1/4 px scale
        grain = cv2.resize(
            rng.normal(0.0, 1.0, size=(TILE // 2, TILE // 2)).astype(np.float32),
            (TILE, TILE),
            interpolation=cv2.INTER_CUBIC,
        )
        img += (14.0 * alpha[..., 0] * grain)[..., None] * np.array([0.6, 1.0, 0.7])
        img += rng.normal(0.0, 2.0, size=(TILE, TILE, 1))  # scanner noise, small
        out = np.clip(img, 0, 255).astype(np.uint8)
        return cv2.GaussianBlur(out, (3, 3), 0.6)  # optics

    def _draw_nuclei(
        self, img: np.ndarray, x0: int, y0: int, ds: float, density: np.ndarray
    ) -> np.ndarray:
        import cv2

        mask = np.zeros((TILE, TILE), dtype=np.float32)
        # level-0 extent of this tile, with a margin for nuclei of neighbouring blocks
        margin = 16
        gx0, gy0 = (x0 * ds) - margin, (y0 * ds) - margin
        gx1, gy1 = ((x0 + TILE) * ds) + margin, ((y0 + TILE) * ds) + margin
        b = NUCLEUS_BLOCK
        for by in range(max(0, int(gy0 // b)), int(gy1 // b) + 1):
            for bx in range(max(0, int(gx0 // b)), int(gx1 // b) + 1):
                cx, cy = (bx + 0.5) * b / ds - x0, (by + 0.5) * b / ds - y0
                ix, iy = int(min(max(cx, 0), TILE - 1)), int(min(max(cy, 0), TILE - 1))
                local = float(density[iy, ix])
                if local < 0.4:
                    continue
                rng = np.random.default_rng((self.seed, 7, bx, by))
                count = rng.poisson(min(6.0, 2.0 + 3.0 * (local - 0.4)))
                for _ in range(count):
                    px = (bx * b + rng.uniform(0, b)) / ds - x0
                    py = (by * b + rng.uniform(0, b)) / ds - y0
                    radius = rng.uniform(3.5, 7.0) / ds
                    ratio = rng.uniform(0.6, 1.0)
                    angle = rng.uniform(0, 180)
                    axes = (max(1, round(radius * 4)), max(1, round(radius * ratio * 4)))
                    cv2.ellipse(
                        mask,
                        (round(px * 4), round(py * 4)),
                        axes,
                        angle,
                        0,
                        360,
                        rng.uniform(0.7, 1.0),
                        -1,
                        cv2.LINE_AA,
                        2,
                    )
        mask = np.clip(mask, 0, 1)[..., None]
        return img * (1 - mask) + HEMATOXYLIN * mask


def write_synthetic_slide(
    path: Path,
    size: int = 20000,
    quality: int = 90,
    seed: int = 0,
    levels: tuple[int, ...] = (1, 4, 16),
    progress: bool = True,
) -> Path:
    """Write a pyramidal JPEG TIFF (YCbCr 4:2:0, 256-px tiles) to ``path`` atomically."""
    import tifffile

    from hsafast._fileio import atomic_path

    model = TissueModel(size, size, seed)
    resolution = (1e4 / MPP, 1e4 / MPP)  # pixels per centimetre
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for i, ds in enumerate(levels):
            width, height = math.ceil(size / ds), math.ceil(size / ds)
            across, down = math.ceil(width / TILE), math.ceil(height / TILE)
            start = time.perf_counter()

            def tiles(across: int = across, down: int = down, ds: int = ds) -> Iterator[np.ndarray]:
                for row in range(down):
                    for col in range(across):
                        yield model.render(col, row, float(ds))
                    if progress and row % 10 == 0:
                        print(f"\r  level {ds}x: row {row}/{down}", end="", file=sys.stderr)

            tif.write(
                tiles(),
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",  # encoded as YCbCr 4:2:0 JPEG
                subsampling=(2, 2),
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(resolution[0] / ds, resolution[1] / ds),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                description=f"hsafast synthetic H&E slide {size}x{size} seed {seed}",
                metadata=None,
                maxworkers=1,
            )
            if progress:
                seconds = time.perf_counter() - start
                print(f"\r  level {ds}x: {across * down} tiles in {seconds:.1f} s", file=sys.stderr)
    return path


def synthetic_slide(size: int = 20000, out_dir: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached synthetic slide of this size, generating it on first use."""
    from bench._common import OUT_DIR

    out_dir = out_dir or OUT_DIR
    path = out_dir / f"synthetic_{size}_s{seed}.tif"
    if not path.exists():
        print(f"generating {path} (once; cached)", file=sys.stderr)
        write_synthetic_slide(path, size=size, seed=seed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write_synthetic_slide(args.out, size=args.size, quality=args.quality, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
