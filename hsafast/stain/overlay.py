"""A picture of a stain reading: every nucleus drawn on the IHC, coloured by its grade.

A slide label is a number; the overlay lets a user check it by eye. Each cell that
``quantify`` found is a dot on the IHC image: blue when negative, yellow, orange
and red for DAB grades 1+, 2+ and 3+; filled where the score counts the cell
(tumour-like), a ring where it does not. Excluded tiles (blank, saturated, eosin
colours) are outlined in grey. Whole slides are drawn downsampled; ``region``
draws a part at up to full resolution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hsafast.errors import InvalidParameterError
from hsafast.slides import Slide, open_slide
from hsafast.stain.stats import EXCLUDED, StainStats

#: RGB of grades 0 (negative), 1+, 2+, 3+.
GRADE_COLOURS = ((40, 90, 255), (255, 230, 0), (255, 120, 0), (170, 0, 0))
EXCLUDED_COLOUR = (128, 128, 128)
#: Output rows read and shrunk at a time, bounding memory on large single-level slides.
_STRIP_ROWS = 512


def stain_overlay(
    slide: Slide,
    stats: StainStats,
    *,
    max_size: int = 2048,
    region: Sequence[int] | None = None,
    nucleus_radius_um: float = 3.5,
) -> tuple[np.ndarray, float]:
    """(RGB uint8 image, level-0 pixels per image pixel) of ``stats``'s cells on the IHC.

    ``region`` is a level-0 (x, y, width, height); by default the box of the measured
    tiles. The longer side of the image is at most ``max_size`` and never upsampled.
    """
    import cv2

    if stats.cell_table is None and stats.marker.compartment != "cytoplasmic":
        raise InvalidParameterError(
            "these statistics kept no cells (QuantifyConfig(keep_cells=False))", slide.path
        )
    if max_size < 16:
        raise InvalidParameterError(f"max_size must be at least 16, got {max_size}", slide.path)
    x0, y0, w, h = _region(slide, stats, region)
    ds = max(1.0, max(w, h) / max_size)
    image = _read_scaled(slide, (x0, y0, w, h), ds)
    patch0 = stats.patch_size_level0 or stats.size
    for (tx, ty), flag in zip(stats.coords, stats.flags, strict=True):
        if flag & EXCLUDED:
            p = (round((tx - x0) / ds), round((ty - y0) / ds))
            q = (round((tx + patch0 - x0) / ds) - 1, round((ty + patch0 - y0) / ds) - 1)
            cv2.rectangle(image, p, q, EXCLUDED_COLOUR, 1)
    table = stats.cell_table
    if table is not None and len(table):
        xy = (table.xy - (x0, y0) + 0.5) / ds - 0.5
        inside = (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] < image.shape[1] - 0.5)
        inside &= xy[:, 1] < image.shape[0] - 0.5
        mpp0 = (stats.mpp or slide.mpp) * stats.size / patch0  # um per level-0 pixel
        radius = nucleus_radius_um / (mpp0 * ds)
        _draw_cells(image, xy[inside], table.grade[inside], table.scored[inside], radius)
    _legend(image)
    return image, ds


def save_stain_overlay(
    slide: Slide | str | os.PathLike[str],
    stats: StainStats,
    path: str | os.PathLike[str],
    *,
    max_size: int = 2048,
    region: Sequence[int] | None = None,
) -> Path:
    """Write :func:`stain_overlay` as a PNG (atomically); returns the path."""
    from hsafast._fileio import atomic_write_png

    opened = slide if isinstance(slide, Slide) else open_slide(slide)
    try:
        image, _ = stain_overlay(opened, stats, max_size=max_size, region=region)
    finally:
        if opened is not slide:
            opened.close()
    atomic_write_png(path, image)
    return Path(path)


def _region(
    slide: Slide, stats: StainStats, region: Sequence[int] | None
) -> tuple[int, int, int, int]:
    width, height = slide.dimensions
    if region is None:
        if len(stats) == 0:
            return 0, 0, width, height
        patch0 = stats.patch_size_level0 or stats.size
        lo = np.maximum(stats.coords.min(axis=0), 0)
        hi = np.minimum(stats.coords.max(axis=0) + patch0, (width, height))
        return int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])
    x, y, w, h = (int(v) for v in region)
    if w <= 0 or h <= 0 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise InvalidParameterError(
            f"region {tuple(region)} does not overlap the {width}x{height} slide", slide.path
        )
    return x, y, w, h


def _read_scaled(slide: Slide, region: tuple[int, int, int, int], ds: float) -> np.ndarray:
    """The region at ``ds`` level-0 pixels per output pixel, read strip by strip."""
    import cv2

    x0, y0, w, h = region
    out_w, out_h = max(1, round(w / ds)), max(1, round(h / ds))
    level = slide.best_level_for_downsample(ds)
    lds = slide.level_downsamples[level]
    out = np.empty((out_h, out_w, 3), np.uint8)
    for top in range(0, out_h, _STRIP_ROWS):
        rows = min(_STRIP_ROWS, out_h - top)
        sy = y0 + round(top * ds)
        sh = max(1, round(rows * ds / lds))
        sw = max(1, round(w / lds))
        strip = slide.read_region((x0, sy), level, (sw, sh))
        interp = cv2.INTER_AREA if sw >= out_w else cv2.INTER_LINEAR
        out[top : top + rows] = cv2.resize(strip, (out_w, rows), interpolation=interp)
    return out


def _draw_cells(
    image: np.ndarray, xy: np.ndarray, grade: np.ndarray, scored: np.ndarray, radius: float
) -> None:
    import cv2

    h, w = image.shape[:2]
    g = np.clip(grade.astype(np.intp), 0, 3)
    if radius < 2.0:  # a dot per cell: 2 x 2 pixels for scored cells, 1 pixel for others
        x = np.rint(xy[:, 0]).astype(np.intp)
        y = np.rint(xy[:, 1]).astype(np.intp)
        colours = np.asarray(GRADE_COLOURS, np.uint8)[g]
        image[y, x] = colours
        s = scored & (x + 1 < w) & (y + 1 < h)
        for dx, dy in ((1, 0), (0, 1), (1, 1)):
            image[y[s] + dy, x[s] + dx] = colours[s]
        return
    r = max(2, round(radius))
    for (cx, cy), k, filled in zip(np.rint(xy).astype(int), g, scored, strict=True):
        colour = GRADE_COLOURS[int(k)]
        if filled:
            cv2.circle(image, (int(cx), int(cy)), r, colour, -1, cv2.LINE_AA)
            cv2.circle(image, (int(cx), int(cy)), r, (0, 0, 0), 1, cv2.LINE_AA)
        else:
            cv2.circle(image, (int(cx), int(cy)), r, colour, 1, cv2.LINE_AA)


def _legend(image: np.ndarray) -> None:
    """A key in the top-left corner, where it fits."""
    import cv2

    items = [("negative", 0), ("1+", 1), ("2+", 2), ("3+", 3)]
    if image.shape[0] < 120 or image.shape[1] < 260:
        return
    cv2.rectangle(image, (4, 4), (256, 28 + 18 * len(items)), (255, 255, 255), -1)
    cv2.putText(image, "filled: scored, ring: other", (10, 20), 0, 0.45, (0, 0, 0), 1)
    for i, (text, k) in enumerate(items):
        y = 38 + 18 * i
        cv2.circle(image, (18, y), 6, GRADE_COLOURS[k], -1, cv2.LINE_AA)
        cv2.putText(image, text, (32, y + 5), 0, 0.45, (0, 0, 0), 1)
