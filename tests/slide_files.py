"""Slide files the tests build from the real CMU-1 slide."""

from __future__ import annotations

from pathlib import Path

import hsafast


def make_pyramid_tiff(src: Path, out: Path) -> Path:
    """A 3-level JPEG TIFF (YCbCr 4:2:0, 256-px tiles) of CMU-1's real pixels."""
    import cv2
    import tifffile

    with hsafast.open_slide(src, backend="openslide") as slide:
        base = slide.read_level(0)[:2964, :2220]  # multiples of 4: exact 2x and 4x levels
    res = 1e4 / 0.499
    with tifffile.TiffWriter(out) as tif:
        for i, ds in enumerate((1, 2, 4)):
            img = (
                base
                if ds == 1
                else cv2.resize(base, (2220 // ds, 2964 // ds), interpolation=cv2.INTER_AREA)
            )
            tif.write(
                img,
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 90},
                resolution=(res / ds, res / ds),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
            )
    return out
