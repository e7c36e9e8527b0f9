"""TileEncoder: the common face of every tile encoder (uint8 tiles in, embeddings out).

``forward`` takes normalised float tiles (B x 3 x S x S) and is all that engines export;
``preprocess`` turns uint8 N x H x W x 3 tiles into that input on every engine alike, so a
model gives the same embeddings under PyTorch, ONNX Runtime or TensorRT.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from hsafast.errors import EncoderError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TileEncoder", "centre_crop", "resize_tiles"]

#: ImageNet channel statistics (RGB, 0-1 scale), the normalisation of most published encoders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TileEncoder(nn.Module):
    """A module mapping normalised tiles (B x 3 x S x S) to embeddings (B x dim)."""

    def __init__(
        self,
        name: str,
        dim: int,
        input_size: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        resize_size: int | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.dim = int(dim)
        self.input_size = int(input_size)
        self.resize_size = int(resize_size or input_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.weights_source: Path | None = None
        self._hash_key: tuple[Any, ...] | None = None
        self._hash_value = ""

    # ---- weights ----------------------------------------------------------------------
    @property
    def weights_module(self) -> nn.Module:
        """The module whose state dict is laid out as the encoder's weights files are."""
        return self

    def weights_state(self) -> dict[str, torch.Tensor]:
        """The weights under the names their files use (what ``weights_hash`` covers)."""
        return dict(self.weights_module.state_dict())

    def load_weights(
        self, weights: str | os.PathLike[str] | Mapping[str, Any], assign: bool = False
    ) -> None:
        """Load a weights file or a state dict; every name and shape must fit.

        ``assign`` adopts the tensors (for an encoder built on the meta device).
        """
        from hsafast.encoders.weights import fit_weights, load_weights_file

        source = None if isinstance(weights, Mapping) else Path(weights)
        state = weights if isinstance(weights, Mapping) else load_weights_file(weights)
        state = self.select_weights(dict(state))
        fit_weights(self.weights_module, state, source, f"encoder {self.name!r}", assign)
        self.weights_source = source

    def select_weights(self, state: dict[str, Any]) -> dict[str, Any]:
        """The tensors of a published file that belong to this encoder (all, by default)."""
        return state

    @property
    def weights_hash(self) -> str:
        """SHA-256 of the current weights (recomputed only after they change)."""
        from hsafast.encoders.weights import weights_hash

        state = self.weights_state()
        # a tensor's _version grows with every in-place update (optimiser steps, loads)
        key = tuple((k, t.data_ptr(), t._version) for k, t in state.items())
        if key != self._hash_key:
            self._hash_value = weights_hash(state)
            self._hash_key = key
        return self._hash_value

    def describe(self) -> dict[str, Any]:
        """Name, hash, width, input size and normalisation (a bundle's ``encoder`` entry)."""
        return {
            "name": self.name,
            "hash": self.weights_hash,
            "dim": self.dim,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    # ---- inputs -----------------------------------------------------------------------
    def preprocess(self, tiles: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x 3 RGB tiles -> float32 N x 3 x S x S, resized and normalised.

        Tiles are resized to ``resize_size`` and centre-cropped to ``input_size`` (equal for
        most encoders). Downscaling by a whole factor averages boxes of pixels (as tile
        reading does); other sizes use antialiased bilinear resampling. The result is
        channels-last. NumPy tiles shrunk by a whole factor (or not at all) are prepared with
        OpenCV and NumPy, 3-4x cheaper, and a feeder thread preparing the next batch then
        starts no second PyTorch OpenMP team beside the encoder's.
        """
        if isinstance(tiles, np.ndarray):
            _check_tiles(tiles.dtype == np.uint8, tiles.shape, tiles.dtype, self.name)
            factor = _box_factor(tiles.shape, self.resize_size, self.input_size)
            if factor:
                return torch.from_numpy(self._box_normalise(tiles, factor)).permute(0, 3, 1, 2)
        x = (
            torch.from_numpy(np.ascontiguousarray(tiles))
            if isinstance(tiles, np.ndarray)
            else tiles
        )
        _check_tiles(x.dtype == torch.uint8, tuple(x.shape), x.dtype, self.name)
        x = x.permute(0, 3, 1, 2).float()
        x = centre_crop(resize_tiles(x, self.resize_size), self.input_size)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    def _box_normalise(self, tiles: np.ndarray, factor: int) -> np.ndarray:
        """N x S x S x 3 float32: box means (OpenCV's area resize at a whole factor), normalised.

        Tile by tile, so each stays in cache: 0.3 ms per 256-px tile on one core, against
        1.1 ms for the PyTorch path. For factors 1, 2, 4, 8... the result equals the PyTorch
        path's bit for bit (power-of-two means are exact either way).
        """
        import cv2

        size = self.input_size
        out = np.empty((tiles.shape[0], size, size, 3), np.float32)
        for i, tile in enumerate(tiles):
            as_float = tile.astype(np.float32)
            out[i] = (
                as_float
                if factor == 1
                else cv2.resize(as_float, (size, size), interpolation=cv2.INTER_AREA)
            )
        out -= np.asarray(self.mean, np.float32) * np.float32(255.0)
        out /= np.asarray(self.std, np.float32) * np.float32(255.0)
        return out

    def embed(self, tiles: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Embeddings (N x dim, float32, CPU) of uint8 tiles, in inference mode."""

        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                device = next(self.parameters()).device
                return self(self.preprocess(tiles).to(device)).float().cpu()
        finally:
            self.train(was_training)


def resize_tiles(x: torch.Tensor, size: int) -> torch.Tensor:
    """N x C x H x W float tiles resized to size x size (box average for whole factors)."""
    import torch.nn.functional as F

    h, w = int(x.shape[-2]), int(x.shape[-1])
    if (h, w) == (size, size):
        return x
    if h == w and h % size == 0:
        return F.avg_pool2d(x, h // size)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window of N x C x H x W tiles."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if (h, w) == (size, size):
        return x
    if h < size or w < size:
        raise EncoderError(f"cannot crop {size} px out of {h} x {w} px tiles")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def _check_tiles(is_uint8: bool, shape: tuple[int, ...], dtype: object, name: str) -> None:
    if not is_uint8 or len(shape) != 4 or shape[-1] != 3:
        raise EncoderError(
            f"encoder {name!r} takes uint8 N x H x W x 3 RGB tiles, got {dtype} of shape {shape}"
        )


def _box_factor(shape: tuple[int, ...], resize_size: int, input_size: int) -> int:
    """The whole shrink factor of square tiles when no crop follows, else 0."""
    height, width = shape[1], shape[2]
    if height != width or resize_size != input_size or height % input_size:
        return 0
    return height // input_size
