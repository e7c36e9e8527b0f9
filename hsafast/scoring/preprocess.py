"""Preprocessing tiles for the encoder on the CPU, several times faster, with equal results.

`TileEncoder.preprocess` converts the whole uint8 tile to float and then averages boxes in
PyTorch: on 256-px tiles for a 128-px encoder that took 1.4 ms per tile on one core, 40% of
the small CNN's own time. Here each tile is converted and box-averaged by OpenCV (INTER_AREA
at a whole factor is the box mean) and only the small result is normalised: 0.17 ms. Box
sums of integers are exact in float32, and the normalisation is the same operations in the
same order, so the output equals `preprocess` element for element (tested) for factors 1, 2,
4, 8... (at 3, OpenCV's multiply by 1/9 can differ from a divide by 9 in the last bit). Tiles
that need another resize, or encoders with their own preprocessing, use `preprocess` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from hsafast.encoders import TileEncoder


def fast_path(encoder: TileEncoder, tile_size: int) -> bool:
    """Whether `preprocess_cpu` handles this encoder and tile size itself."""
    from hsafast.encoders.base import TileEncoder

    factor, rest = divmod(tile_size, encoder.input_size)
    # a power-of-two box mean is exact whether it divides or multiplies by the inverse
    return (
        type(encoder).preprocess is TileEncoder.preprocess
        and rest == 0
        and (factor & (factor - 1)) == 0
    )


def preprocess_cpu(encoder: TileEncoder, tiles: Any) -> torch.Tensor:
    """uint8 N x S x S x 3 tiles -> float32 N x 3 x s x s (channels_last), as encoder.preprocess."""
    import torch

    if not isinstance(tiles, np.ndarray) or tiles.ndim != 4 or tiles.dtype != np.uint8:
        return encoder.preprocess(tiles)
    n, h, w, _ = tiles.shape
    size = encoder.input_size
    if h != w or not fast_path(encoder, h):
        return encoder.preprocess(tiles)
    import cv2

    out = np.empty((n, size, size, 3), dtype=np.float32)
    # normalised row by row: a row of size x 3 values against the mean and std repeated
    # along it keeps NumPy's inner loop long (per pixel, its three channels are too short
    # to vectorise); the same float32 operations as `preprocess`, so equal results
    rows = out.reshape(n * size, size * 3)
    mean, std = (
        np.tile((torch.tensor(v, dtype=torch.float32) * 255.0).numpy(), size)
        for v in (encoder.mean, encoder.std)
    )
    if h == size:
        np.subtract(tiles.reshape(n * size, size * 3), mean, out=rows, dtype=np.float32)
    else:
        for i in range(n):
            out[i] = cv2.resize(
                tiles[i].astype(np.float32), (size, size), interpolation=cv2.INTER_AREA
            )
        np.subtract(rows, mean, out=rows)
    np.divide(rows, std, out=rows)
    return torch.from_numpy(out).permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last
