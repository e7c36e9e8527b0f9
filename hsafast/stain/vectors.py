"""Stain matrices: the default Ruifrok-Johnston vectors and per-slide Macenko estimates.

A stain matrix holds one optical-density (OD) colour vector per stain, as rows,
so that ``od_rgb = concentrations @ rgb_from_stains``. The default is the
hematoxylin / eosin / DAB matrix of Ruifrok and Johnston (Anal. Quant. Cytol.
Histol. 23:291, 2001) with the same numbers scikit-image's ``rgb2hed`` uses, so
that results can be checked against it pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from hsafast.errors import StainError

#: Condition number above which a stain matrix is treated as singular.
MAX_CONDITION = 1e4


@dataclass(frozen=True)
class StainMatrix:
    """Three stain OD vectors (rows of ``rgb_from_stains``) and their names."""

    names: tuple[str, str, str]
    rgb_from_stains: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        m = np.array(self.rgb_from_stains, dtype=np.float64)  # a private, read-only copy
        if m.shape != (3, 3) or not np.all(np.isfinite(m)):
            raise StainError(f"a stain matrix is 3x3 and finite, got shape {m.shape}")
        if len(self.names) != 3 or len(set(self.names)) != 3:
            raise StainError(f"a stain matrix names three distinct stains, got {self.names}")
        m.flags.writeable = False
        object.__setattr__(self, "rgb_from_stains", m)

    @cached_property
    def stains_from_rgb(self) -> np.ndarray:
        """The inverse matrix (OD row -> concentrations); StainError when singular."""
        cond = np.linalg.cond(self.rgb_from_stains)
        if not np.isfinite(cond) or cond > MAX_CONDITION:
            raise StainError(
                f"the stain vectors {self.names} are (nearly) linearly dependent "
                f"(condition number {cond:.3g}); give distinct stain colours"
            )
        inv = np.linalg.inv(self.rgb_from_stains)
        inv.flags.writeable = False
        return inv

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise StainError(f"the stain matrix has no stain {name!r} (has {self.names})") from None

    @classmethod
    def from_vectors(
        cls,
        hematoxylin: np.ndarray | list[float],
        dab: np.ndarray | list[float],
        third: np.ndarray | list[float] | None = None,
        third_name: str = "residual",
    ) -> StainMatrix:
        """Hematoxylin and DAB OD vectors (normalised here), plus a third one.

        Without a third vector the (normalised) cross product of the two is
        used: orthogonal to both, it keeps the matrix well conditioned and
        collects what neither stain explains.
        """
        h = _unit(np.asarray(hematoxylin, dtype=np.float64), "hematoxylin")
        d = _unit(np.asarray(dab, dtype=np.float64), "dab")
        if third is None:
            r = np.cross(h, d)
            norm = np.linalg.norm(r)
            if norm < 1e-6:
                raise StainError("the hematoxylin and DAB vectors are parallel")
            r = r / norm
            r = -r if r.sum() < 0 else r
        else:
            r = _unit(np.asarray(third, dtype=np.float64), third_name)
        return cls(("hematoxylin", third_name, "dab"), np.stack([h, r, d]))


def _unit(v: np.ndarray, name: str) -> np.ndarray:
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise StainError(f"the {name} vector must hold three finite numbers, got {v!r}")
    norm = float(np.linalg.norm(v))
    if norm < 1e-9:
        raise StainError(f"the {name} vector is zero")
    return v / norm


#: Ruifrok-Johnston hematoxylin / eosin / DAB (scikit-image ``rgb_from_hed``).
HED = StainMatrix(
    ("hematoxylin", "eosin", "dab"),
    np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]]),
)


def estimate_macenko(
    rgb: np.ndarray,
    *,
    od_min: float = 0.15,
    percentile: float = 1.0,
    max_pixels: int = 200_000,
    seed: int = 0,
) -> StainMatrix:
    """Hematoxylin and DAB vectors of one slide, estimated from its pixels.

    Macenko et al. (ISBI 2009): project the OD of stained pixels onto the plane
    of their two main directions and take the robust extreme angles as the two
    stains. Of the two, the bluer one (larger red-channel OD share) is
    hematoxylin. ``rgb`` is any array of uint8 RGB pixels (tiles, a thumbnail).
    """
    from hsafast.stain.deconvolution import od_lut

    px = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    od = od_lut()[px].astype(np.float64)
    od = od[np.all(od > od_min / 3, axis=1) & (od.sum(axis=1) > od_min)]
    if len(od) < 100:
        raise StainError(f"too few stained pixels ({len(od)}) to estimate stain vectors")
    if len(od) > max_pixels:
        od = od[np.random.default_rng(seed).choice(len(od), max_pixels, replace=False)]
    _, vecs = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = vecs[:, 1:3]
    if plane[0, 1] < 0:
        plane[:, 1] *= -1
    if plane[0, 0] < 0:
        plane[:, 0] *= -1
    proj = od @ plane
    angle = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(angle, [percentile, 100 - percentile])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    v1, v2 = np.abs(v1), np.abs(v2)
    share1 = v1[0] / v1.sum()
    share2 = v2[0] / v2.sum()
    h, d = (v1, v2) if share1 > share2 else (v2, v1)
    return StainMatrix.from_vectors(h, d)


#: Eosin's colour, as OD ratios: it absorbs green, little red and less blue than green
#: (red / green below this, blue / green below ``EOSIN_MAX_BLUE``). Real eosin vectors
#: (Ruifrok-Johnston's, Macenko's and Landini's references, estimates on the test H&E
#: images) have red / green 0.05-0.49 and blue / green 0.11-0.70; real hematoxylin has red
#: / green 0.64-1.3 and real DAB blue / green 1.02-1.68, and their mixtures have neither
#: (only simulated dyes beyond the real ones, a DAB that absorbs little red with a
#: hematoxylin that absorbs little blue, come close).
EOSIN_MAX_RED = 0.55
EOSIN_MAX_BLUE = 0.8


def eosin_coloured(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """Whether pixels with these red, green and blue ODs have eosin's colour."""
    return (red < EOSIN_MAX_RED * green) & (blue < EOSIN_MAX_BLUE * green)


#: Summed OD under which a pixel's hue is mostly sensor noise (a level of noise moves a
#: channel's OD by 0.005-0.02 at these densities); such pixels do not vote on hues.
HUE_MIN_OD = 0.3
#: An estimated hematoxylin vector is trusted within this angle (degrees) of the Ruifrok-
#: Johnston one: estimates on real slides and published hematoxylin vectors lie 5-12.3
#: degrees from it.
MAX_HEMATOXYLIN_DEG = 25.0


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def estimate_hdab(rgb: np.ndarray, *, max_pixels: int = 100_000) -> StainMatrix:
    """The slide's own hematoxylin vector, with Ruifrok-Johnston's DAB and eosin.

    Hematoxylin is what goes wrong: a counterstain whose hue differs from the
    Ruifrok-Johnston vector leaks into the DAB channel (simulated hematoxylin-only
    sections read up to 60 % of their tissue as DAB 1+ with hues real slides have),
    so every negative nucleus risks reading positive. Its direction is found by
    splitting the pixels whose hue is reliable between a hematoxylin and a DAB
    direction (two-means on OD directions, started from Ruifrok-Johnston's) and taking
    the mean direction of the hematoxylin side; on a section without DAB that is the
    main direction of all its pixels. DAB keeps Ruifrok-Johnston's vector: a DAB hue
    off by 15 degrees changes DAB concentrations by a few percent only (cos 15 = 0.97),
    and estimating it from few or faint brown pixels is less reliable than that. An
    estimate farther than ``MAX_HEMATOXYLIN_DEG`` from Ruifrok-Johnston's, or too few
    pixels, leave :data:`HED`. ``rgb`` is any array of uint8 RGB pixels, such as a
    sample of a slide's tiles; every k-th pixel is used, at most ``max_pixels``.
    """
    from hsafast.stain.deconvolution import od_lut

    rj_h, rj_e, rj_d = HED.rgb_from_stains
    px = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    px = px[:: max(1, len(px) // max_pixels)]
    lut = od_lut().astype(np.float64)
    od = np.stack([lut[px[:, c]] for c in range(3)], axis=1)
    od = od[od.sum(axis=1) > HUE_MIN_OD]
    if len(od) < 100:
        return HED
    hue = _unit_rows(od)
    h, d = _unit_rows(rj_h), _unit_rows(rj_d)
    for _ in range(5):
        near_h = hue @ h >= hue @ d
        if not near_h.any():
            return HED
        h = _unit_rows(od[near_h].sum(axis=0))
        if near_h.all():
            break
        d = _unit_rows(od[~near_h].sum(axis=0))
    if _angle(h, rj_h) > MAX_HEMATOXYLIN_DEG:
        return HED
    return StainMatrix(HED.names, np.stack([h, rj_e, rj_d]))
