"""The result of a registration: a small, serialisable map between two slides.

Only transforms are stored, never warped pixels: a 3x3 affine matrix between
level-0 pixel coordinates (H&E -> IHC) and, optionally, a low-resolution
displacement field on the H&E grid (in level-0 pixels). The full map is
``map(x) = A @ (x + D(x))``; its inverse applies ``A^-1`` exactly and solves
``x + D(x) = z`` by fixed-point iteration, which converges because the field is
smooth (its gradient is far below 1).

Coordinates are level-0 pixel positions (x, y), pixel centres at integers.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsafast._fileio import atomic_path
from hsafast.errors import InvalidParameterError, RegistrationError
from hsafast.registration.nonrigid import sample_field

FORMAT_VERSION = 1
DIRECTIONS = ("he_to_ihc", "ihc_to_he")


@dataclass
class Registration:
    """H&E -> IHC map in level-0 pixels, with its quality verdict."""

    affine: np.ndarray
    field: np.ndarray | None = None
    field_scale: tuple[float, float] = (1.0, 1.0)
    verdict: str = "ok"
    reason: str = ""
    quality: dict[str, float] = dataclasses.field(default_factory=dict)
    he_path: str = ""
    ihc_path: str = ""
    he_dimensions: tuple[int, int] = (0, 0)
    ihc_dimensions: tuple[int, int] = (0, 0)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape == (2, 3):
            self.affine = np.vstack([self.affine, [0.0, 0.0, 1.0]])
        if self.affine.shape != (3, 3) or not np.isfinite(self.affine).all():
            raise InvalidParameterError(f"affine must be a finite 3x3 matrix, got {self.affine}")
        if abs(np.linalg.det(self.affine[:2, :2])) < 1e-12:
            raise InvalidParameterError("affine matrix is singular")
        if self.field is not None:
            self.field = np.asarray(self.field, dtype=np.float32)
            if self.field.ndim != 3 or self.field.shape[2] != 2:
                raise InvalidParameterError(
                    f"field must be (H, W, 2), got shape {self.field.shape}"
                )
        if self.verdict not in ("ok", "failed"):
            raise InvalidParameterError(f"verdict must be 'ok' or 'failed', got {self.verdict!r}")

    # ---- verdict --------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def require_ok(self) -> None:
        """Raise RegistrationError (naming the H&E slide) unless the verdict is ok."""
        if not self.ok:
            raise RegistrationError(
                f"registration with {self.ihc_path or 'the IHC slide'} failed: {self.reason}",
                self.he_path or None,
            )

    # ---- mapping --------------------------------------------------------------------
    def _displacement(self, points: np.ndarray) -> np.ndarray:
        assert self.field is not None
        sx, sy = self.field_scale
        grid = np.column_stack(
            [(points[:, 0] - (sx - 1) / 2) / sx, (points[:, 1] - (sy - 1) / 2) / sy]
        )
        return sample_field(self.field, grid)

    def map(self, coords: np.ndarray, nonrigid: bool = True) -> np.ndarray:
        """H&E level-0 (x, y) -> IHC level-0 (x, y); (N, 2) float64."""
        pts = _points(coords)
        if nonrigid and self.field is not None:
            pts = pts + self._displacement(pts)
        return pts @ self.affine[:2, :2].T + self.affine[:2, 2]

    def inverse_map(
        self, coords: np.ndarray, nonrigid: bool = True, iterations: int = 30
    ) -> np.ndarray:
        """IHC level-0 (x, y) -> H&E level-0 (x, y); the inverse of ``map``."""
        inv = np.linalg.inv(self.affine)
        z = _points(coords) @ inv[:2, :2].T + inv[:2, 2]
        if not nonrigid or self.field is None:
            return z
        x = z.copy()
        for _ in range(iterations):
            x_new = z - self._displacement(x)
            if np.abs(x_new - x).max(initial=0.0) < 1e-4:
                return x_new
            x = x_new
        return x

    def mapper(self, direction: str) -> Callable[[np.ndarray], np.ndarray]:
        if direction not in DIRECTIONS:
            raise InvalidParameterError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        return self.map if direction == "he_to_ihc" else self.inverse_map

    def local_linear(self, point: np.ndarray, step: float = 8.0) -> np.ndarray:
        """2x2 Jacobian of ``map`` at one level-0 point (central differences)."""
        p = np.asarray(point, dtype=np.float64).reshape(2)
        dx, dy = np.array([step, 0.0]), np.array([0.0, step])
        probes = np.array([p + dx, p - dx, p + dy, p - dy])
        q = self.map(probes)
        return np.column_stack([(q[0] - q[1]) / (2 * step), (q[2] - q[3]) / (2 * step)])

    # ---- annotations ----------------------------------------------------------------
    def transfer_geojson(self, geojson: dict[str, Any], direction: str = "he_to_ihc") -> dict:
        """A copy of a GeoJSON object with every coordinate mapped to the other slide."""
        fn = self.mapper(direction)
        out = copy.deepcopy(geojson)
        _map_geojson(out, fn)
        return out

    # ---- files ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "hsafast.registration",
            "version": FORMAT_VERSION,
            "direction": "he_to_ihc",
            "coordinates": "level-0 pixels (x, y)",
            "affine": self.affine.tolist(),
            "verdict": self.verdict,
            "reason": self.reason,
            "quality": self.quality,
            "he_path": self.he_path,
            "ihc_path": self.ihc_path,
            "he_dimensions": list(self.he_dimensions),
            "ihc_dimensions": list(self.ihc_dimensions),
            "field_scale": list(self.field_scale),
            "details": self.details,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (JSON) and, with a field, ``<stem>.field.npz`` beside it."""
        path = Path(path)
        payload = self.to_dict()
        if self.field is not None:
            npz = path.with_name(path.stem + ".field.npz")
            with atomic_path(npz) as tmp:
                with tmp.open("wb") as f:
                    np.savez_compressed(f, field=self.field)
            payload["field_file"] = npz.name
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Registration:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistrationError(f"cannot read registration: {exc}", path) from exc
        if not isinstance(data, dict) or data.get("format") != "hsafast.registration":
            raise RegistrationError("not an hsafast registration file", path)
        if data.get("version", 0) > FORMAT_VERSION:
            raise RegistrationError(f"written by a newer hsafast (version {data['version']})", path)
        field_arr = None
        if data.get("field_file"):
            npz = path.with_name(data["field_file"])
            try:
                with np.load(npz, allow_pickle=False) as f:
                    field_arr = f["field"]
            except (OSError, KeyError, ValueError) as exc:
                raise RegistrationError(f"cannot read displacement field: {exc}", npz) from exc
        try:
            return cls(
                affine=np.asarray(data["affine"], dtype=np.float64),
                field=field_arr,
                field_scale=tuple(data.get("field_scale", (1.0, 1.0))),
                verdict=data.get("verdict", "ok"),
                reason=data.get("reason", ""),
                quality=dict(data.get("quality", {})),
                he_path=data.get("he_path", ""),
                ihc_path=data.get("ihc_path", ""),
                he_dimensions=tuple(data.get("he_dimensions", (0, 0))),
                ihc_dimensions=tuple(data.get("ihc_dimensions", (0, 0))),
                details=dict(data.get("details", {})),
            )
        except (KeyError, TypeError, InvalidParameterError) as exc:
            raise RegistrationError(f"malformed registration file: {exc}", path) from exc


def load_registration(path: str | os.PathLike[str]) -> Registration:
    """Read a registration written by ``Registration.save``."""
    return Registration.load(path)


def _points(coords: np.ndarray) -> np.ndarray:
    pts = np.asarray(coords, dtype=np.float64)
    if pts.ndim == 1 and pts.size == 2:
        pts = pts.reshape(1, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InvalidParameterError(f"coordinates must be (N, 2), got shape {pts.shape}")
    return pts


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _map_coords(coords: Any, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    """Map a GeoJSON position array of any nesting depth."""
    try:
        arr = np.asarray(coords, dtype=np.float64)
    except ValueError:  # ragged: polygon rings of unequal length
        return [_map_coords(c, fn) for c in coords]
    if arr.size == 0:
        return coords
    if arr.ndim >= 1 and arr.shape[-1] >= 2:
        flat = arr.reshape(-1, arr.shape[-1])
        flat[:, :2] = fn(flat[:, :2])
        return flat.reshape(arr.shape).tolist()
    raise InvalidParameterError(f"GeoJSON coordinates must be positions, got {coords!r}")


def _map_geojson(obj: Any, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    if isinstance(obj, list):
        for item in obj:
            _map_geojson(item, fn)
        return
    if not isinstance(obj, dict):
        return
    kind = obj.get("type")
    if kind == "FeatureCollection":
        _map_geojson(obj.get("features", []), fn)
    elif kind == "Feature":
        _map_geojson(obj.get("geometry"), fn)
    elif kind == "GeometryCollection":
        _map_geojson(obj.get("geometries", []), fn)
    elif "coordinates" in obj:
        obj["coordinates"] = _map_coords(obj["coordinates"], fn)
