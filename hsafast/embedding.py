"""Embedding a slide's tiles with a tile encoder, into a FeatureFile.

Tiles come from ``read_tiles`` (reader threads decode JPEG tiles without the GIL); a feeder
thread turns each batch into the encoder's input (``TileEncoder.preprocess``) while the
calling thread runs the encoder on the previous one, so on a CPU reading, decoding and
preprocessing overlap with encoding. At most ``prefetch`` preprocessed batches wait in a
queue, so memory stays bounded on any slide. The FeatureFile records the encoder's name and
weight hash, so features of different encoders can never be mixed unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsafast.errors import InvalidParameterError, NoTissueError

if TYPE_CHECKING:
    import torch

    from hsafast.encoders.base import TileEncoder
    from hsafast.features import FeatureFile
    from hsafast.reading import TileBatch
    from hsafast.slides import Slide
    from hsafast.tiling import TileGrid
    from hsafast.tissue import TissueConfig

__all__ = ["PRECISIONS", "EmbedConfig", "embed_slide", "encode_batches", "grid_from_features"]

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class EmbedConfig:
    """How tiles are cut and encoded."""

    target_mpp: float = 0.5
    """Tile pixel size in micrometres (0.5 um/px, "20x", as the paper's tiles)."""
    tile_size: int = 256
    """Tile edge in pixels at ``target_mpp`` (256 px, the paper's tiles)."""
    min_tissue: float = 0.25
    """Least share of a tile covered by tissue for it to be encoded (as ``hsafast tile``)."""
    batch_size: int = 64
    """Tiles per encoder call: large enough to keep the encoder's GEMMs efficient, small
    enough that a batch of 256-px tiles (12.6 MB as uint8) stays in cache-friendly sizes."""
    workers: int | None = None
    """Tile reader threads (default: every core the process may use)."""
    prefetch: int = 2
    """Preprocessed batches waiting for the encoder (and batches read ahead by the readers)."""
    device: str = "cpu"
    """Where the encoder runs ('cpu', 'cuda', 'cuda:1'...)."""
    precision: str = "fp32"
    """'fp32'; 'bf16' (autocast: about 2x faster on CPUs with AVX-512 BF16 or AMX, features
    within about 1% of fp32); 'fp16' (autocast, CUDA only)."""

    def __post_init__(self) -> None:
        def bad(name: str, reason: str) -> InvalidParameterError:
            return InvalidParameterError(f"EmbedConfig.{name}: {reason}")

        if not (isinstance(self.target_mpp, int | float) and 0 < self.target_mpp < 1000):
            raise bad(
                "target_mpp", f"must be a pixel size in (0, 1000) um, got {self.target_mpp!r}"
            )
        for name in ("tile_size", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise bad(name, f"must be a positive integer, got {value!r}")
        if not (isinstance(self.min_tissue, int | float) and 0 <= self.min_tissue <= 1):
            raise bad("min_tissue", f"must be in [0, 1], got {self.min_tissue!r}")
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers >= 1):
            raise bad("workers", f"must be a positive integer or None, got {self.workers!r}")
        if not (isinstance(self.prefetch, int) and self.prefetch >= 1):
            raise bad("prefetch", f"must be a positive integer, got {self.prefetch!r}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise bad("precision", "fp16 autocast needs a CUDA device; use bf16 on a CPU")


def embed_slide(
    slide: Slide | str | os.PathLike[str],
    encoder: TileEncoder,
    tiles: FeatureFile | TileGrid | None = None,
    config: EmbedConfig | None = None,
    *,
    tissue: TissueConfig | None = None,
    slide_id: str | None = None,
    stain: str = "",
    slide_mpp: float | None = None,
    progress: bool = False,
) -> FeatureFile:
    """The features of a slide's tiles as a FeatureFile (name and hash of ``encoder`` in it).

    ``tiles`` is a coordinates file (``hsafast tile``, TRIDENT or CLAM; its targets and
    paired coordinates are kept), a ``TileGrid``, or None to detect tissue (``tissue``) and
    tile it at ``config.target_mpp`` and ``config.tile_size``.
    """
    from hsafast._fileio import safe_id
    from hsafast.features import FeatureFile
    from hsafast.reading import read_tiles
    from hsafast.slides import Slide, open_slide
    from hsafast.tiling import TileGrid, tissue_grid

    config = config or EmbedConfig()
    owned = not isinstance(slide, Slide)
    opened = open_slide(slide, mpp=slide_mpp) if not isinstance(slide, Slide) else slide
    try:
        if tiles is None:
            grid = tissue_grid(
                opened,
                mpp=config.target_mpp,
                size=config.tile_size,
                min_tissue=config.min_tissue,
                tissue=tissue,
            )
            base = FeatureFile.from_grid(grid)
        elif isinstance(tiles, TileGrid):
            grid, base = tiles, FeatureFile.from_grid(tiles)
        else:
            grid, base = grid_from_features(opened, tiles), tiles
        if len(grid) == 0:
            raise NoTissueError(
                f"no {grid.size}-px tile holds at least {config.min_tissue:.0%} tissue", opened.path
            )
        batches = read_tiles(
            opened,
            grid,
            batch_size=config.batch_size,
            workers=config.workers,
            progress=progress,
            prefetch=config.prefetch,
        )
        features = encode_batches(encoder, batches, config)
    finally:
        if owned:
            opened.close()
    return replace(
        base,
        features=features,
        encoder=encoder.name,
        encoder_hash=encoder.weights_hash,
        slide_id=slide_id or base.slide_id or safe_id(opened.path.stem),
        stain=stain or base.stain,
        patch_size=grid.size,
        patch_size_level0=grid.patch_size_level0,
        target_mpp=grid.target_mpp,
        level=grid.level,
    )


def encode_batches(
    encoder: TileEncoder, batches: Iterator[TileBatch], config: EmbedConfig | None = None
) -> np.ndarray:
    """Features (N x dim float32) of every tile of ``batches``, in order.

    A feeder thread preprocesses batch k+1 while the encoder runs on batch k.
    """
    import torch

    config = config or EmbedConfig()
    device = torch.device(config.device)
    encoder = encoder.to(device).eval()
    ready: queue.Queue[Any] = queue.Queue(maxsize=config.prefetch)
    stop = threading.Event()
    done = object()

    def offer(item: Any) -> bool:
        """Queue ``item`` unless the caller has stopped; False once it has."""
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ready.put(item, timeout=0.1)
                return True
        return False

    def feed() -> None:
        try:
            for batch in batches:
                if not offer(encoder.preprocess(batch.tiles)):
                    return
            offer(done)
        except BaseException as exc:  # handed to the caller, raised there
            offer(exc)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    feeder = threading.Thread(target=feed, name="hsafast-embed-feed", daemon=True)
    feeder.start()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode(), _autocast(device, config.precision):
            while True:
                item = ready.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                out.append(encoder(item.to(device, non_blocking=True)).float().cpu().numpy())
    finally:
        stop.set()  # a feeder waiting to queue a batch gives up within 0.1 s
        feeder.join()
    if not out:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    features = np.concatenate(out)
    if not np.isfinite(features).all():
        raise InvalidParameterError(
            f"encoder {encoder.name!r} produced NaN or Inf features (precision {config.precision})"
        )
    return features


def _autocast(device: torch.device, precision: str) -> Any:
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grid_from_features(slide: Slide, tiles: FeatureFile) -> TileGrid:
    """The TileGrid that reads the tiles of a coordinates file from ``slide``.

    Tiles are ``patch_size`` pixels covering ``patch_size_level0`` level-0 pixels, read from
    the coarsest level that is not coarser than that (TRIDENT and CLAM files included).
    """
    from hsafast.tiling import TileGrid

    size, size0 = tiles.patch_size, tiles.patch_size_level0
    if size is None or size0 is None:
        raise InvalidParameterError(
            "the coordinates file records no patch_size / patch_size_level0; tile the slide "
            "again with hsafast tile",
            slide.path,
        )
    scale = size0 / size  # level-0 pixels per output pixel
    level = max(
        (lvl for lvl, d in enumerate(slide.level_downsamples) if d <= scale * (1 + 1e-3)),
        default=0,
    )
    read_size = max(1, round(size0 / slide.level_downsamples[level]))
    fraction = (
        tiles.tissue_fraction
        if tiles.tissue_fraction is not None
        else np.ones(len(tiles), dtype=np.float32)
    )
    return TileGrid(
        slide_path=Path(slide.path),
        coords=tiles.coords,
        tissue_fraction=fraction,
        level=level,
        read_size=read_size,
        size=int(size),
        patch_size_level0=int(size0),
        target_mpp=float(tiles.target_mpp or slide.mpp * scale),
    )
