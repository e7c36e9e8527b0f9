"""Tile encoders: a registry of models that turn uint8 tiles into embeddings.

``list_encoders()`` names them, ``encoder_info(name)`` describes one, and
``create_encoder(name, weights=None)`` builds it (weights from local files only). Families:
small encoders trained here from scratch (``hsafast-cnn-s``, ``hsafast-vit-t``), any timm
architecture (``timm:<architecture>``), the published pathology encoders (``uni``,
``gigapath``, ``virchow2``, ``conch-style``), and precomputed FeatureFiles (``feature_bags``).
"""

from hsafast.encoders import pathology as _pathology  # noqa: F401  (registers its encoders)
from hsafast.encoders import small as _small  # noqa: F401  (registers the small encoders)
from hsafast.encoders.base import TileEncoder
from hsafast.encoders.locations import weights_dir
from hsafast.encoders.precomputed import FeatureBag, feature_bags, read_feature_bag
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
    "FeatureBag",
    "TileEncoder",
    "create_encoder",
    "encoder_info",
    "feature_bags",
    "list_encoders",
    "load_weights_file",
    "read_feature_bag",
    "register_encoder",
    "weights_dir",
    "weights_hash",
]
