"""The one QuPath GeoJSON writer: tissue outlines, tile heatmaps, transferred annotations.

QuPath (0.4 and later) imports a FeatureCollection whose features carry QuPath's own
properties: ``objectType`` ("annotation", "detection" or "tile"), an optional
``classification`` {name, color} and ``measurements`` {name: number}; it reads the feature's
``id`` as the object's UUID. Coordinates here are level-0 pixels, x then y, as QuPath expects.
IDs are UUID5s of a caller-given key, so rerunning a job writes the same file.

Small collections go through `polygon_feature` and `write_geojson`. Tile heatmaps of 100k
tiles or more go through `write_tiles`, which formats the text directly, in row blocks,
instead of building one dict per tile (several times faster, and flat in memory).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hsafast.errors import InvalidParameterError

__all__ = [
    "OBJECT_TYPES",
    "feature_collection",
    "polygon_feature",
    "stable_id",
    "write_geojson",
    "write_tiles",
]

#: QuPath's object types that a GeoJSON feature can become.
OBJECT_TYPES = ("annotation", "detection", "tile")
#: Rows formatted per block by write_tiles (bounds the text held in memory at once).
_TILE_BLOCK = 8192


def stable_id(key: str) -> str:
    """A UUID derived from ``key`` (same key, same UUID), for QuPath's object IDs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hsafast/{key}"))


def _classification(name: str | None, color: Sequence[int] | None) -> dict[str, Any] | None:
    if name is None:
        return None
    out: dict[str, Any] = {"name": name}
    if color is not None:
        out["color"] = [int(c) for c in color]
    return out


def _check_type(object_type: str) -> None:
    if object_type not in OBJECT_TYPES:
        raise InvalidParameterError(
            f"objectType must be one of {OBJECT_TYPES}, got {object_type!r}"
        )


def polygon_feature(
    rings: Sequence[np.ndarray],
    *,
    key: str,
    object_type: str = "annotation",
    name: str | None = None,
    classification: str | None = None,
    color: Sequence[int] | None = None,
    measurements: Mapping[str, float] | None = None,
    decimals: int = 2,
) -> dict[str, Any]:
    """One polygon (exterior ring, then holes; closed N x 2 arrays) as a QuPath feature."""
    _check_type(object_type)
    properties: dict[str, Any] = {"objectType": object_type}
    if name is not None:
        properties["name"] = name
    cls = _classification(classification, color)
    if cls is not None:
        properties["classification"] = cls
    if measurements:
        properties["measurements"] = {k: _number(v) for k, v in measurements.items()}
    return {
        "type": "Feature",
        "id": stable_id(key),
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[round(float(x), decimals), round(float(y), decimals)] for x, y in ring]
                for ring in rings
            ],
        },
        "properties": properties,
    }


def feature_collection(features: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def write_geojson(path: str | os.PathLike[str], collection: Mapping[str, Any]) -> Path:
    """Writes a GeoJSON object compactly and atomically; returns the path."""
    from hsafast._fileio import atomic_write_text

    atomic_write_text(path, json.dumps(collection, separators=(",", ":"), allow_nan=False))
    return Path(path)


def _number(value: float) -> float | None:
    """JSON has no NaN: a missing measurement is written as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def write_tiles(
    path: str | os.PathLike[str],
    coords: np.ndarray,
    tile_size: int | float,
    measurements: Mapping[str, np.ndarray],
    *,
    key: str,
    object_type: str = "tile",
    classification: str | None = None,
    color: Sequence[int] | None = None,
) -> Path:
    """Square tiles (level-0 top-left ``coords``, N x 2, side ``tile_size``) with measurements.

    Each measurement is an array of N numbers (NaN is written as null: QuPath shows it as
    missing). Feature i gets the ID ``stable_id(f"{key}/{i}")``. Written atomically.
    """
    from hsafast._fileio import atomic_path

    _check_type(object_type)
    xy = np.asarray(coords)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InvalidParameterError(f"coords must be N x 2, got shape {xy.shape}", path)
    n = len(xy)
    if not (math.isfinite(float(tile_size)) and float(tile_size) > 0):
        raise InvalidParameterError(f"tile_size must be positive, got {tile_size}", path)
    columns = {}
    for name, values in measurements.items():
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.shape[0] != n:
            raise InvalidParameterError(
                f"measurement {name!r} has {arr.shape[0]} values for {n} tiles", path
            )
        columns[json.dumps(str(name))] = arr
    head: dict[str, Any] = {"objectType": object_type}
    cls = _classification(classification, color)
    if cls is not None:
        head["classification"] = cls
    head_text = json.dumps(head, separators=(",", ":"))[1:-1]
    side = float(tile_size)
    final = Path(path)
    with atomic_path(final) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.write('{"type":"FeatureCollection","features":[')
        for start in range(0, n, _TILE_BLOCK):
            block = range(start, min(n, start + _TILE_BLOCK))
            f.write(
                ("," if start else "")
                + ",".join(_tile_text(xy, side, columns, head_text, key, i) for i in block)
            )
        f.write("]}")
    return final


def _fmt(value: float) -> str:
    """Up to 7 significant digits (float32 precision); NaN and Inf as null."""
    return "null" if not math.isfinite(value) else f"{value:.7g}"


def _tile_text(
    xy: np.ndarray, side: float, columns: dict[str, np.ndarray], head: str, key: str, i: int
) -> str:
    x0, y0 = float(xy[i, 0]), float(xy[i, 1])
    x1, y1 = x0 + side, y0 + side
    ring = (
        f"[[{x0:.10g},{y0:.10g}],[{x1:.10g},{y0:.10g}],[{x1:.10g},{y1:.10g}],"
        f"[{x0:.10g},{y1:.10g}],[{x0:.10g},{y0:.10g}]]"
    )
    values = ",".join(f"{name}:{_fmt(col[i])}" for name, col in columns.items())
    return (
        f'{{"type":"Feature","id":"{stable_id(f"{key}/{i}")}",'
        f'"geometry":{{"type":"Polygon","coordinates":[{ring}]}},'
        f'"properties":{{{head},"measurements":{{{values}}}}}}}'
    )
