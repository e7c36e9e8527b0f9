"""Registration of consecutive H&E and IHC sections, and paired tiles.

``register`` aligns two slides from their low-resolution levels and returns a
``Registration`` (an affine map plus an optional smooth displacement field,
with a quality verdict); ``paired_tiles`` reads corresponding tiles from both.
"""

from hsafast.registration.config import RegistrationConfig
from hsafast.registration.pairs import TilePair, paired_tiles
from hsafast.registration.pipeline import register
from hsafast.registration.transform import Registration, load_registration

__all__ = [
    "Registration",
    "RegistrationConfig",
    "TilePair",
    "load_registration",
    "paired_tiles",
    "register",
]
