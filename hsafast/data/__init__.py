"""Small real files shipped with the package (see README.md in this folder)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


def sample_slide_path() -> Path:
    """A real 20x H&E Aperio SVS (CMU-1-Small-Region, CC0-1.0)."""
    return DATA_DIR / "CMU-1-Small-Region.svs"
