"""What this installation can do: compiled features and importable optional backends."""

from __future__ import annotations

import importlib.util
import platform
from typing import Any

#: Optional packages hsafast uses when present, by the role they play.
OPTIONAL_PACKAGES = {
    "openslide": "slide reading (OpenSlide)",
    "cucim": "slide reading (cuCIM)",
    "tifffile": "slide reading (tifffile)",
    "imagecodecs": "tile decoding (libjpeg-turbo, JPEG 2000)",
    "nvidia.nvimgcodec": "GPU tile decoding (nvImageCodec)",
    "cupy": "GPU arrays",
    "torch": "encoders and training (PyTorch)",
    "triton": "fused GPU pooling without a CUDA build (Triton)",
    "onnxruntime": "encoders (ONNX Runtime)",
    "tensorrt": "encoders (TensorRT)",
    "nvidia.dali": "training input pipeline (DALI)",
    "ray": "cohort scale-out (Ray)",
}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def build_info() -> dict[str, Any]:
    """The native core's compile-time features (see ``hsafast.core.build_info``)."""
    from hsafast._native import core

    info = dict(core.build_info())
    info["jpeg_decoder"] = core.jpeg_decoder_version() or "none (imagecodecs fallback)"
    return info


def installation_info() -> dict[str, Any]:
    """Version, native build features and which optional backends are importable."""
    from hsafast import __version__

    return {
        "version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "build": build_info(),
        "optional": {name: _importable(name) for name in OPTIONAL_PACKAGES},
    }
