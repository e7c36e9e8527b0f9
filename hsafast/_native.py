"""The one importer of the compiled extension ``hsafast._core``.

Every module that calls a native kernel imports ``core`` from here, so a broken
or missing build fails in one place with one message that says how to rebuild.
"""

from __future__ import annotations

try:
    from hsafast import _core
except ImportError as exc:  # pragma: no cover - only on a broken installation
    if "HSAFAST_SIMD" in str(exc):  # the build is fine; the environment asks for a bad path
        raise ImportError(f"hsafast's native core did not load: {exc}") from exc
    raise ImportError(
        f"hsafast's compiled extension hsafast._core did not load ({exc}). Rebuild it with "
        "`pip install --force-reinstall --no-deps .` from the source tree (needs a C++17 "
        "compiler; set HSAFAST_CUDA=ON for the CUDA kernels, HSAFAST_NATIVE_ARCH=ON to tune every "
        "function for this CPU)."
    ) from exc

core = _core

__all__ = ["core"]
