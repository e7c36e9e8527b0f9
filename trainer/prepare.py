"""From a manifest row to training inputs: tiles, registered pairs, stain targets, a label.

Per case, once (then cached as one ``.npz`` in the cache folder):

- H&E: tissue mask, tile grid at ``data.target_mpp``, the tiles (uint8).
- IHC: its own tissue grid and tiles (slide mode's IHC branch needs no registration, as in
  the authors' code), and the slide label read from the DAB stain of those tiles at full
  resolution (``hsafast.quantify`` + ``slide_label``).
- Pairs (``data.register``): ``hsafast.register`` maps the H&E tiles onto the IHC slide;
  ``paired_tiles`` cuts the IHC tile of each H&E tile, resampled into the H&E frame; the
  patch target of a tile is the positive share of the scored cells in that IHC region
  (``hsafast.quantify`` at full resolution), with weight 0 where it holds fewer than
  ``data.min_cells`` cells.

Nothing here reads the simulator's truth.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsafast.errors import HsafastError
from hsafast.manifest import Case

from .config import DataConfig

log = logging.getLogger("hsafast.trainer")

#: Bump when the prepared arrays change meaning (invalidates every cache entry).
PREPARE_VERSION = 1
#: Pixel size at which the stain is read (um/px): cells are detected at 20x, as
#: ``hsafast.quantify`` is tuned for.
STAIN_MPP = 0.5


@dataclass
class PreparedCase:
    """Training inputs of one case (arrays in memory)."""

    case_id: str
    patient_id: str
    marker: str
    label: str | None
    """Binary label ("low" / "intermediate/high"), from the stain or the manifest."""
    stain_class: str | None
    """The marker's clinical class read from the IHC slide (None with manifest labels)."""
    stain_score: float
    he_coords: np.ndarray
    """(N, 2) int64 level-0 top-left corners of the H&E tiles."""
    he_tiles: np.ndarray
    """(N, S, S, 3) uint8 H&E tiles at the target pixel size."""
    ihc_coords: np.ndarray
    """(M, 2) int64 corners of the IHC slide's own tissue tiles."""
    ihc_tiles: np.ndarray
    """(M, S, S, 3) uint8 IHC tiles (slide mode's IHC branch)."""
    pair_tiles: np.ndarray
    """(N, S, S, 3) uint8 IHC tiles resampled onto the H&E tiles; (0, S, S, 3) unregistered."""
    targets: np.ndarray
    """(N,) float32 stain-derived positive share per H&E tile (0 where unknown)."""
    target_weight: np.ndarray
    """(N,) float32: 1 where the paired IHC tile holds at least ``min_cells`` scored cells."""
    patch_size_level0: int
    registration: str
    """"ok", "failed: <reason>" or "not registered"."""

    @property
    def paired(self) -> bool:
        return len(self.pair_tiles) == len(self.he_tiles) and len(self.he_tiles) > 0

    def save(self, path: Path) -> None:
        from hsafast._fileio import atomic_path

        meta = {
            k: getattr(self, k)
            for k in (
                "case_id",
                "patient_id",
                "marker",
                "label",
                "stain_class",
                "stain_score",
                "patch_size_level0",
                "registration",
            )
        }
        arrays = {
            k: getattr(self, k)
            for k in (
                "he_coords",
                "he_tiles",
                "ihc_coords",
                "ihc_tiles",
                "pair_tiles",
                "targets",
                "target_weight",
            )
        }
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path) -> PreparedCase:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return cls(**meta, **arrays)


def cache_key(case: Case, data: DataConfig, label_source: str) -> str:
    """Hash of what a prepared case depends on: the files (size, mtime) and the settings."""
    parts: dict[str, Any] = {
        "version": PREPARE_VERSION,
        "case": [case.case_id, case.patient_id, case.marker, case.label],
        "labels": label_source,
        "data": {
            k: v
            for k, v in asdict(data).items()
            if k in ("target_mpp", "tile_size", "min_tissue", "max_tiles", "min_cells", "register")
        },
    }
    for name in ("he_path", "ihc_path"):
        p = Path(getattr(case, name))
        st = p.stat()
        parts[name] = [str(p), st.st_size, st.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _subset(n: int, k: int, seed: str) -> np.ndarray:
    """A seeded random subset of k of n indices, in order (all when n <= k)."""
    if n <= k:
        return np.arange(n)
    digest = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(digest)
    return np.sort(rng.choice(n, size=k, replace=False))


def _grid(slide: Any, data: DataConfig, case_id: str) -> Any:
    from hsafast.tiling import tile_grid
    from hsafast.tissue import detect_tissue

    grid = tile_grid(
        slide,
        detect_tissue(slide),
        mpp=data.target_mpp,
        size=data.tile_size,
        min_tissue=data.min_tissue,
    )
    keep = _subset(len(grid), data.max_tiles, f"{case_id}:{slide.path.name}")
    if len(keep) < len(grid):
        from dataclasses import replace

        grid = replace(grid, coords=grid.coords[keep], tissue_fraction=grid.tissue_fraction[keep])
    return grid


def _read(slide: Any, grid: Any) -> np.ndarray:
    from hsafast.reading import read_tiles

    if len(grid) == 0:
        return np.zeros((0, grid.size, grid.size, 3), np.uint8)
    return np.concatenate([b.tiles for b in read_tiles(slide, grid, batch_size=64, workers=1)])


def _stain_grid(slide: Any, coords: np.ndarray, size0: int) -> tuple[np.ndarray, int, int]:
    """(coords, level, size) that read the tiles at ``STAIN_MPP`` or the nearest finer level."""
    level = slide.best_level_for_downsample(STAIN_MPP / slide.mpp)
    ds = slide.level_downsamples[level]
    return coords, level, max(1, round(size0 / ds))


def _resize(tile: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if tile.shape[0] == size and tile.shape[1] == size:
        return tile
    return cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA)


def prepare_case(case: Case, data: DataConfig, label_source: str) -> PreparedCase:
    """Tiles, label, pairs and targets of one case (see the module docstring)."""
    from hsafast.registration import paired_tiles, register
    from hsafast.slides import open_slide
    from hsafast.stain import quantify, slide_label

    with open_slide(case.he_path) as he, open_slide(case.ihc_path) as ihc:
        he_grid = _grid(he, data, case.case_id)
        ihc_grid = _grid(ihc, data, case.case_id)
        he_tiles = _read(he, he_grid)
        ihc_tiles = _read(ihc, ihc_grid)
        label, stain_class, score = case.label, None, float("nan")
        if label_source == "stain":
            coords, level, size = _stain_grid(ihc, ihc_grid.coords, ihc_grid.patch_size_level0)
            reading = slide_label(quantify(ihc, coords, case.marker, level=level, size=size))
            label, stain_class, score = reading.binary, reading.label, reading.score
            if label is None:
                raise HsafastError(
                    f"case {case.case_id}: no label can be read from the IHC stain "
                    f"({'; '.join(reading.flags)})",
                    case.ihc_path,
                )
        s = data.tile_size
        pair_tiles = np.zeros((0, s, s, 3), np.uint8)
        targets = np.zeros(len(he_tiles), np.float32)
        weight = np.zeros(len(he_tiles), np.float32)
        status = "not registered"
        if data.register and len(he_tiles):
            reg = register(he, ihc)
            if reg.ok:
                status = "ok"
                pairs = list(
                    paired_tiles(he, ihc, reg, he_grid.coords, he_grid.read_size, he_grid.level)
                )
                pair_tiles = np.stack([_resize(p.ihc_tile, s) for p in pairs])
                ihc_xy = np.stack([p.ihc_coord for p in pairs])
                size0 = round(he_grid.patch_size_level0 * he.mpp / ihc.mpp)
                coords, level, size = _stain_grid(ihc, ihc_xy, size0)
                stats = quantify(ihc, coords, case.marker, level=level, size=size)
                from hsafast.stain import get_marker

                grade = get_marker(case.marker).positive_grade
                cells = stats.cells[:, 0]
                ok = stats.included & (cells >= max(1, data.min_cells))
                targets = stats.positive_cell_fraction(grade).astype(np.float32)
                weight = ok.astype(np.float32)
                targets[~ok] = 0.0
            else:
                status = f"failed: {reg.reason}"
                log.warning("%s: registration failed (%s); no tile pairs", case.case_id, reg.reason)
    return PreparedCase(
        case_id=case.case_id,
        patient_id=case.patient_id,
        marker=case.marker,
        label=label,
        stain_class=stain_class,
        stain_score=score,
        he_coords=he_grid.coords,
        he_tiles=he_tiles,
        ihc_coords=ihc_grid.coords,
        ihc_tiles=ihc_tiles,
        pair_tiles=pair_tiles,
        targets=targets,
        target_weight=weight,
        patch_size_level0=int(he_grid.patch_size_level0),
        registration=status,
    )


@dataclass(frozen=True)
class PrepareFailure:
    case_id: str
    path: str
    reason: str


def _prepare_or_load(
    case: Case, data: DataConfig, label_source: str, cache: str
) -> tuple[str, str | PrepareFailure]:
    path = Path(cache) / f"{case.case_id}-{cache_key(case, data, label_source)}.npz"
    if not path.is_file():
        try:
            prepared = prepare_case(case, data, label_source)
        except HsafastError as exc:
            return case.case_id, PrepareFailure(case.case_id, str(exc.path or ""), exc.reason)
        prepared.save(path)
    return case.case_id, str(path)


def prepare_cases(
    cases: list[Case],
    data: DataConfig,
    label_source: str,
    cache_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Path], list[PrepareFailure]]:
    """Prepare (or find in the cache) every case; returns {case_id: npz path} and failures.

    Cases run in ``data.workers`` spawned processes; a case that fails (no tissue, a slide
    that cannot be read, no readable stain) is recorded and the others go on.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    workers = data.workers or min(os.cpu_count() or 1, len(cases))
    done: dict[str, Path] = {}
    failures: list[PrepareFailure] = []

    def collect(case_id: str, result: str | PrepareFailure) -> None:
        if isinstance(result, PrepareFailure):
            failures.append(result)
            log.warning("%s: %s (%s)", case_id, result.reason, result.path)
        else:
            done[case_id] = Path(result)
        if progress:
            progress(len(done) + len(failures), len(cases))

    if workers <= 1 or len(cases) <= 1:
        for case in cases:
            collect(*_prepare_or_load(case, data, label_source, str(cache_dir)))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a forked child would inherit torch's and OpenCV's thread pools mid-state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(_prepare_or_load, c, data, label_source, str(cache_dir)) for c in cases
            ]
            for fut in futures:
                collect(*fut.result())
    return done, failures
