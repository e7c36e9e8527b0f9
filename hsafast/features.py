"""Per-slide feature files: HDF5 in the layout TRIDENT and CLAM use.

A file holds ``coords`` (N x 2 int64, level-0 top-left corners) and, once tiles
are encoded, ``features`` (N x D); optional ``coords_pair`` (N x 2, the matching
corners in the paired slide after registration) and ``targets`` (N x ..., stain
targets per tile). Attributes (``patch_size``, ``patch_size_level0``,
``target_mpp``, ``level``, ``encoder``, ``encoder_hash``, ``stain``,
``slide_id``) live on the root group and are mirrored on the ``coords`` dataset,
where TRIDENT's readers look for ``patch_size`` and ``patch_size_level0``.

Reading also accepts files written by TRIDENT (attributes on ``coords``:
``patch_size``, ``patch_size_level0``, ``level0_magnification``,
``target_magnification``) and by CLAM (attributes on ``coords``: ``patch_size``
at ``patch_level``, ``downsample``; CLAM feature files carry no attributes).
Files are written to a temporary name and renamed, so a crash never leaves a
partial file under the final name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hsafast._fileio import atomic_path
from hsafast.errors import FeatureFileError

__all__ = ["FeatureFile", "read_feature_file", "write_feature_file"]

FORMAT_NAME = "hsafast-features"
FORMAT_VERSION = 1
_STRING_ATTRS = ("encoder", "encoder_hash", "stain", "slide_id")


@dataclass(frozen=True)
class FeatureFile:
    """The tiles of one slide: coordinates, optional features, and how they were made."""

    coords: np.ndarray
    """(N, 2) int64 level-0 top-left corners, x then y."""
    patch_size: int | None
    """Tile edge in pixels as the encoder saw it (None only for CLAM feature files)."""
    patch_size_level0: int | None
    """Tile edge in level-0 pixels (None only for legacy files that do not record it)."""
    features: np.ndarray | None = None
    """(N, D) tile embeddings, finite; None for coordinates-only files."""
    target_mpp: float | None = None
    """Target pixel size in micrometres (None when the file records a magnification only)."""
    level: int | None = None
    """Slide level the tiles were read from."""
    encoder: str = ""
    encoder_hash: str = ""
    stain: str = ""
    slide_id: str = ""
    coords_pair: np.ndarray | None = None
    """(N, 2) int64 matching corners in the paired slide, after registration."""
    targets: np.ndarray | None = None
    """(N, ...) stain-derived targets per tile."""
    tissue_fraction: np.ndarray | None = None
    """(N,) share of each tile covered by the tissue mask, as tiling measured it."""
    attrs: dict[str, Any] = field(default_factory=dict)
    """Other attributes found in the file (TRIDENT magnifications, CLAM fields...)."""
    layout: str = "hsafast"
    """The layout the file was read from: 'hsafast', 'trident' or 'clam'."""

    def __post_init__(self) -> None:
        _validate(self, None)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def has_features(self) -> bool:
        return self.features is not None

    def with_features(self, features: np.ndarray, encoder: str, encoder_hash: str) -> FeatureFile:
        """A copy with ``features`` (N x D) from ``encoder`` attached."""
        return replace(self, features=features, encoder=encoder, encoder_hash=encoder_hash)

    @classmethod
    def from_grid(cls, grid: Any, slide_id: str = "", stain: str = "") -> FeatureFile:
        """A coordinates-only file for the tiles of a ``TileGrid``."""
        return cls(
            coords=np.asarray(grid.coords, dtype=np.int64),
            patch_size=int(grid.size),
            patch_size_level0=int(grid.patch_size_level0),
            target_mpp=float(grid.target_mpp),
            level=int(grid.level),
            slide_id=slide_id,
            stain=stain,
            tissue_fraction=np.asarray(grid.tissue_fraction, dtype=np.float32),
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write to ``path`` (temporary name, then rename); returns the path."""
        return write_feature_file(path, self)


def write_feature_file(path: str | os.PathLike[str], data: FeatureFile) -> Path:
    """Write ``data`` to ``path`` atomically in the hsafast layout."""
    import h5py

    path = Path(path)
    attrs: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "encoder": data.encoder,
        "encoder_hash": data.encoder_hash,
        "stain": data.stain,
        "slide_id": data.slide_id,
    }
    if data.patch_size is not None:
        attrs["patch_size"] = int(data.patch_size)
    if data.patch_size_level0 is not None:
        attrs["patch_size_level0"] = int(data.patch_size_level0)
    if data.target_mpp is not None:
        attrs["target_mpp"] = float(data.target_mpp)
    if data.level is not None:
        attrs["level"] = int(data.level)
    try:
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            coords = f.create_dataset("coords", data=np.asarray(data.coords, dtype=np.int64))
            if data.features is not None:
                f.create_dataset("features", data=data.features)
            if data.coords_pair is not None:
                f.create_dataset("coords_pair", data=np.asarray(data.coords_pair, dtype=np.int64))
            if data.targets is not None:
                f.create_dataset("targets", data=data.targets)
            if data.tissue_fraction is not None:
                f.create_dataset("tissue_fraction", data=data.tissue_fraction)
            for key, value in attrs.items():
                f.attrs[key] = value
                coords.attrs[key] = value
    except OSError as exc:
        raise FeatureFileError(f"cannot write: {exc}", path) from exc
    return path


def read_feature_file(path: str | os.PathLike[str]) -> FeatureFile:
    """Load a feature or coordinates file written by hsafast, TRIDENT or CLAM."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FeatureFileError("no such file", path)
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f or not isinstance(f["coords"], h5py.Dataset):
                raise FeatureFileError("missing dataset 'coords'", path)
            coords_ds = f["coords"]
            root = _plain_attrs(f.attrs)
            on_coords = _plain_attrs(coords_ds.attrs)
            coords = np.asarray(coords_ds[()])
            features = _optional(f, "features")
            coords_pair = _optional(f, "coords_pair")
            targets = _optional(f, "targets")
            tissue_fraction = _optional(f, "tissue_fraction")
    except FeatureFileError:
        raise
    except OSError as exc:
        raise FeatureFileError(f"not a readable HDF5 file: {exc}", path) from exc

    coords = _integer_coords(coords, "coords", path)
    if coords_pair is not None:
        coords_pair = _integer_coords(coords_pair, "coords_pair", path)
    merged = {**on_coords, **root}
    layout = _layout(root, on_coords)
    patch_size, patch_size_level0, level = _geometry(layout, merged, path)
    known = {"format", "format_version", "patch_size", "patch_size_level0", "target_mpp", "level"}
    extra = {k: v for k, v in merged.items() if k not in known and k not in _STRING_ATTRS}
    target_mpp = merged.get("target_mpp")
    try:
        return FeatureFile(
            coords=coords,
            patch_size=patch_size,
            patch_size_level0=patch_size_level0,
            features=features,
            target_mpp=float(target_mpp) if target_mpp is not None else None,
            level=level,
            coords_pair=coords_pair,
            targets=targets,
            tissue_fraction=tissue_fraction,
            attrs=extra,
            layout=layout,
            **{k: str(merged.get(k, "")) for k in _STRING_ATTRS},
        )
    except FeatureFileError as exc:
        raise FeatureFileError(exc.reason, path) from None


# ---- helpers -----------------------------------------------------------------------
def _plain_attrs(attrs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(()).item()
        elif isinstance(value, np.generic):
            value = value.item()
        out[str(key)] = value
    return out


def _optional(f: Any, name: str) -> np.ndarray | None:
    return np.asarray(f[name][()]) if name in f else None


def _integer_coords(values: np.ndarray, name: str, path: Path) -> np.ndarray:
    if values.ndim != 2 or values.shape[1] != 2:
        raise FeatureFileError(f"'{name}' must be N x 2, got shape {values.shape}", path)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise FeatureFileError(f"'{name}' holds non-integer or non-finite values", path)
    elif values.dtype.kind not in "iu":
        raise FeatureFileError(f"'{name}' must be numeric, got {values.dtype}", path)
    return values.astype(np.int64)


def _layout(root: dict[str, Any], on_coords: dict[str, Any]) -> str:
    if root.get("format") == FORMAT_NAME:
        return "hsafast"
    if "patch_size_level0" in on_coords or "target_magnification" in on_coords:
        return "trident"
    if "patch_level" in on_coords or not (root or on_coords):
        return "clam"  # CLAM coordinates (patch_level) or CLAM features (no attributes)
    return "unknown"


def _geometry(
    layout: str, attrs: dict[str, Any], path: Path
) -> tuple[int | None, int | None, int | None]:
    """(patch_size, patch_size_level0, level) from the attributes of any layout."""
    if "patch_size" not in attrs:
        if layout == "clam":
            return None, None, None  # CLAM feature files record no geometry
        raise FeatureFileError(
            "no 'patch_size' attribute (on the file or its 'coords' dataset): "
            "not a hsafast, TRIDENT or CLAM feature file",
            path,
        )
    patch_size = _positive_int(attrs["patch_size"], "patch_size", path)
    level0 = attrs.get("patch_size_level0")
    level = attrs.get("level", attrs.get("patch_level"))
    if level0 is None and layout == "clam" and "downsample" in attrs:
        # CLAM: patch_size is in pixels of patch_level; downsample is that level's (dx, dy)
        downsample = np.ravel(np.asarray(attrs["downsample"], dtype=np.float64))
        level0 = round(patch_size * float(downsample[0]))
    return (
        patch_size,
        _positive_int(level0, "patch_size_level0", path) if level0 is not None else None,
        int(level) if level is not None else None,
    )


def _positive_int(value: Any, name: str, path: Path) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FeatureFileError(f"attribute '{name}' is not a number: {value!r}", path) from None
    if not (number > 0 and number == int(number)):
        raise FeatureFileError(f"attribute '{name}' must be a positive integer, got {value}", path)
    return int(number)


def _validate(data: FeatureFile, path: Path | None) -> None:
    n = data.coords.shape[0] if data.coords.ndim == 2 else -1
    if data.coords.ndim != 2 or data.coords.shape[1] != 2:
        raise FeatureFileError(f"coords must be N x 2, got shape {data.coords.shape}", path)
    if data.coords.dtype != np.int64:
        raise FeatureFileError(f"coords must be int64, got {data.coords.dtype}", path)
    for name in ("patch_size", "patch_size_level0"):
        value = getattr(data, name)
        if value is not None and not value > 0:
            raise FeatureFileError(f"{name} must be positive, got {value}", path)
    if data.target_mpp is not None and not (np.isfinite(data.target_mpp) and data.target_mpp > 0):
        raise FeatureFileError(f"target_mpp must be positive, got {data.target_mpp}", path)
    if data.features is not None:
        feats = data.features
        if feats.ndim != 2 or feats.shape[0] != n:
            raise FeatureFileError(
                f"features must be N x D with N = {n} coordinates, got shape {feats.shape}", path
            )
        if feats.dtype.kind not in "fiu":
            raise FeatureFileError(f"features must be numeric, got {feats.dtype}", path)
        if feats.dtype.kind == "f":
            bad = ~np.isfinite(feats)
            if bad.any():
                rows = np.flatnonzero(bad.any(axis=1))
                raise FeatureFileError(
                    f"features hold {int(bad.sum())} NaN/inf values in {rows.size} tiles "
                    f"(first at tile {int(rows[0])})",
                    path,
                )
    if data.coords_pair is not None and data.coords_pair.shape != (n, 2):
        raise FeatureFileError(
            f"coords_pair must be {n} x 2 like coords, got shape {data.coords_pair.shape}", path
        )
    if data.tissue_fraction is not None and data.tissue_fraction.shape != (n,):
        raise FeatureFileError(
            f"tissue_fraction must have one value per tile ({n}), "
            f"got shape {data.tissue_fraction.shape}",
            path,
        )
    if data.targets is not None and (data.targets.ndim == 0 or data.targets.shape[0] != n):
        raise FeatureFileError(
            f"targets must have one row per tile ({n}), got shape {data.targets.shape}", path
        )
