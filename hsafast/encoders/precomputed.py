"""Precomputed tile features as inputs: FeatureFiles of hsafast, TRIDENT and CLAM.

A slide's features come as a ``FeatureBag`` (features, coordinates when known, and the
encoder they came from). hsafast files record the encoder's name and weight hash. TRIDENT
records neither, but writes each encoder's features to a folder ``features_<encoder>/``,
from which the name is read (TRIDENT's names of encoders registered here are mapped:
``uni_v1`` -> ``uni``, ``conch_v1`` -> ``conch-style``). CLAM records nothing; its ``.pt``
feature files (a bare N x D tensor) take their coordinates from the ``h5_files/`` folder next
to ``pt_files/`` when it is there. ``encoder=`` names the encoder of files that do not say.

``feature_bags`` reads a set of slides and refuses, before any training starts, a set whose
widths, encoder names or weight hashes differ, naming the first file that differs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsafast.errors import FeatureFileError
from hsafast.features import FeatureFile, read_feature_file

__all__ = ["TRIDENT_NAMES", "FeatureBag", "feature_bags", "read_feature_bag"]

#: TRIDENT's names of the encoders registered here under another name.
TRIDENT_NAMES = {"uni_v1": "uni", "conch_v1": "conch-style"}


@dataclass(frozen=True)
class FeatureBag:
    """The tile features of one slide and where they came from."""

    features: np.ndarray
    """(N, D) float32 tile embeddings, finite."""
    coords: np.ndarray | None
    """(N, 2) int64 level-0 top-left corners; None for a CLAM .pt file without its .h5."""
    encoder: str
    """The encoder's registry name ('' when the file does not say and none was given)."""
    encoder_hash: str
    """SHA-256 of the encoder's weights ('' when not recorded)."""
    source: Path
    """The file the features were read from."""
    layout: str
    """'hsafast', 'trident', 'clam' or 'clam-pt'."""
    file: FeatureFile | None = None
    """The whole FeatureFile (targets, paired coordinates, geometry), for .h5 inputs."""

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])


def read_feature_bag(path: str | os.PathLike[str], encoder: str | None = None) -> FeatureBag:
    """Features of one slide from an hsafast/TRIDENT/CLAM ``.h5`` or a CLAM ``.pt`` file."""
    source = Path(path)
    if source.suffix == ".pt":
        return _read_clam_pt(source, encoder)
    data = read_feature_file(source)
    if data.features is None:
        raise FeatureFileError("holds coordinates only, no features (run hsafast embed)", source)
    name = data.encoder or encoder or _encoder_from_folder(source) or ""
    if encoder and data.encoder and data.encoder != encoder:
        raise FeatureFileError(
            f"features come from encoder {data.encoder!r}, not {encoder!r} as asked", source
        )
    return FeatureBag(
        features=np.asarray(data.features, dtype=np.float32),
        coords=data.coords,
        encoder=TRIDENT_NAMES.get(name, name),
        encoder_hash=data.encoder_hash,
        source=source,
        layout=data.layout,
        file=data,
    )


def feature_bags(
    paths: Iterable[str | os.PathLike[str]], encoder: str | None = None
) -> list[FeatureBag]:
    """Read several slides' features; they must share width, encoder name and weight hash."""
    bags = [read_feature_bag(p, encoder) for p in paths]
    if not bags:
        return bags
    first = bags[0]
    for bag in bags[1:]:
        if bag.dim != first.dim:
            raise FeatureFileError(
                f"features are {bag.dim}-d but {first.source.name} has {first.dim}-d: "
                "files of different encoders cannot be mixed",
                bag.source,
            )
        if bag.encoder and first.encoder and bag.encoder != first.encoder:
            raise FeatureFileError(
                f"features come from encoder {bag.encoder!r} but {first.source.name} from "
                f"{first.encoder!r}",
                bag.source,
            )
        if bag.encoder_hash and first.encoder_hash and bag.encoder_hash != first.encoder_hash:
            raise FeatureFileError(
                f"features come from {bag.encoder or 'encoder'} weights {bag.encoder_hash[:12]} "
                f"but {first.source.name} from weights {first.encoder_hash[:12]}",
                bag.source,
            )
    return bags


def _encoder_from_folder(path: Path) -> str | None:
    """TRIDENT's ``features_<encoder>/`` folder name."""
    folder = path.parent.name
    return folder[len("features_") :] if folder.startswith("features_") else None


def _read_clam_pt(path: Path, encoder: str | None) -> FeatureBag:
    import torch

    if not path.is_file():
        raise FeatureFileError("no such file", path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and format errors alike mean "not a feature file"
        raise FeatureFileError(f"not a readable CLAM .pt feature file: {exc}", path) from exc
    if not isinstance(loaded, torch.Tensor) or loaded.ndim != 2:
        raise FeatureFileError("a CLAM .pt feature file holds one N x D tensor", path)
    features = loaded.float().numpy()
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise FeatureFileError(
            f"features hold {int(bad.sum())} NaN/inf values in {rows.size} tiles "
            f"(first at tile {int(rows[0])})",
            path,
        )
    coords = None
    sibling = path.parent.parent / "h5_files" / f"{path.stem}.h5"
    if path.parent.name == "pt_files" and sibling.is_file():
        coords = read_feature_file(sibling).coords
        if len(coords) != len(features):
            raise FeatureFileError(
                f"{len(features)} feature rows but {len(coords)} coordinates in {sibling}", path
            )
    return FeatureBag(features, coords, encoder or "", "", path, "clam-pt")
