"""Absorbing tile outputs into one slide's result, in any order, in O(D) memory per marker.

`SlideAccumulator.absorb(outputs, coords)` takes a batch of the tile network's outputs: each
marker's h goes into its pooling state (gated attention: `hsafast.pooling.PoolState`, the
online softmax of the native CPU or CUDA kernels, which keeps only the logits per tile; mean:
a float64 running sum), its positivity probabilities and the coordinates are kept per tile
(a few bytes each). `result()` sorts the tiles into grid order (y, then x) and classifies the
pooled embeddings, so the result does not depend on the order or batching of the tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hsafast.errors import EngineError, InvalidParameterError
from hsafast.scoring.model import MarkerModel, ScoringModel
from hsafast.scoring.results import MarkerResult, SlideResult

__all__ = ["SlideAccumulator", "SlideInfo"]


@dataclass(frozen=True)
class SlideInfo:
    """Where a slide's tiles come from, for the result and its heatmaps."""

    slide_id: str
    """Name of the slide in results and file names."""
    patch_size_level0: int | None = None
    """Side of a tile in level-0 pixels (default: the model's tile size, i.e. tiles at level 0)."""
    target_mpp: float | None = None
    """Pixel size of the tiles (um/px; default: the model's)."""
    path: str | None = None
    """The slide file, when there is one."""

    def __post_init__(self) -> None:
        if not self.slide_id:
            raise InvalidParameterError("SlideInfo.slide_id must be a non-empty name")
        if self.patch_size_level0 is not None and self.patch_size_level0 <= 0:
            raise InvalidParameterError(
                f"SlideInfo.patch_size_level0 must be positive, got {self.patch_size_level0}"
            )
        if self.target_mpp is not None and not self.target_mpp > 0:
            raise InvalidParameterError(
                f"SlideInfo.target_mpp must be positive, got {self.target_mpp}"
            )


class _GatedPool:
    """PoolState over h, fed in blocks of at least `block` rows: the engine's batches are
    small for pooling (64 rows of E=256), where per-call costs would dominate the work."""

    def __init__(self, marker: MarkerModel, engine: str, block: int = 1024) -> None:
        from hsafast.pooling import PoolState

        assert marker.pool is not None
        self.state = PoolState(marker.pool, keep_logits=True, engine=engine)
        self.block = block
        self.pending: list[Any] = []
        self.pending_start = 0
        self.pending_rows = 0

    def update(self, h: Any, start: int) -> None:
        if not self.pending:
            self.pending_start = start
        self.pending.append(h)
        self.pending_rows += len(h)
        if self.pending_rows >= self.block:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if len(self.pending) == 1:
            rows = self.pending[0]
        elif hasattr(self.pending[0], "detach"):
            import torch

            rows = torch.cat(self.pending)
        else:
            rows = np.concatenate(self.pending)
        self.pending, self.pending_rows = [], 0
        self.state.update(rows, start=self.pending_start)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self.flush()
        pooled, weights = self.state.result(return_weights=True)
        return pooled, weights


class _MeanPool:
    def __init__(self, dim: int) -> None:
        self.total = np.zeros(dim, dtype=np.float64)
        self.count = 0

    def update(self, h: Any, start: int) -> None:
        self.total += _numpy(h).sum(axis=0, dtype=np.float64)
        self.count += len(h)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        pooled = (self.total / self.count).astype(np.float32)
        return pooled, np.full(self.count, 1.0 / self.count, dtype=np.float32)


class _BagPool:
    """A whole-bag aggregator (transformer): keeps h and pools at the end, at most max_tiles."""

    def __init__(self, marker: MarkerModel, max_tiles: int) -> None:
        self.module = marker.pool_module
        self.max_tiles = max_tiles
        self.rows: list[tuple[int, np.ndarray]] = []

    def update(self, h: Any, start: int) -> None:
        self.rows.append((start, _numpy(h).astype(np.float32, copy=True)))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        import torch

        self.rows.sort(key=lambda r: r[0])
        h = np.concatenate([r for _, r in self.rows])
        n = len(h)
        # the model's context is max_tiles tiles (as in training): an evenly spaced subset
        keep = np.unique(np.linspace(0, n - 1, min(n, self.max_tiles)).round().astype(np.int64))
        assert self.module is not None
        with torch.inference_mode():
            pooled, w = self.module(torch.from_numpy(h[keep]))
        weights = np.zeros(n, dtype=np.float32)
        weights[keep] = w[0].float().numpy()
        return pooled[0].float().numpy(), weights


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class SlideAccumulator:
    """Pools one slide's tile outputs as they arrive; see the module docstring."""

    def __init__(
        self, model: ScoringModel, info: SlideInfo, engine_name: str = "", pool_engine: str = "auto"
    ) -> None:
        self.model = model
        self.info = info
        self.engine_name = engine_name
        self.count = 0
        self._coords: list[np.ndarray] = []
        self._positivity: dict[str, list[np.ndarray]] = {
            k: [] for k, m in model.markers.items() if m.positivity is not None
        }
        self._pools: dict[str, Any] = {}
        for name, m in model.markers.items():
            if m.aggregator == "gated":
                self._pools[name] = _GatedPool(m, pool_engine)
            elif m.aggregator == "mean":
                self._pools[name] = _MeanPool(_width(m))
            else:
                self._pools[name] = _BagPool(m, model.max_tiles)

    def absorb(self, outputs: dict[str, Any], coords: np.ndarray) -> None:
        """Takes one batch: the tile network's outputs by name and the tiles' level-0 corners."""
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        n = len(coords)
        for name, out in outputs.items():
            if len(out) != n:
                raise EngineError(
                    f"output {name!r} has {len(out)} rows for {n} tiles", self.info.path
                )
            self._check_finite(name, out, coords)
        start = self.count
        for name, pool in self._pools.items():
            pool.update(outputs[f"{name}.h"], start)
        for name, parts in self._positivity.items():
            parts.append(_numpy(outputs[f"{name}.positivity"]).reshape(-1))
        self._coords.append(coords.copy())
        self.count += n

    def _check_finite(self, name: str, out: Any, coords: np.ndarray) -> None:
        if hasattr(out, "detach"):
            import torch

            finite = torch.isfinite(out.reshape(len(out), -1)).all(dim=1)
            if bool(finite.all()):
                return
            bad = int((~finite).nonzero()[0, 0])
        else:
            rows = np.isfinite(np.asarray(out).reshape(len(out), -1)).all(axis=1)
            if rows.all():
                return
            bad = int(np.flatnonzero(~rows)[0])
        x, y = (int(v) for v in coords[bad])
        raise EngineError(
            f"the {self.engine_name or 'engine'} returned NaN or Inf in {name!r} for the tile at "
            f"level-0 ({x}, {y})",
            self.info.path,
        )

    def result(self, **extra: Any) -> SlideResult:
        """The slide's result from the tiles absorbed so far (tiles in grid order).

        Can be called again after more tiles are absorbed (a partial result); raises
        InvalidParameterError if a tile position was absorbed twice.
        """
        if self.count == 0:
            raise InvalidParameterError("no tiles were scored for this slide", self.info.path)
        coords = np.concatenate(self._coords)
        order = np.lexsort((coords[:, 0], coords[:, 1]))
        sorted_xy = coords[order]
        dup = np.flatnonzero((np.diff(sorted_xy, axis=0) == 0).all(axis=1))
        if dup.size:
            x, y = (int(v) for v in sorted_xy[dup[0]])
            raise InvalidParameterError(
                f"the tile at level-0 ({x}, {y}) was given more than once", self.info.path
            )
        markers = {}
        for name, pool in self._pools.items():
            m = self.model.markers[name]
            pooled, weights = pool.result()
            positivity = None
            if name in self._positivity:
                positivity = np.concatenate(self._positivity[name])[order]
            markers[name] = MarkerResult(
                marker=name,
                classes=m.classes,
                probabilities=self.model.classify(name, pooled),
                positive_class=m.positive_class,
                attention=np.asarray(weights, dtype=np.float32)[order],
                positivity=positivity,
                embedding=np.asarray(pooled, dtype=np.float32),
            )
        return SlideResult(
            slide_id=self.info.slide_id,
            markers=markers,
            coords=sorted_xy,
            patch_size_level0=int(self.info.patch_size_level0 or self.model.tile_size),
            target_mpp=float(self.info.target_mpp or self.model.target_mpp),
            path=self.info.path,
            engine=self.engine_name,
            model=dict(self.model.info),
            **extra,
        )


def _width(m: MarkerModel) -> int:
    """E, the width of h, from the first layer of the marker's head."""
    for p in m.head.parameters():
        return int(p.shape[-1])
    raise InvalidParameterError(f"marker {m.name!r} has a head without parameters")
