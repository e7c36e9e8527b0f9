"""Scanner-side scoring: tiles pushed as they are scanned, in any order and batch size.

Each push runs the engine and the pooling at once (in the caller's thread), so memory holds
the pooling states and a few bytes per tile (coordinates, logits, positivity), never the
tiles: a 100k-tile slide streams in well under 2 GB. The result sorts the tiles into grid
order, so it equals scoring the same tiles at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hsafast.errors import InvalidParameterError
from hsafast.scoring.accumulate import SlideAccumulator, SlideInfo
from hsafast.scoring.results import SlideResult

if TYPE_CHECKING:
    from hsafast.scoring.scorer import Scorer

__all__ = ["SlideStream"]


class SlideStream:
    """Scores one slide from tiles pushed in any order and batch size (scanner-side use).

    Each push runs the engine and pools at once, so memory holds the pooling states and a few
    bytes per tile, never the tiles. `partial()` is the prediction from the tiles so far;
    `result()` the final one, equal to scoring the same tiles at once.
    """

    def __init__(self, scorer: Scorer, info: SlideInfo) -> None:
        self.scorer = scorer
        self.info = info
        self._acc = SlideAccumulator(
            scorer.model, info, scorer.engine.describe(), scorer.options.pool_engine
        )
        self._closed = False

    @property
    def count(self) -> int:
        """Tiles pushed so far."""
        return self._acc.count

    def push(self, tiles: Any, coords: Any) -> SlideStream:
        """Scores uint8 tiles (N x S x S x 3 at the bundle's pixel and tile size) at level-0
        top-left `coords` (N x 2)."""
        if self._closed:
            raise InvalidParameterError(
                "the stream's result was taken; start a new stream", self.info.path
            )
        tiles = np.asarray(tiles) if not hasattr(tiles, "detach") else tiles
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        shape = tuple(tiles.shape)
        size = self.scorer.model.tile_size
        if (
            len(shape) != 4
            or shape[1:] != (size, size, 3)
            or str(tiles.dtype) not in ("uint8", "torch.uint8")
        ):
            raise InvalidParameterError(
                f"tiles must be uint8 N x {size} x {size} x 3 (the bundle's tile size), got "
                f"{tiles.dtype} {shape}",
                self.info.path,
            )
        if len(coords) != shape[0]:
            raise InvalidParameterError(
                f"{shape[0]} tiles but {len(coords)} coordinates", self.info.path
            )
        if shape[0] == 0:
            return self
        step = self.scorer.batch_size
        for start in range(0, shape[0], step):
            part = np.asarray(tiles[start : start + step])
            xy = coords[start : start + step]
            self._acc.absorb(self.scorer.encode_tiles(part, xy), xy)
        return self

    def partial(self) -> SlideResult:
        """The prediction from the tiles pushed so far (pushing may go on)."""
        return self._acc.result()

    def result(self) -> SlideResult:
        """The final prediction (tiles in grid order); the stream takes no more tiles."""
        self._closed = True
        return self._acc.result()
