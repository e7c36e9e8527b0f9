"""Errors raised by hsafast.

Every error names the file it concerns (when there is one) and the reason, so
that a batch job can record it per slide and carry on with the rest.
"""

from __future__ import annotations

import os
from pathlib import Path


class HsafastError(Exception):
    """Base class of every error hsafast raises on purpose."""

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class SlideError(HsafastError):
    """A slide cannot be opened or read (missing, truncated, corrupt, unsupported)."""


class MissingPixelSizeError(SlideError):
    """The slide records no usable pixel size and none was given."""


class NoTissueError(HsafastError):
    """Tissue detection found no tissue on the slide."""


class InvalidParameterError(HsafastError, ValueError):
    """A parameter is out of its valid range or of the wrong shape."""


class ConfigError(HsafastError, ValueError):
    """A configuration file or mapping is malformed or has unknown keys."""


class FeatureFileError(HsafastError):
    """A feature/coordinates HDF5 file is missing datasets or is malformed."""


class StainError(HsafastError):
    """Stain separation or quantification cannot proceed on this input."""


class RegistrationError(HsafastError):
    """Two sections could not be registered, or the result failed its quality check."""


class PoolingError(HsafastError, ValueError):
    """Attention pooling was given empty, non-finite or mis-shaped input."""


class EncoderError(HsafastError):
    """A tile encoder is unknown, cannot be built, or its weights are missing."""


class EncoderWeightsError(EncoderError):
    """An encoder's weights file is unreadable or does not fit the architecture."""


class BundleError(HsafastError):
    """A model bundle is malformed, incomplete or inconsistent with its encoder."""


class EngineError(HsafastError):
    """An inference engine is not installed, cannot run the model, or returned NaN/Inf."""


class EvaluationError(HsafastError, ValueError):
    """Predictions and labels cannot be evaluated: mismatched cases, missing labels, bad values."""
