"""Stains and optics: Beer-Lambert colour from stain concentrations, scanner blur and noise.

A bright-field slide is modelled as two stain concentration maps (optical density
per unit stain vector). Each pixel's transmitted light is ``I = I0 * 10**-(c1*v1 +
c2*v2 + bg)`` per RGB channel. Each slide draws its own stain vectors and strengths
from cones around the stains of real slides, wider than the spread measured on them
(:data:`STAIN_CENTRES`, :data:`HUE_CONE_DEG`, :data:`STRENGTH_SD`). The reader,
``hsafast.stain``, starts from the vectors of Ruifrok and Johnston (Anal. Quant.
Cytol. Histol. 23:291, 2001); a simulator centred on them would test nothing.
Concentrations are quantised to 8 bits each and turned into colour with one
64k-entry lookup table, which is far cheaper than evaluating the exponential per
pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Centres of the cones from which each slide draws its stain directions: the mean of the
#: vectors measured on real slides and published for real stains, which is not the
#: Ruifrok-Johnston vector the reader deconvolves with (6, 6 and 19 degrees away).
#: Hematoxylin: Ruifrok-Johnston, Macenko's reference (Macenko et al., ISBI 2009),
#: Landini's "H&E 2" (ImageJ colour deconvolution), and Macenko estimates on the real test
#: images (skimage IHC, BIRL pro-SPC and pan-cytokeratin IHC, BIRL mouse H&E, stardist
#: H&E, CMU-1 H&E); DAB: Ruifrok-Johnston and the three IHC estimates; eosin: Ruifrok-
#: Johnston, Macenko's reference, Landini's, and the three H&E estimates.
STAIN_CENTRES = {
    "hematoxylin": (0.612, 0.689, 0.390),
    "dab": (0.366, 0.563, 0.741),
    "eosin": (0.229, 0.896, 0.380),
}
#: Half-angles (degrees) of those cones, drawn uniformly over the cap: 1.2 times the
#: farthest measured vector from the centre (13.5, 9.9 and 18.8 degrees), so the simulator
#: spans more than real slides and the reader meets up to 22 degrees of hue mismatch.
HUE_CONE_DEG = {"hematoxylin": 16.0, "dab": 12.0, "eosin": 23.0}
#: What makes each dye the colour it is named for, as OD ratios (red / green, blue / green),
#: kept by every drawn vector (cone draws outside are drawn again): hematoxylin is blue-
#: purple (absorbs red: R/G >= 0.6; real ones 0.64-1.3), DAB brown (absorbs blue most:
#: B/G >= 1.0; real ones 1.02-1.68), eosin pink (absorbs green: R/G <= 0.5 and B/G <= 0.9;
#: real ones R/G 0.05-0.49, B/G 0.11-0.70). Without this an isotropic cone wider than
#: real slides reaches colours no such dye has, such as a pink "DAB".
DYE_CLASS = {
    "hematoxylin": lambda r, b: r >= 0.6,
    "dab": lambda r, b: b >= 1.0,
    "eosin": lambda r, b: r <= 0.5 and b <= 0.9,
}
#: Least angle (degrees) between a slide's hematoxylin and DAB: pairs drawn closer are
#: drawn again. The closest real pair measured is 14 degrees (Macenko estimates on the
#: 5 %-scale BIRL pro-SPC image, where resampling mixes the two stains; full-resolution
#: IHC: 36 degrees, Ruifrok-Johnston 37); two stains closer than any real pair are a
#: colour no reader, human or not, could split.
MIN_HDAB_DEG = 14.0
#: Standard deviation of the log of each slide's stain strength (hematoxylin, second stain):
#: 95 % of slides within x0.67-1.5 (hematoxylin) and x0.61-1.63 (DAB, eosin).
STRENGTH_SD = (0.2, 0.25)

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


def tilt(v: tuple[float, float, float], rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A unit vector drawn uniformly from the spherical cap of half-angle ``max_deg`` around
    ``v`` (every component kept positive: an absorbing dye)."""
    centre = unit(v)
    cos_t = rng.uniform(np.cos(np.deg2rad(max_deg)), 1.0)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    # two unit vectors orthogonal to the centre span the cap's tangent plane
    e1 = unit(np.cross(centre, (0.0, 0.0, 1.0) if abs(centre[2]) < 0.9 else (1.0, 0.0, 0.0)))
    e2 = np.cross(centre, e1)
    sin_t = np.sqrt(1.0 - cos_t * cos_t)
    out = cos_t * centre + sin_t * (np.cos(phi) * e1 + np.sin(phi) * e2)
    return unit(out.clip(0.01, None))


def _draw_dye(name: str, rng: np.random.Generator, variation: float) -> np.ndarray:
    """A stain direction from the dye's cone that keeps the dye's colour class."""
    for _ in range(1000):
        v = tilt(STAIN_CENTRES[name], rng, HUE_CONE_DEG[name] * variation)
        if DYE_CLASS[name](v[0] / v[1], v[2] / v[1]):
            return v
    return unit(STAIN_CENTRES[name])


def random_style(kind: str, rng: np.random.Generator, variation: float = 1.0) -> StainStyle:
    """A per-slide stain style: stain directions and strengths drawn around the stains of
    real slides (``variation`` scales the cones and the strength spread)."""
    second = "eosin" if kind == "he" else "dab"
    for _ in range(1000):
        vectors = np.stack([_draw_dye(name, rng, variation) for name in ("hematoxylin", second)])
        cos = float(np.dot(vectors[0], vectors[1]))
        if kind == "he" or np.degrees(np.arccos(min(cos, 1.0))) >= MIN_HDAB_DEG:
            break
    strength = (
        float(np.exp(rng.normal(0.0, STRENGTH_SD[0] * variation))),
        float(np.exp(rng.normal(0.0, STRENGTH_SD[1] * variation))),
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
