"""How well two sections registered, and when to refuse a pair.

A registration that does not hold must never feed patch-level training
silently, so every result carries a verdict. Checks before registering catch
inputs that cannot be a pair (an empty slide, very different pixel sizes or
tissue areas); checks after it measure the overlap of the tissue masks (Dice,
and the share of each section's tissue that lands on tissue of the other, which
drops when a separate piece such as control tissue dominates one mask; the H&E
side is allowed to lose more, since IHC sections often lose pieces during
antigen retrieval while controls sit on the IHC slide) and the
correlation of the stain-agnostic edge images where both sections have tissue,
at a scale (``quality_sigma``) coarse enough that stain texture does not
dominate it but fine enough that two different sections of similar outline do
not correlate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from hsafast.registration.config import RegistrationConfig
from hsafast.registration.representation import Section, edge_image


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    quality: dict[str, float] = field(default_factory=dict)


def effective_samples(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Independent samples behind the correlation of images ``a`` and ``b`` over ``mask``.

    Neighbouring pixels of smooth images are not independent; the variance of their
    correlation is that of ``N_eff = N^2 / sum_k M(k) rho_a(k) rho_b(k)`` independent
    samples (Clifford, Richardson and Hemon, Biometrics 1989; Dutilleul, Biometrics
    1993), with ``rho`` each image's autocorrelation at lag ``k`` over the mask and
    ``M(k)`` the number of pixel pairs at that lag. The autocorrelations are measured
    (FFT), not assumed, and summed out to the first lag radius where their product is
    no longer positive (Geyer's initial positive sequence), where estimates turn to noise.
    """
    m = np.asarray(mask, dtype=bool)
    n = int(m.sum())
    if n < 16:
        return float(n)
    ys, xs = np.nonzero(m)
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    m, fa, fb = m[crop], a[crop].astype(np.float64), b[crop].astype(np.float64)
    h, w = m.shape
    shape = (2 * h, 2 * w)  # zero padding: no wrap-around between lags

    def spectrum(img: np.ndarray) -> np.ndarray:
        return np.fft.rfft2(img, s=shape)

    def autocorrelation(img: np.ndarray) -> np.ndarray:
        f = spectrum(img)
        return np.fft.irfft2(f * np.conj(f), s=shape)

    mf = m.astype(np.float64)
    pairs = autocorrelation(mf)
    product = np.ones(shape)
    for img in (fa, fb):
        x = np.where(m, img - img[m].mean(), 0.0)
        c = autocorrelation(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = (c / pairs) / (c[0, 0] / pairs[0, 0])
        product *= np.where(pairs > 0.25 * n, rho, 0.0)
    # lags as signed offsets, then the radial profile of the product
    ky = np.fft.fftfreq(shape[0]) * shape[0]
    kx = np.fft.fftfreq(shape[1]) * shape[1]
    radius = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.int64)
    weight = np.where(pairs > 0.25 * n, pairs, 0.0)
    sums = np.bincount(radius.ravel(), (weight * product).ravel())
    counts = np.bincount(radius.ravel(), weight.ravel())
    profile = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    stop = int(np.argmax(profile <= 0)) if (profile <= 0).any() else len(profile)
    total = float(sums[: max(stop, 1)].sum())
    return float(n * n / total) if total > 0 else float(n)


def dependent_correlation_z(r_ab: float, r_ac: float, r_bc: float, n: float) -> float:
    """How far ``r_ac`` exceeds ``r_ab``, in standard errors, for correlations that share
    the variable ``a`` and are measured on the same ``n`` samples.

    The two correlations are not independent (here ``b`` and ``c`` are one IHC image
    under two maps, correlated by ``r_bc``), so the standard error of the difference of
    their Fisher z is ``sqrt(2 (1 - r_bc) h / (n - 3))`` (Meng, Rosenthal and Rubin,
    Psychol Bull 1992), far below the ``sqrt(2 / (n - 3))`` of independent samples when
    ``b`` and ``c`` are alike.
    """
    if n <= 4:
        return 0.0
    r1 = float(np.clip(r_ab, -0.9999, 0.9999))
    r2 = float(np.clip(r_ac, -0.9999, 0.9999))
    r12 = float(np.clip(r_bc, -0.9999, 0.9999))
    mean_sq = (r1 * r1 + r2 * r2) / 2.0
    f = min(1.0, (1.0 - r12) / (2.0 * (1.0 - mean_sq)))
    h = (1.0 - f * mean_sq) / (1.0 - mean_sq)
    return float((np.arctanh(r2) - np.arctanh(r1)) * np.sqrt((n - 3.0) / (2.0 * (1.0 - r12) * h)))


@dataclass(frozen=True)
class FieldTest:
    """Whether a displacement field raised the verdict's edge correlation beyond noise."""

    gain: float
    """The rise, in standard errors (:func:`dependent_correlation_z`)."""
    r_affine: float
    r_field: float
    r_between: float
    """Correlation of the IHC edge image under the two maps."""
    samples: float
    """Effective independent samples (:func:`effective_samples`)."""


def field_test(
    he: Section, ihc: Section, matrix: np.ndarray, field: np.ndarray, config: RegistrationConfig
) -> FieldTest:
    """Edge correlations with and without ``field``, on the pixels where the H&E and both
    mapped IHC sections have tissue, and the significance of their difference."""
    edges_he = edge_image(he.od, config.quality_sigma)
    edges_ihc = edge_image(ihc.od, config.quality_sigma)
    affine = warp_to_fixed(edges_ihc, matrix, he.shape, None)
    warped = warp_to_fixed(edges_ihc, matrix, he.shape, field)
    region = he.tissue & (warp_to_fixed(ihc.tissue, matrix, he.shape, None) > 0.5)
    region &= warp_to_fixed(ihc.tissue, matrix, he.shape, field) > 0.5
    r1 = normalised_cross_correlation(edges_he, affine, region)
    r2 = normalised_cross_correlation(edges_he, warped, region)
    r12 = normalised_cross_correlation(affine, warped, region)
    step = max(1, int(config.quality_sigma // 2))  # the blurred images lose nothing at this step
    n = effective_samples(edges_he[::step, ::step], affine[::step, ::step], region[::step, ::step])
    return FieldTest(dependent_correlation_z(r1, r2, r12, n), r1, r2, r12, n)


def check_inputs(
    he: Section, ihc: Section, he_mpp: float, ihc_mpp: float, config: RegistrationConfig
) -> str:
    """The reason why this cannot be a pair, or '' when it may be one."""
    for name, sec in (("H&E", he), ("IHC", ihc)):
        if sec.tissue_fraction < config.min_tissue_fraction:
            return (
                f"no tissue found on the {name} slide "
                f"({100 * sec.tissue_fraction:.2f}% of its area)"
            )
    ratio = max(he_mpp, ihc_mpp) / min(he_mpp, ihc_mpp)
    if ratio > config.max_mpp_ratio:
        return (
            f"pixel sizes differ by a factor {ratio:.1f} ({he_mpp:.4g} vs {ihc_mpp:.4g} um/px); "
            "check the scan magnifications or the mpp given"
        )
    area_he = float(he.tissue.sum()) * he.mpp**2
    area_ihc = float(ihc.tissue.sum()) * ihc.mpp**2
    area_ratio = max(area_he, area_ihc) / max(min(area_he, area_ihc), 1e-12)
    if area_ratio > config.max_area_ratio:
        larger = "IHC" if area_ihc > area_he else "H&E"
        return (
            f"tissue areas differ by a factor {area_ratio:.1f} (the {larger} section is larger): "
            "not sections of one block, or extra tissue such as a control dominates one slide"
        )
    return ""


def warp_to_fixed(
    moving: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], field: np.ndarray | None
) -> np.ndarray:
    """Resample ``moving`` on the fixed grid through ``matrix @ (p + field(p))``."""
    h, w = shape
    ys, xs = np.indices((h, w), dtype=np.float32)
    if field is not None:
        xs = xs + field[..., 0]
        ys = ys + field[..., 1]
    m = matrix.astype(np.float32)
    map_x = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    map_y = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    src = moving.astype(np.float32) if moving.dtype == bool else moving
    return cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def normalised_cross_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x = a[mask].astype(np.float64)
    y = b[mask].astype(np.float64)
    if x.size < 16:
        return 0.0
    x -= x.mean()
    y -= y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def overlap_similarity(
    he_structure: np.ndarray,
    ihc_structure: np.ndarray,
    he_tissue: np.ndarray,
    ihc_tissue: np.ndarray,
    matrix: np.ndarray,
) -> tuple[float, float]:
    """Structure correlation where both sections have tissue, and the share of the smaller
    section lying on tissue of the other, for a working-pixel map (H&E -> IHC).

    This ranks candidate alignments of one pair. Unlike a correlation over the whole image
    it is not dominated by the tissue outline, which a roundish section matches at many
    angles, nor penalised where one section lost a piece the other still has.
    """
    shape = (he_tissue.shape[0], he_tissue.shape[1])
    warped = warp_to_fixed(ihc_tissue, matrix, shape, None) > 0.5
    both = he_tissue & warped
    n_both = float(both.sum())
    overlap = n_both / max(min(float(he_tissue.sum()), float(warped.sum())), 1.0)
    moved = warp_to_fixed(ihc_structure, matrix, shape, None)
    return normalised_cross_correlation(he_structure, moved, both), overlap


def assess(
    he: Section,
    ihc: Section,
    matrix: np.ndarray,
    field: np.ndarray | None,
    config: RegistrationConfig,
) -> Verdict:
    """Quality of a working-pixel map (H&E -> IHC) and the verdict it earns."""
    warped_tissue = warp_to_fixed(ihc.tissue, matrix, he.shape, field) > 0.5
    both = float((he.tissue & warped_tissue).sum())
    he_area = float(he.tissue.sum())
    dice = 2.0 * both / max(he_area + float(warped_tissue.sum()), 1.0)
    he_cover = both / max(he_area, 1.0)
    # the IHC's own share, measured on its grid (tissue mapped off the H&E grid counts too)
    back = cv2.warpAffine(
        he.tissue.astype(np.float32),
        matrix[:2].astype(np.float32),
        (ihc.shape[1], ihc.shape[0]),
        flags=cv2.INTER_LINEAR,
    )
    ihc_cover = float((ihc.tissue & (back > 0.5)).sum()) / max(float(ihc.tissue.sum()), 1.0)
    edges_he = edge_image(he.od, config.quality_sigma)
    edges_ihc = warp_to_fixed(edge_image(ihc.od, config.quality_sigma), matrix, he.shape, field)
    # compared where both sections have tissue: a piece lost from one section is not a
    # sign of a wrong map (the Dice and coverage checks bound how much may be missing)
    region = he.tissue & warped_tissue
    ncc = normalised_cross_correlation(edges_he, edges_ihc, region)
    quality = {
        "dice": round(dice, 4),
        "he_coverage": round(he_cover, 4),
        "ihc_coverage": round(ihc_cover, 4),
        "ncc": round(ncc, 4),
    }
    if dice < config.min_dice:
        reason = f"tissue masks overlap poorly after registration (Dice {dice:.2f})"
        return Verdict(False, reason, quality)
    if ihc_cover < config.min_coverage:
        return Verdict(
            False,
            f"only {100 * ihc_cover:.0f}% of the IHC tissue lands on tissue of the H&E "
            "section: not a pair, or extra tissue (a control?) dominates the IHC mask",
            quality,
        )
    if he_cover < config.min_he_coverage:
        return Verdict(
            False,
            f"only {100 * he_cover:.0f}% of the H&E tissue lands on tissue of the IHC "
            "section: not a pair, most of the IHC section was lost, or extra tissue "
            "dominates the H&E mask",
            quality,
        )
    if ncc < config.min_ncc:
        reason = f"registered tissue structure does not correlate (NCC {ncc:.2f})"
        return Verdict(False, reason, quality)
    return Verdict(True, "", quality)


def rtre(predicted: np.ndarray, target: np.ndarray, diagonal: float) -> np.ndarray:
    """Relative target registration error: distance over the image diagonal (ANHIR)."""
    return np.linalg.norm(np.asarray(predicted) - np.asarray(target), axis=1) / float(diagonal)
