"""Writing files so that a crash never leaves a partial output under the final name."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it over ``final`` on success.

    On any exception the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def atomic_write_png(final: str | os.PathLike[str], pixels: np.ndarray) -> None:
    """Write a grey (H, W) or RGB (H, W, 3) uint8 image as PNG, atomically."""
    import cv2

    from hsafast.errors import InvalidParameterError

    image = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise InvalidParameterError("cannot encode the image as PNG", final)
    atomic_write_bytes(final, data.tobytes())


def safe_id(name: str) -> str:
    """A slide or case identifier as a safe file name stem (see ``hsafast.cohort.ids``)."""
    from hsafast.cohort.ids import sanitize_id

    return sanitize_id(name)
