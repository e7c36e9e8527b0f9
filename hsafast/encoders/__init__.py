"""Tile encoders: a registry of models that turn uint8 tiles into embeddings.

``list_encoders()`` names them, ``encoder_info(name)`` describes one, and
``create_encoder(name, weights=None)`` builds it (weights from local files only). Families:
small encoders trained here from scratch (``hsafast-cnn-s``, ``hsafast-vit-t``), any timm
architecture (``timm:<architecture>``), the published pathology encoders (``uni``,
``gigapath``, ``virchow2``, ``conch-v1``), and precomputed FeatureFiles (``feature_bags``).
"""

from hsafast.encoders import small as _small  # noqa: F401  (registers the small encoders)
from hsafast.encoders.base import TileEncoder
from hsafast.encoders.locations import weights_dir
from hsafast.encoders.registry import (
    EncoderInfo,
    create_encoder,
    encoder_info,
    list_encoders,
    register_encoder,
)
from hsafast.encoders.weights import load_weights_file, weights_hash

__all__ = [
    "EncoderInfo",
    "TileEncoder",
    "create_encoder",
    "encoder_info",
    "list_encoders",
    "load_weights_file",
    "register_encoder",
    "weights_dir",
    "weights_hash",
]
