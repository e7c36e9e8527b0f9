"""Host-to-GPU transfer of tile batches: pinned memory, a copy stream, an event per batch.

The source thread copies each uint8 batch (1 byte per pixel, a quarter of float32's traffic)
into pinned memory and starts its upload on a dedicated CUDA stream; the engine's stream waits
on the batch's event only when it needs the tiles, so uploads overlap the previous batch's
encoding. Preprocessing (resize, normalise) then runs on the GPU.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

_streams: dict[str, Any] = {}
_lock = threading.Lock()


def copy_stream(device: str) -> Any:
    """The device's stream for uploads and GPU decoding (one per device, made once)."""
    import torch

    with _lock:
        if device not in _streams:
            _streams[device] = torch.cuda.Stream(torch.device(device))
        return _streams[device]


def upload(tiles: np.ndarray, device: str) -> tuple[Any, Any]:
    """(uint8 tensor on `device`, CUDA event that marks the end of its upload)."""
    import torch

    host = torch.from_numpy(np.ascontiguousarray(tiles)).pin_memory()
    stream = copy_stream(device)
    with torch.cuda.stream(stream):
        x = host.to(device, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(stream)
    return x, ready


def wait(ready: Any, x: Any) -> None:
    """Makes the current stream wait for the upload of x, and keeps x's memory until then."""
    import torch

    if ready is None:
        return
    current = torch.cuda.current_stream(x.device)
    current.wait_event(ready)
    x.record_stream(current)
