"""Heatmaps of a SlideResult: per-tile positivity and attention as GeoJSON and PNG overlays.

GeoJSON: one QuPath "tile" object per scored tile (a square in level-0 pixels), with the
marker's measurements ``positivity`` (patch mode) and ``attention`` (the weight times the
number of tiles, so 1 is the average tile and the scale does not shrink with slide size),
written by the shared writer `hsafast.geojson.write_tiles`.

PNG: the value per tile painted on the slide's thumbnail (or on white without one) with a
colour bar. Tiles are painted as boxes on a grid at thumbnail scale with NumPy, so a
100k-tile slide takes well under a second.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hsafast.errors import InvalidParameterError

if TYPE_CHECKING:
    from hsafast.scoring.results import SlideResult

__all__ = ["HEATMAP_VALUES", "heatmap_image", "heatmap_values", "save_heatmaps", "write_geojson"]

#: what can be mapped: predicted IHC positivity (0-1), relative attention (weight x N)
HEATMAP_VALUES = ("positivity", "attention")


def heatmap_values(result: SlideResult, marker: str, value: str) -> np.ndarray:
    """Per-tile values of one marker: positivity (0-1) or relative attention (weight x N)."""
    if marker not in result.markers:
        raise InvalidParameterError(
            f"no marker {marker!r} in the result of {result.slide_id} "
            f"(it has {', '.join(result.markers) or 'none'})"
        )
    m = result.markers[marker]
    if value == "attention":
        return m.attention.astype(np.float64) * len(m.attention)
    if value == "positivity":
        if m.positivity is None:
            raise InvalidParameterError(
                f"the {marker} model predicts no per-tile positivity (only patch-mode bundles do)"
            )
        return m.positivity.astype(np.float64)
    raise InvalidParameterError(f"value must be one of {HEATMAP_VALUES}, got {value!r}")


def write_geojson(result: SlideResult, marker: str, path: str | os.PathLike[str]) -> Path:
    """One tile feature per scored tile with the marker's positivity and attention."""
    from hsafast.geojson import write_tiles

    m = result.markers[marker]
    measurements = {f"{marker} attention": heatmap_values(result, marker, "attention")}
    if m.positivity is not None:
        measurements[f"{marker} positivity"] = m.positivity.astype(np.float64)
    return write_tiles(
        path,
        result.coords,
        result.patch_size_level0,
        measurements,
        key=f"heatmap/{result.slide_id}/{marker}",
        object_type="tile",
    )


def heatmap_image(
    result: SlideResult,
    marker: str,
    value: str = "positivity",
    thumbnail: np.ndarray | None = None,
    level0_size: tuple[int, int] | None = None,
    max_side: int = 1024,
    alpha: float = 0.6,
) -> np.ndarray:
    """An RGB overlay of one marker's per-tile values, with a colour bar on the right.

    `thumbnail` (RGB) is the whole slide at any scale, `level0_size` the slide's level-0
    (width, height); without them the map is drawn on white over the tiles' extent.
    Positivity is mapped on 0-1; attention on 0 to its 99th percentile.
    """
    import cv2

    values = heatmap_values(result, marker, value)
    coords = result.coords
    side = result.patch_size_level0
    if level0_size is None:
        level0_size = (
            (int(coords[:, 0].max()) + side, int(coords[:, 1].max()) + side)
            if len(coords)
            else (side, side)
        )
    width0, height0 = level0_size
    scale = max_side / max(width0, height0)
    out_w, out_h = max(1, round(width0 * scale)), max(1, round(height0 * scale))
    if thumbnail is not None:
        base = cv2.resize(
            np.ascontiguousarray(thumbnail), (out_w, out_h), interpolation=cv2.INTER_AREA
        )
    else:
        base = np.full((out_h, out_w, 3), 255, dtype=np.uint8)
    top = 1.0 if value == "positivity" else max(float(np.percentile(values, 99)), 1e-12)
    colours = _colourmap(np.clip(values / top, 0.0, 1.0))
    layer = np.zeros((out_h, out_w, 3), dtype=np.float32)
    covered = np.zeros((out_h, out_w), dtype=bool)
    x0 = np.clip(np.floor(coords[:, 0] * scale).astype(np.int64), 0, out_w)
    y0 = np.clip(np.floor(coords[:, 1] * scale).astype(np.int64), 0, out_h)
    x1 = np.clip(
        np.maximum(np.ceil((coords[:, 0] + side) * scale).astype(np.int64), x0 + 1), 0, out_w
    )
    y1 = np.clip(
        np.maximum(np.ceil((coords[:, 1] + side) * scale).astype(np.int64), y0 + 1), 0, out_h
    )
    for i in range(len(coords)):  # boxes are a few pixels: a Python loop over slices is fast
        layer[y0[i] : y1[i], x0[i] : x1[i]] = colours[i]
        covered[y0[i] : y1[i], x0[i] : x1[i]] = True
    image = base.astype(np.float32)
    image[covered] = (1 - alpha) * image[covered] + alpha * layer[covered]
    label = "positivity" if value == "positivity" else "attention x N"
    return _with_colour_bar(image.round().astype(np.uint8), top, f"{marker} {label}")


def _colourmap(t: np.ndarray) -> np.ndarray:
    """Values in 0-1 as RGB float colours (OpenCV's viridis)."""
    import cv2

    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_VIRIDIS)
    lut = lut[:, 0, ::-1].astype(np.float32)  # BGR -> RGB
    return lut[np.round(t * 255).astype(np.int64)]


def _with_colour_bar(image: np.ndarray, top: float, title: str) -> np.ndarray:
    """Appends a vertical colour bar with its 0, middle and top labels and a title."""
    import cv2

    h = image.shape[0]
    bar_w, pad, text_w = 24, 12, 110
    panel = np.full((h, pad + bar_w + text_w, 3), 255, dtype=np.uint8)
    y_top, y_bottom = min(40, h // 4), max(h - 20, h * 3 // 4)
    ramp = np.linspace(1.0, 0.0, max(2, y_bottom - y_top))
    panel[y_top:y_bottom, pad : pad + bar_w] = _colourmap(ramp)[:, None, :].round().astype(np.uint8)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    for frac in (0.0, 0.5, 1.0):
        y = round(y_bottom - frac * (y_bottom - y_top))
        cv2.putText(
            panel,
            f"{frac * top:.3g}",
            (pad + bar_w + 6, min(h - 4, y + 4)),
            font,
            size,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    cv2.putText(panel, title[:22], (2, max(12, y_top - 12)), font, size, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([image, panel], axis=1)


def save_heatmaps(
    result: SlideResult,
    out_dir: str | os.PathLike[str],
    thumbnail: np.ndarray | None = None,
    level0_size: tuple[int, int] | None = None,
) -> list[Path]:
    """For each marker: ``<id>.<marker>.geojson`` and a PNG per available value; atomic."""
    from hsafast._fileio import atomic_write_png, safe_id

    out = Path(out_dir)
    stem = safe_id(result.slide_id)
    written = []
    for marker, m in result.markers.items():
        mstem = f"{stem}.{safe_id(marker)}"
        written.append(write_geojson(result, marker, out / f"{mstem}.geojson"))
        values = ["attention"] + (["positivity"] if m.positivity is not None else [])
        for value in values:
            png = out / f"{mstem}.{value}.png"
            atomic_write_png(png, heatmap_image(result, marker, value, thumbnail, level0_size))
            written.append(png)
    return written
