"""Tile features for the slide-level modes: from FeatureFiles or from a frozen encoder.

Feature files are looked up in ``data.features`` by the case's item ID
(``<case_id>.HE.h5`` and ``<case_id>.<marker>.h5``, as ``hsafast embed`` names them
from a manifest), else by the slide file's stem (``<stem>.h5``, as TRIDENT and CLAM
name them); every file must hold features of one width from one encoder (name and
weight hash, where recorded), without NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hsafast.bundle import EncoderSpec
from hsafast.cohort.ids import case_item_id
from hsafast.encoders.base import TileEncoder
from hsafast.errors import FeatureFileError, HsafastError
from hsafast.features import FeatureFile, read_feature_file

from .checks import TrainingDataError
from .prepare import PreparedCase, _subset

__all__ = ["SlideFeatures", "features_from_encoder", "features_from_files"]

#: case_id -> (H&E features N x D, IHC features M x D)
SlideFeatures = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _feature_path(folder: Path, slide: Path, item_id: str) -> Path:
    by_id = folder / f"{item_id}.h5"
    return by_id if by_id.is_file() else folder / f"{slide.stem}.h5"


def features_from_files(
    folder: Path, cases: list[tuple[str, Path, Path, str]], max_tiles: int
) -> tuple[SlideFeatures, dict[str, str]]:
    """Load (and check) the H&E and IHC features of ``(case_id, he_path, ihc_path, marker)``
    cases.

    Returns the features and the encoder they come from (name, hash, dim).
    """
    out: SlideFeatures = {}
    first: tuple[Path, FeatureFile] | None = None
    for case_id, he_path, ihc_path, marker in cases:
        pair = []
        for slide, part in ((he_path, "HE"), (ihc_path, marker)):
            path = _feature_path(folder, slide, case_item_id(case_id, part))
            if not path.is_file():
                raise TrainingDataError(f"case {case_id}: no feature file for {slide.name}", path)
            ff = read_feature_file(path)  # NaN/inf and malformed files raise here
            if ff.features is None or len(ff) == 0:
                raise TrainingDataError("holds no tile features", path)
            if first is None:
                first = (path, ff)
            _same_encoder(first, path, ff)
            keep = _subset(len(ff), max_tiles, f"{case_id}:{slide.name}")
            pair.append(torch.from_numpy(np.asarray(ff.features[keep], np.float32)))
        out[case_id] = (pair[0], pair[1])
    assert first is not None
    ref_path, ref = first
    assert ref.features is not None
    encoder = {
        "name": ref.encoder or "unknown",
        "hash": ref.encoder_hash,
        "dim": str(ref.features.shape[1]),
    }
    try:  # a registered encoder's name must come with its width
        EncoderSpec.from_features(encoder["name"], encoder["hash"], int(encoder["dim"]))
    except HsafastError as exc:
        raise FeatureFileError(exc.reason, ref_path) from None
    return out, encoder


def _same_encoder(first: tuple[Path, FeatureFile], path: Path, ff: FeatureFile) -> None:
    ref_path, ref = first
    assert ref.features is not None and ff.features is not None
    if ff.features.shape[1] != ref.features.shape[1]:
        raise FeatureFileError(
            f"features are {ff.features.shape[1]}-d but {ref_path.name} holds "
            f"{ref.features.shape[1]}-d features; all files must come from one encoder",
            path,
        )
    if ff.encoder != ref.encoder or (
        ff.encoder_hash and ref.encoder_hash and ff.encoder_hash != ref.encoder_hash
    ):
        raise FeatureFileError(
            f"features come from encoder {ff.encoder!r} ({ff.encoder_hash[:12] or 'no hash'}) "
            f"but {ref_path.name} from {ref.encoder!r} ({ref.encoder_hash[:12] or 'no hash'}); "
            "all files must come from one encoder",
            path,
        )


def features_from_encoder(
    he_encoder: TileEncoder,
    ihc_encoder: TileEncoder,
    cases: list[PreparedCase],
    device: str = "cpu",
) -> SlideFeatures:
    """Embed every case's H&E and IHC tiles (encoders in eval mode)."""
    from .data import embed_tiles

    out: SlideFeatures = {}
    for case in cases:
        he = embed_tiles(he_encoder, case.he_tiles, device)
        ihc = embed_tiles(ihc_encoder, case.ihc_tiles, device)
        for name, t in (("H&E", he), ("IHC", ihc)):
            if not torch.isfinite(t).all():
                raise TrainingDataError(
                    f"case {case.case_id}: the encoder gave NaN/inf {name} features"
                )
        out[case.case_id] = (he, ihc)
    return out


def save_features(path: Path, features: SlideFeatures) -> None:
    from hsafast._fileio import atomic_path

    arrays: dict[str, np.ndarray] = {}
    for case_id, (he, ihc) in features.items():
        arrays[f"he/{case_id}"] = he.numpy()
        arrays[f"ihc/{case_id}"] = ihc.numpy()
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def load_features(path: Path) -> SlideFeatures:
    out: SlideFeatures = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            stain, case_id = key.split("/", 1)
            if stain == "he":
                out[case_id] = (torch.from_numpy(z[key]), torch.from_numpy(z[f"ihc/{case_id}"]))
    return out
