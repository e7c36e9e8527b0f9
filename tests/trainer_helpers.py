"""Prepared training cases made directly (no slide reading), for fast trainer tests.

Each case's tiles are random textures with dark nuclei-like blobs; in the paired IHC tile
a share of those blobs is brown (DAB), and that share is the tile's target. A case's label
is "intermediate/high" when its mean share is above 0.35, and the H&E blobs of positive
tiles are larger, so that H&E carries (imperfect) information about the label, as in the
simulator. The cache entries are written under the keys ``prepare_cases`` looks for, so a
run finds every case prepared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hsafast.manifest import Case, read_manifest, write_manifest
from hsafast.trainer.config import DataConfig, TrainConfig
from hsafast.trainer.prepare import PreparedCase, cache_key

TILE = 32


def _tile(rng: np.random.Generator, share: float, ihc: bool, size: int = TILE) -> np.ndarray:
    base = np.array([235, 200, 225] if not ihc else [225, 225, 235], np.float64)
    img = base + rng.normal(0, 8, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(4, 9))):
        cy, cx = rng.uniform(0, size, 2)
        positive = rng.random() < share
        r = rng.uniform(1.5, 2.5) * (1.4 if positive else 1.0)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if ihc:
            colour = [120, 70, 30] if positive else [90, 90, 160]
        else:
            colour = [60, 20, 110] if positive else [110, 60, 160]
        img[blob] = colour + rng.normal(0, 6, (int(blob.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_case(
    case_id: str, patient_id: str, rng: np.random.Generator, high: bool, n: int
) -> PreparedCase:
    level = rng.uniform(0.4, 0.9) if high else rng.uniform(0.0, 0.3)
    shares = np.clip(level + rng.normal(0, 0.15, n), 0, 1)
    he = np.stack([_tile(rng, s, False) for s in shares])
    pair = np.stack([_tile(rng, s, True) for s in shares])
    ihc = np.stack([_tile(rng, s, True) for s in shares[: max(2, n - 2)]])
    weight = (rng.random(n) > 0.2).astype(np.float32)
    coords = np.stack([np.arange(n) * 64, np.zeros(n)], 1).astype(np.int64)
    return PreparedCase(
        case_id=case_id,
        patient_id=patient_id,
        marker="ki67",
        label="intermediate/high" if high else "low",
        stain_class="high" if high else "low",
        stain_score=float(shares.mean()),
        he_coords=coords,
        he_tiles=he,
        ihc_coords=coords[: len(ihc)],
        ihc_tiles=ihc,
        pair_tiles=pair,
        targets=(shares * weight).astype(np.float32),
        target_weight=weight,
        patch_size_level0=64,
        registration="ok",
    )


def data_config(**changes: Any) -> DataConfig:
    return DataConfig(target_mpp=2.0, tile_size=TILE, workers=1, **changes)


def make_cohort(
    root: Path, n_cases: int = 12, seed: int = 0, tiles: int = 10, high_every: int = 2
) -> Path:
    """Write a manifest, placeholder slide files and a filled cache; returns the manifest.

    Every ``high_every``-th case is "intermediate/high" (0: none)."""
    rng = np.random.default_rng(seed)
    slides = root / "slides"
    slides.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(n_cases):
        case_id = f"case{i:03d}"
        patient = f"patient{i // 2:03d}" if i < n_cases // 2 else f"patient{i:03d}"
        he, ihc = slides / f"{case_id}_HE.tif", slides / f"{case_id}_IHC.tif"
        he.write_bytes(b"placeholder: the trainer finds this case prepared in its cache")
        ihc.write_bytes(b"placeholder")
        cases.append(Case(case_id, patient, he, ihc, "ki67", None))
    manifest = root / "manifest.csv"
    write_manifest(manifest, cases)
    cache = root / "cache"
    cache.mkdir(exist_ok=True)
    data = data_config(cache=str(cache))
    for i, case in enumerate(read_manifest(manifest).cases):
        high = high_every > 0 and i % high_every == high_every - 1
        prepared = synthetic_case(case.case_id, case.patient_id, rng, high, tiles)
        prepared.save(cache / f"{case.case_id}-{cache_key(case, data, 'stain')}.npz")
    return manifest


def run_config(root: Path, out: Path, **changes: Any) -> TrainConfig:
    """A fast configuration over the cohort of ``make_cohort(root)``."""
    from hsafast.trainer.config import EncoderConfig, OptimConfig, PatchConfig, SlideConfig

    slide = SlideConfig(
        embed_dim=16,
        attention_hidden=8,
        optim=OptimConfig(epochs=3, batch_size=4, lr=1e-3, warmup_epochs=1),
        **changes.pop("slide", {}),
    )
    patch = PatchConfig(
        projection_dim=8,
        optim=OptimConfig(epochs=2, batch_size=16, lr=1e-3, warmup_epochs=1),
        slide_optim=OptimConfig(epochs=2, batch_size=4, lr=1e-3, warmup_epochs=0),
        **changes.pop("patch", {}),
    )
    return TrainConfig(
        manifest=str(root / "manifest.csv"),
        out=str(out),
        folds=changes.pop("folds", 2),
        val_fraction=changes.pop("val_fraction", 0.34),
        data=changes.pop("data", data_config(cache=str(root / "cache"))),
        encoder=EncoderConfig(name="hsafast-test-tiny"),
        slide=slide,
        patch=patch,
        **changes,
    )
