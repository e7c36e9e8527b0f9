"""The GPU input pipeline of patch mode on NVIDIA DALI (the ``dali`` extra).

Tile pairs stay uint8 in host memory (prepared once per case); per batch, DALI copies them
to the GPU, applies each pair's flip and quarter turn (the codes the torch path draws, so
both paths see the same tiles) and normalises them into channels-first float, handed to
PyTorch without a copy through DLPack. A tile size other than the encoder's input is then
resized on the GPU with the encoder's own resizing, so the pixels match
``TileEncoder.preprocess``.

``dali_unavailable(device)`` says why DALI cannot run (no GPU, DALI not installed); the
trainer then refuses ``data.pipeline = "dali"`` with that reason before training starts.
The same pipeline also runs on the CPU (``device_id=None``), which is how its agreement
with the torch path is tested on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["DaliPairs", "dali_unavailable"]


def dali_unavailable(device: str) -> str | None:
    """Why the DALI pipeline cannot run on ``device``, or None when it can."""
    if not device.startswith("cuda"):
        return f"the DALI input pipeline runs on a CUDA GPU; this run's device is {device!r}"
    if not torch.cuda.is_available():
        return "no CUDA device is available to PyTorch"
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return "NVIDIA DALI is not installed (pip install 'hsafast[dali]')"
    return None


class DaliPairs:
    """H&E and IHC tiles (uint8 B x S x S x 3) -> transformed, normalised B x 3 x S x S float.

    ``device_id`` is the CUDA device, or None for DALI's CPU operators.
    """

    def __init__(
        self,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device_id: int | None,
        threads: int = 2,
    ) -> None:
        from nvidia.dali import fn, pipeline_def, types

        self.device_id = device_id
        on_gpu = device_id is not None
        mean255 = [255.0 * m for m in mean]
        std255 = [255.0 * s for s in std]

        @pipeline_def(
            batch_size=batch_size, num_threads=threads, device_id=device_id, prefetch_queue_depth=1
        )
        def pairs() -> Any:
            mirror = fn.external_source(name="mirror", dtype=types.INT32)
            angle = fn.external_source(name="angle", dtype=types.FLOAT)
            outputs = []
            for name in ("he", "ihc"):
                tiles = fn.external_source(name=name, dtype=types.UINT8, layout="HWC")
                if on_gpu:
                    tiles = tiles.gpu()
                tiles = fn.flip(tiles, horizontal=mirror)
                tiles = fn.rotate(tiles, angle=angle, interp_type=types.INTERP_NN, keep_size=True)
                outputs.append(
                    fn.crop_mirror_normalize(
                        tiles, dtype=types.FLOAT, output_layout="CHW", mean=mean255, std=std255
                    )
                )
            return tuple(outputs)

        self.pipe = pairs()
        self.pipe.build()

    def __call__(
        self, he: torch.Tensor, ihc: torch.Tensor, ops: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        codes = ops.cpu().numpy()
        mirror = [np.array(int(c >= 4), np.int32) for c in codes]
        # torch.rot90 over (H, W) turns counter-clockwise as displayed; so does DALI's angle
        angle = [np.array(90.0 * (int(c) & 3), np.float32) for c in codes]
        self.pipe.feed_input("mirror", mirror)
        self.pipe.feed_input("angle", angle)
        self.pipe.feed_input("he", list(he.cpu().numpy()))
        self.pipe.feed_input("ihc", list(ihc.cpu().numpy()))
        out_he, out_ihc = self.pipe.run()
        return self._to_torch(out_he), self._to_torch(out_ihc)

    def _to_torch(self, batch: Any) -> torch.Tensor:
        if self.device_id is None:
            return torch.from_numpy(np.ascontiguousarray(batch.as_array()))
        from nvidia.dali.plugin.pytorch import feed_ndarray

        tensor = batch.as_tensor()
        out = torch.empty(tensor.shape(), dtype=torch.float32, device=f"cuda:{self.device_id}")
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(self.device_id))
        return out
