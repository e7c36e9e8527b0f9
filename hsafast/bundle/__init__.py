"""ModelBundle: a trained model as a directory of JSON and safetensors (never a pickle).

The contract between the trainer, which writes it, and the scorer, which reads nothing else;
see docs/models.md. ``hsafast.bundle.specs`` holds the config sections,
``hsafast.bundle.model_bundle`` the bundle and its writing, ``hsafast.bundle.reading`` the
checks made on loading.
"""

from hsafast.bundle.model_bundle import MODES, ModelBundle
from hsafast.bundle.specs import EncoderSpec, MarkerSpec, Preprocessing

__all__ = ["MODES", "EncoderSpec", "MarkerSpec", "ModelBundle", "Preprocessing"]
