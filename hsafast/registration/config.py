"""Parameters of the registration, held fixed across pairs (sizes are working pixels)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hsafast.errors import ConfigError


@dataclass(frozen=True)
class RegistrationConfig:
    work_size: int = 1024
    """Longer side of the working images, pixels; both slides share one pixel size."""
    coarse_size: int = 128
    """Longer side of the images of the rotation and flip search."""
    angle_step: float = 3.0
    """Degrees between the rotation angles tried (the whole circle is searched)."""
    flips: bool = True
    """Also try the mirrored section (a section mounted upside down)."""
    candidates: int = 32
    """Distinct (angle, flip) candidates of the coarse search refined and compared (the true
    angle ranked 14th at worst on the pairs tried; see docs/registration.md)."""
    min_candidate_overlap: float = 0.5
    """Share of the smaller section that a candidate must lay on tissue of the other: a
    majority, so that a candidate ranked on the structure of a sliver of overlap loses."""
    edge_sigma: float = 1.0
    """Blur before the gradient magnitude that the affine refinement aligns."""
    ecc_levels: tuple[int, ...] = (8, 4, 2)
    """Pyramid downsamples of the affine refinement, coarse to fine."""
    ecc_iterations: int = 200
    """Iterations of OpenCV's ECC per pyramid level."""
    nonrigid: bool = True
    """Estimate a smooth displacement field after the affine stage."""
    structure_quantiles: tuple[float, ...] = (0.2, 0.3, 0.4)
    """Shares of the tissue (lowest OD) counted as lumen in the images of the flow; one
    flow per share, averaged."""
    flow_blur: float = 3.0
    """Blur of the tissue/lumen images given to the optical flow."""
    flow_window: int = 63
    """Averaging window of the Farneback optical flow."""
    flow_downsample: int = 1
    """The optical flow runs this many times coarser than the working images."""
    field_sigma: float = 12.0
    """Gaussian regularisation of the displacement field (tissue-weighted)."""
    field_significance: float = 2.0
    """The field is kept only when it raises the correlation of the verdict (edge images,
    ``quality_sigma``) by more than this many standard errors of the difference of two
    dependent correlations (``quality.field_test``). Origin: the usual significance level
    (one-sided p = 0.023), not fitted; on the calibration pairs (``python -m bench
    calibrate register``) every field that hurt scored below 0."""
    field_step: int = 4
    """The stored field is this many times coarser than the working images."""
    min_tissue_fraction: float = 0.002
    """A slide with less tissue than this fraction of its area counts as empty. Origin: the
    rotation search's 128-px image then holds about 30 tissue pixels, too few to place a
    section."""
    max_mpp_ratio: float = 4.0
    """Pixel sizes differing by more than this factor are refused. Origin: consecutive
    sections are scanned at 20x or 40x (a factor of 2); 4 leaves room for one scan at 10x,
    beyond that the recorded pixel size is more likely wrong."""
    max_area_ratio: float = 3.0
    """Tissue areas (in square micrometres) differing by more are not one pair. Origin: the
    H&E coverage limit below (0.3) lets the IHC section lose up to 70 % of the tissue, an
    area ratio of 3.3."""
    min_dice: float = 0.45
    """Dice of the registered tissue masks below this fails the registration. A safety net
    for gross misfits only: the two coverage limits below already imply a Dice of at least
    0.375 (their harmonic mean), calibration pairs start at 0.77 and non-pairs reach 0.88,
    so the correlation (``min_ncc``) is what tells pairs from non-pairs."""
    quality_sigma: float = 4.0
    """Blur of the edge images whose correlation scores the result."""
    min_ncc: float = 0.2
    """Correlation of the registered edge images (where both sections have tissue) below
    this fails the registration. Origin: the highest correlation of the calibration set's
    non-pairs that pass the Dice and coverage checks (``python -m bench calibrate
    register``: simulated sections of other cases, real images against each other; none of
    them used for accuracy figures), 0.193, rounded up to the next 0.05. Real pairs are
    only checked against it."""
    min_coverage: float = 0.5
    """Fraction of the IHC section's tissue that must land on H&E tissue. Origin: a
    majority; below it most of the IHC mask is something else (a control piece)."""
    min_he_coverage: float = 0.3
    """Fraction of the H&E section's tissue that must land on IHC tissue. Origin: a choice
    that accepts IHC sections which lost up to 70 % of the tissue (antigen retrieval
    detaches pieces); lower than ``min_coverage`` because loss is common and controls sit
    on the IHC slide only."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.extra:
            raise ConfigError(f"unknown registration options {sorted(self.extra)}")
        positive = {
            "work_size": self.work_size,
            "coarse_size": self.coarse_size,
            "angle_step": self.angle_step,
            "candidates": self.candidates,
            "ecc_iterations": self.ecc_iterations,
            "flow_window": self.flow_window,
            "flow_downsample": self.flow_downsample,
            "field_step": self.field_step,
            "max_mpp_ratio": self.max_mpp_ratio,
            "max_area_ratio": self.max_area_ratio,
            "quality_sigma": self.quality_sigma,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.coarse_size > self.work_size:
            raise ConfigError("coarse_size must not exceed work_size")
        if not self.structure_quantiles or any(
            not 0.0 < float(q) < 1.0 for q in self.structure_quantiles
        ):
            raise ConfigError(
                f"structure_quantiles must lie in (0, 1), got {self.structure_quantiles}"
            )
        if not self.ecc_levels or any(int(v) < 1 for v in self.ecc_levels):
            raise ConfigError(f"ecc_levels must be downsamples >= 1, got {self.ecc_levels}")
        for name in (
            "min_dice",
            "min_coverage",
            "min_he_coverage",
            "min_tissue_fraction",
            "min_candidate_overlap",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out["ecc_levels"] = list(self.ecc_levels)
        out["structure_quantiles"] = list(self.structure_quantiles)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RegistrationConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = {k: v for k, v in values.items() if k not in known}
        kwargs = {k: v for k, v in values.items() if k in known}
        if "structure_quantile" in unknown:  # one threshold, as older files have it
            kwargs.setdefault("structure_quantiles", (unknown.pop("structure_quantile"),))
        if "structure_quantiles" in kwargs:
            kwargs["structure_quantiles"] = tuple(float(q) for q in kwargs["structure_quantiles"])
        if "ecc_levels" in kwargs:
            kwargs["ecc_levels"] = tuple(int(v) for v in kwargs["ecc_levels"])
        return cls(**kwargs, extra=unknown)
