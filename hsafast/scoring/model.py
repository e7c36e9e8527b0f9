"""The scorer's view of a model: one tile network for the engines, slide-level parts in torch.

A bundle's per-marker model splits at the pooling step:

- tile level (runs on the engine, batch after batch): encoder -> each marker's projection
  (tile embedding -> h) and, in patch mode, its positivity head (h -> probability). All
  markers share one encoder pass, so `TileNetwork` returns every marker's outputs at once;
- slide level (once per slide, tiny): the pooled h -> classification head -> softmax.

Pooling itself sits between the two and streams (`hsafast.scoring.accumulate`).
FeatureFiles (precomputed tile embeddings) skip the encoder: `MarkerNetwork` runs the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from hsafast.engines.base import ModelSpec

if TYPE_CHECKING:
    from hsafast.encoders import TileEncoder
    from hsafast.pooling import GatedAttentionParams

__all__ = ["MarkerModel", "MarkerNetwork", "ScoringModel", "TileNetwork", "load_model"]


@dataclass(eq=False)
class MarkerModel:
    """One marker's trained parts."""

    name: str
    classes: tuple[str, ...]
    positive_class: str | None
    proj: nn.Module
    """Tile embedding (D) -> h (E)."""
    head: nn.Module
    """Slide embedding (E) -> class logits (C)."""
    aggregator: str = "gated"
    """"gated" (ABMIL; streams through PoolState), "mean", or "transformer" (whole bag)."""
    pool: GatedAttentionParams | None = None
    """The gated-attention head; None for mean pooling."""
    pool_module: nn.Module | None = None
    """The torch aggregator, needed only for "transformer"."""
    positivity: nn.Module | None = None
    """h -> positivity logit (patch mode); None in the other modes."""


class MarkerNetwork(nn.Module):
    """Tile embeddings -> per marker (h, positivity probability): the tile level after encoding."""

    def __init__(self, markers: dict[str, MarkerModel]) -> None:
        super().__init__()
        self.names = list(markers)
        self.proj = nn.ModuleDict({k: m.proj for k, m in markers.items()})
        self.positivity = nn.ModuleDict(
            {k: m.positivity for k, m in markers.items() if m.positivity is not None}
        )

    def output_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for k in self.names:
            names.append(f"{k}.h")
            if k in self.positivity:
                names.append(f"{k}.positivity")
        return tuple(names)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs: list[torch.Tensor] = []
        for k in self.names:
            h = self.proj[k](emb)
            outs.append(h)
            if k in self.positivity:
                # the first stain-derived target is the marker's positive fraction
                outs.append(torch.sigmoid(self.positivity[k](h)).reshape(h.shape[0], -1)[:, 0])
        return tuple(outs)


class TileNetwork(nn.Module):
    """Normalised tiles (N x 3 x S x S) -> every marker's tile outputs: what engines run."""

    def __init__(self, encoder: nn.Module, markers: MarkerNetwork) -> None:
        super().__init__()
        self.encoder = encoder
        self.markers = markers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.markers(self.encoder(x))


@dataclass(eq=False)
class ScoringModel:
    """Everything the scorer needs from a bundle."""

    encoder: TileEncoder
    markers: dict[str, MarkerModel]
    target_mpp: float
    """Pixel size of the tiles the model was trained on (um/px)."""
    tile_size: int
    """Tile side at target_mpp (pixels), before the encoder's own resizing."""
    model_hash: str
    """Identifies the weights (the bundle's weights_sha256): keys exported engines."""
    info: dict[str, Any] = field(default_factory=dict)
    """Bundle path, mode and encoder, copied into each SlideResult."""
    cache_dir: Path | None = None
    """The bundle's engines/ folder, where exported engines are cached."""
    max_tiles: int = 4096
    """Context size of a transformer aggregator (a whole-bag model); gated and mean pool all."""

    def __post_init__(self) -> None:
        for m in self.markers.values():
            for module in (m.proj, m.head, m.positivity, m.pool_module):
                if module is not None:
                    module.eval()
        self.encoder.eval()
        self._marker_net = MarkerNetwork(self.markers).eval()

    @property
    def marker_network(self) -> MarkerNetwork:
        return self._marker_net

    def tile_network(self) -> TileNetwork:
        return TileNetwork(self.encoder, self._marker_net).eval()

    def spec(self) -> ModelSpec:
        """What an engine needs: the tile network, its input size, outputs and hash."""
        return ModelSpec(
            network=self.tile_network(),
            input_size=self.encoder.input_size,
            output_names=self._marker_net.output_names(),
            model_hash=self.model_hash,
            cache_dir=self.cache_dir,
        )

    def classify(self, marker: str, pooled: np.ndarray) -> np.ndarray:
        """Class probabilities (float64) of a pooled slide embedding."""
        head = self.markers[marker].head
        with torch.inference_mode():
            logits = head(torch.from_numpy(np.asarray(pooled, dtype=np.float32))[None])[0]
        return torch.softmax(logits.double(), dim=0).numpy()


def load_model(bundle: Any, encoder_weights: str | os.PathLike[str] | None = None) -> ScoringModel:
    """The ScoringModel of a ModelBundle, a bundle directory, or a ScoringModel (as is).

    `encoder_weights` locates a registered encoder's weights file (bundles that reference
    their encoder by name and hash); BundleError if it does not match the bundle.
    """
    from hsafast.bundle import ModelBundle

    if isinstance(bundle, ScoringModel):
        return bundle
    if not isinstance(bundle, ModelBundle):
        bundle = ModelBundle.load(bundle)
    encoder = bundle.tile_encoder(encoder_weights)
    markers: dict[str, MarkerModel] = {}
    for name, slide_model in bundle.models.items():
        config = slide_model.config
        spec = bundle.markers[name]
        markers[name] = MarkerModel(
            name=name,
            classes=tuple(spec.classes),
            positive_class=spec.positive_class,
            proj=slide_model.proj,
            head=slide_model.head,
            aggregator=config.aggregator,
            pool=slide_model.pool_params() if config.aggregator == "gated" else None,
            pool_module=slide_model.pool if config.aggregator == "transformer" else None,
            positivity=slide_model.positivity,
        )
    path = None if bundle.path is None else Path(bundle.path)
    return ScoringModel(
        encoder=encoder,
        markers=markers,
        target_mpp=float(bundle.preprocessing.target_mpp),
        tile_size=int(bundle.preprocessing.tile_size),
        model_hash=_bundle_hash(bundle, encoder),
        info={
            "bundle": None if path is None else str(path),
            "mode": bundle.mode,
            "encoder": bundle.encoder.name,
            "encoder_hash": bundle.encoder.hash,
        },
        cache_dir=None if path is None else path / "engines",
        max_tiles=int(bundle.preprocessing.max_tiles),
    )


def _bundle_hash(bundle: Any, encoder: TileEncoder) -> str:
    """SHA-256 over the slide models' weights (config.json's, when saved) and the encoder's."""
    import hashlib
    import json

    digest = None
    if bundle.path is not None:
        try:
            config = json.loads((Path(bundle.path) / "config.json").read_text(encoding="utf-8"))
            digest = str(config["weights_sha256"])
        except (OSError, ValueError, KeyError):
            digest = None
    if digest is None:
        from hsafast.encoders.weights import weights_hash

        digest = weights_hash(bundle.state_dict())
    return hashlib.sha256(f"{digest}/{encoder.weights_hash}".encode()).hexdigest()
