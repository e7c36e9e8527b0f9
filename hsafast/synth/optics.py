"""Stains and optics: Beer-Lambert colour from stain concentrations, scanner blur and noise.

A bright-field slide is modelled as two stain concentration maps (optical density
per unit stain vector). Each pixel's transmitted light is ``I = I0 * 10**-(c1*v1 +
c2*v2 + bg)`` per RGB channel, with ``v1, v2`` the stain vectors of Ruifrok and
Johnston (Anal. Quant. Cytol. Histol. 23:291, 2001), perturbed per slide to mimic
batch-to-batch differences in stain intensity and hue. Concentrations are quantised
to 8 bits each and turned into colour with one 64k-entry lookup table, which is far
cheaper than evaluating the exponential per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Ruifrok-Johnston optical-density vectors (RGB), normalised to unit length.
HEMATOXYLIN = (0.650, 0.704, 0.286)
EOSIN = (0.072, 0.990, 0.105)
DAB = (0.268, 0.570, 0.776)

#: Concentrations are quantised with this many levels per unit optical density.
_LEVELS_PER_OD = 110.0
#: Highest concentration the lookup table represents (255 / _LEVELS_PER_OD).
MAX_CONCENTRATION = 255.0 / _LEVELS_PER_OD


def unit(v: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


@dataclass(frozen=True)
class StainStyle:
    """How one slide's stains, glass and scanner look.

    ``vectors`` holds the two stain OD vectors (rows, RGB) actually used to render,
    ``strength`` their per-slide intensity factors; the same rows are what a colour
    deconvolution of this slide should recover.
    """

    kind: str  # "he" or "ihc"
    vectors: np.ndarray  # (2, 3)
    strength: tuple[float, float]
    background_od: tuple[float, float, float]
    blur_sigma: float
    noise_sigma: float
    jpeg_quality: int

    def lut(self) -> np.ndarray:
        """(65536, 3) uint8 colour for every pair of 8-bit quantised concentrations."""
        levels = np.arange(256, dtype=np.float64) / _LEVELS_PER_OD
        od = (
            levels[:, None, None] * self.strength[0] * self.vectors[0][None, None, :]
            + levels[None, :, None] * self.strength[1] * self.vectors[1][None, None, :]
            + np.asarray(self.background_od)[None, None, :]
        )
        rgb = 255.0 * np.power(10.0, -od)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(-1, 3)

    def to_dict(self) -> dict[str, object]:
        names = ("hematoxylin", "eosin") if self.kind == "he" else ("hematoxylin", "dab")
        return {
            "kind": self.kind,
            "stains": list(names),
            "vectors": np.round(self.vectors, 6).tolist(),
            "strength": [round(s, 6) for s in self.strength],
            "background_od": [round(b, 6) for b in self.background_od],
            "blur_sigma": round(self.blur_sigma, 4),
            "noise_sigma": round(self.noise_sigma, 4),
            "jpeg_quality": self.jpeg_quality,
        }


def _perturb(v: tuple[float, float, float], rng: np.random.Generator, amount: float) -> np.ndarray:
    return unit(unit(v) + rng.normal(0.0, amount, 3)).clip(0.01, None)


def random_style(kind: str, rng: np.random.Generator, variation: float = 1.0) -> StainStyle:
    """A per-slide stain style: Ruifrok-Johnston vectors with random hue and intensity."""
    second = EOSIN if kind == "he" else DAB
    vectors = np.stack(
        [_perturb(HEMATOXYLIN, rng, 0.04 * variation), _perturb(second, rng, 0.04 * variation)]
    )
    strength = (
        float(np.exp(rng.normal(0.0, 0.12 * variation))),
        float(np.exp(rng.normal(0.0, 0.15 * variation))),
    )
    glass = float(rng.uniform(0.01, 0.035))
    tint = rng.normal(0.0, 0.0025 * variation, 3)
    return StainStyle(
        kind=kind,
        vectors=vectors,
        strength=strength,
        background_od=tuple(float(max(0.0, glass + t)) for t in tint),  # type: ignore[arg-type]
        blur_sigma=float(rng.uniform(0.45, 0.85)),
        noise_sigma=2.0,  # the texture bank's sensor noise (fixed: one bank per process)
        jpeg_quality=int(rng.integers(75, 91)),
    )


def quantise(conc: np.ndarray) -> np.ndarray:
    """Concentration (float32) -> uint8 level, saturating."""
    return cv2.convertScaleAbs(conc, alpha=_LEVELS_PER_OD)


def packed_lut(lut: np.ndarray) -> np.ndarray:
    """A (65536, 3) colour table as one uint32 (RGBA with A = 255) per entry."""
    rgba = np.full((lut.shape[0], 4), 255, np.uint8)
    rgba[:, :3] = lut
    return rgba.view(np.uint32).ravel()


def compose(c1: np.ndarray, c2: np.ndarray, lut32: np.ndarray) -> np.ndarray:
    """RGBA uint8 (h, w, 4) image from two concentration maps and a :func:`packed_lut`.

    One 4-byte gather per pixel is several times faster than a 3-channel fancy index.
    """
    index = quantise(c1).astype(np.uint16) << 8
    index |= quantise(c2)
    return np.take(lut32, index).view(np.uint8).reshape(*c1.shape, 4)


def finish(
    rgb: np.ndarray, style: StainStyle, noise_up: np.ndarray, noise_down: np.ndarray
) -> np.ndarray:
    """Scanner optics on an RGB(A) block: Gaussian blur, then additive sensor noise.

    The noise comes as two uint8 blocks (positive and negative parts, from a texture
    bank) so that it costs two saturating adds instead of fresh random numbers per pixel.
    """
    out = cv2.GaussianBlur(rgb, (0, 0), style.blur_sigma)
    cv2.add(out, noise_up, dst=out)
    cv2.subtract(out, noise_down, dst=out)
    return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB)
