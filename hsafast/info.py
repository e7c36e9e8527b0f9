"""What this installation can do: compiled features and importable optional backends."""

from __future__ import annotations

import importlib.util
import platform
from collections.abc import Iterator
from contextlib import contextmanager
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
    """What the native core was compiled with and runs now.

    ``simd`` is the SIMD path the kernels run (``scalar``, ``avx2``, ``avx512``): the
    widest in ``simd_supported`` (compiled in and run by this CPU) unless
    ``HSAFAST_SIMD`` or :func:`use_simd` chose another; ``simd_compiled`` lists the paths
    in the build, ``simd_baseline`` what every other function may use (``sse2`` for a
    portable x86-64 build) and ``march_native`` whether the build was tuned for the CPU
    that compiled it (``HSAFAST_NATIVE_ARCH=ON``: such a build may not run elsewhere).
    """
    from hsafast._native import core

    info = dict(core.build_info())
    info["jpeg_decoder"] = core.jpeg_decoder_version() or "none (imagecodecs fallback)"
    return info


@contextmanager
def use_simd(path: str | None) -> Iterator[str]:
    """Run the native kernels on one SIMD path inside the block (None: the widest).

    The choice holds for the whole process, every thread included, until the block ends.
    Raises ValueError naming the reason for a path this build or CPU does not have.
    """
    from hsafast._native import core

    before = core.set_simd(path)
    try:
        yield str(core.build_info()["simd"])
    finally:
        core.set_simd(before)


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
