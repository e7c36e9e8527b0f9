"""``embed``: tile features of each slide, one FeatureFile (HDF5) per slide.

The encoder's name and weight hash are parameters of the run, so a folder of features
never mixes encoders: a rerun with other weights is refused unless ``overwrite``. Each
worker builds its own encoder once (``setup``) and checks that its weights hash to the
driver's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hsafast.cohort.items import WorkItem
from hsafast.cohort.pixels import PixelSize, open_item_slide
from hsafast.cohort.task import ItemContext, Task
from hsafast.embedding import EmbedConfig
from hsafast.errors import InvalidParameterError
from hsafast.tissue import TissueConfig

if TYPE_CHECKING:
    from hsafast.encoders.base import TileEncoder

#: The input role of an item's coordinates file (``with_coords``).
COORDS_ROLE = "coords"


@dataclass
class EmbedTask(Task):
    """Per slide ``ID.h5``: ``features`` (N x D float32) and ``coords`` with the tiles'
    geometry, the encoder's name and weight hash, the stain and the item ID as ``slide_id``
    (see :mod:`hsafast.features`). Build it with :meth:`for_encoder`."""

    name: ClassVar[str] = "embed"

    encoder: str = "hsafast-cnn-s"
    """Registered encoder name (``hsafast.encoders.list_encoders()``)."""
    weights: str | None = None
    """Local weights file of the encoder; None: the encoder's own default."""
    encoder_hash: str = ""
    """SHA-256 of the encoder's weights, as the driver built it (workers must match)."""
    config: EmbedConfig = field(default_factory=EmbedConfig)
    tissue: TissueConfig = field(default_factory=TissueConfig)
    pixel: PixelSize = field(default_factory=PixelSize)
    _model: TileEncoder | None = field(default=None, repr=False, compare=False)

    @classmethod
    def for_encoder(
        cls,
        name: str,
        weights: str | os.PathLike[str] | None = None,
        config: EmbedConfig | None = None,
        tissue: TissueConfig | None = None,
        pixel: PixelSize | None = None,
    ) -> EmbedTask:
        """Build the encoder here (unknown names and unreadable weights fail before any
        slide) and a task that records its weight hash."""
        from hsafast.encoders import create_encoder

        model = create_encoder(name, weights=weights)
        return cls(
            encoder=name,
            weights=None if weights is None else os.fspath(weights),
            encoder_hash=model.weights_hash,
            config=config or EmbedConfig(),
            tissue=tissue or TissueConfig(),
            pixel=pixel or PixelSize(),
            _model=model,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None  # each worker builds its own in setup
        return state

    def params(self) -> Mapping[str, Any]:
        c = self.config
        # batch size, prefetch and reader threads give the same bytes (tested)
        return {
            "encoder": self.encoder,
            "encoder_hash": self.encoder_hash,
            "target_mpp": c.target_mpp,
            "tile_size": c.tile_size,
            "min_tissue": c.min_tissue,
            "precision": c.precision,
            "device": c.device.partition(":")[0],
            "tissue": self.tissue,
            **self.pixel.params(),
        }

    def fallbacks(self) -> Mapping[str, Any]:
        return self.pixel.fallbacks()

    def outputs(self, item: WorkItem) -> Mapping[str, str]:
        return {"features": f"{item.id}.h5"}

    def setup(self) -> None:
        from hsafast.encoders import create_encoder

        if self._model is None:
            self._model = create_encoder(self.encoder, weights=self.weights)
        if self.encoder_hash and self._model.weights_hash != self.encoder_hash:
            raise InvalidParameterError(
                f"encoder {self.encoder!r} has weights {self._model.weights_hash[:12]} on this "
                f"worker but {self.encoder_hash[:12]} where the run started"
            )

    def run(self, item: WorkItem, ctx: ItemContext) -> None:
        from hsafast.embedding import embed_slide
        from hsafast.features import read_feature_file

        assert self._model is not None, "setup() builds the encoder"
        tiles = None
        if COORDS_ROLE in item.inputs:
            tiles = read_feature_file(item.inputs[COORDS_ROLE])
        with open_item_slide(item.path, self.pixel, ctx) as slide:
            features = embed_slide(
                slide,
                self._model,
                tiles,
                self.config,
                tissue=self.tissue,
                slide_id=item.id,
                stain=item.meta.get("stain", ""),
            )
        features.write(ctx.path("features"))
        ctx.record(tiles=len(features))


def with_coords(items: Sequence[WorkItem], folder: str | os.PathLike[str]) -> list[WorkItem]:
    """The items, each with its coordinates file from ``folder`` as an input:
    ``<item id>.h5`` (as ``hsafast tile`` names them), else ``<slide file stem>.h5`` (as
    TRIDENT and CLAM do). A missing file fails that item only."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise InvalidParameterError("no such coordinates folder", root)
    out = []
    for item in items:
        path = root / f"{item.id}.h5"
        by_stem = root / f"{item.path.stem}.h5"
        if not path.is_file() and by_stem.is_file():
            path = by_stem
        out.append(WorkItem(item.id, {**item.inputs, COORDS_ROLE: path}, item.meta))
    return out
