"""Where published encoder weights live on this machine (hsafast never downloads them).

The folder is ``$HSAFAST_WEIGHTS`` when set, else ``~/.cache/hsafast/weights``; encoder
``name`` looks in ``<folder>/<name>/`` for the file its publishers distribute (for example
``pytorch_model.bin``) or the same tensors as ``model.safetensors``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hsafast.errors import EncoderError

if TYPE_CHECKING:
    from hsafast.encoders.registry import EncoderInfo

__all__ = ["default_weights_path", "weights_dir"]

ENV_VAR = "HSAFAST_WEIGHTS"
SAFETENSORS_NAME = "model.safetensors"


def weights_dir() -> Path:
    """The folder that holds one sub-folder of weights per registered encoder."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "hsafast" / "weights"


def default_weights_path(info: EncoderInfo) -> Path:
    """The weights file of a registered encoder, or an error that says where it must go."""
    folder = weights_dir() / info.name
    names = [info.weights_file, SAFETENSORS_NAME] if info.weights_file else [SAFETENSORS_NAME]
    for file_name in names:
        if (folder / file_name).is_file():
            return folder / file_name
    origin = f" (published at {info.weights_origin})" if info.weights_origin else ""
    raise EncoderError(
        f"no weights for encoder {info.name!r}: put {names[0]}{origin} at {folder / names[0]} "
        f"(or the same tensors as {folder / SAFETENSORS_NAME}), set {ENV_VAR} to the folder "
        f"that holds {info.name}/, or pass weights=PATH (--weights on the command line); "
        "hsafast never downloads weights"
    )
