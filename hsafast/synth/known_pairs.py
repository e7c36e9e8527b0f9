"""Pairs with a known answer: a real image warped by a random transform and restained.

Landmarks on real pairs are few and noisy; a real section warped by a known
affine map (any rotation, a flip, translation, mild scale and shear) plus a
smooth random displacement gives the exact answer at every pixel. Recolouring
the warped copy from H&E to an IHC-like look (hematoxylin kept, eosin turned
into a DAB-brown) keeps the stain difference that registration must survive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from hsafast.registration.representation import tissue_mask
from hsafast.registration.transform import Registration


@dataclass(frozen=True)
class KnownPair:
    he: np.ndarray  #: (H, W, 3) uint8, the original image
    ihc: np.ndarray  #: (H', W', 3) uint8, warped and restained
    truth: Registration  #: the exact H&E -> IHC map
    angle: float
    flip: bool


def restain_as_ihc(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H&E -> IHC-like colours: weaker hematoxylin, eosin replaced by DAB."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(rgb)
    out = np.zeros_like(hed)
    out[..., 0] = hed[..., 0] * rng.uniform(0.5, 0.8)
    out[..., 2] = hed[..., 1] * rng.uniform(0.6, 1.2)
    ihc = np.clip(hed2rgb(out) * 255.0, 0, 255)
    ihc += rng.normal(0.0, 3.0, ihc.shape)
    return np.clip(ihc, 0, 255).astype(np.uint8)


def random_field(
    shape: tuple[int, int], amplitude: float, rng: np.random.Generator, nodes: int = 5
) -> np.ndarray:
    """A smooth (H, W, 2) displacement: random nodes, bicubic upsampling, Gaussian blur."""
    h, w = shape
    coarse = rng.normal(0.0, 1.0, (nodes, nodes, 2)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    field = cv2.GaussianBlur(field, (0, 0), max(h, w) / (2.0 * nodes))
    peak = float(np.abs(field).max()) or 1.0
    return (field * (amplitude / peak)).astype(np.float32)


def random_affine(
    shape: tuple[int, int], out_shape: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, float, bool]:
    """Any rotation and flip, scale 0.95-1.05, shear up to 0.05, the image kept inside."""
    h, w = shape
    angle = float(rng.uniform(0.0, 360.0))
    flip = bool(rng.integers(0, 2))
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    scale = np.diag(rng.uniform(0.95, 1.05, 2))
    shear = np.array([[1.0, rng.uniform(-0.05, 0.05)], [0.0, 1.0]])
    lin = rot @ shear @ scale @ (np.diag([-1.0, 1.0]) if flip else np.eye(2))
    centre_in = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    oh, ow = out_shape
    slack = 0.05 * min(oh, ow)
    centre_out = np.array([(ow - 1) / 2.0, (oh - 1) / 2.0]) + rng.uniform(-slack, slack, 2)
    affine = np.eye(3)
    affine[:2, :2] = lin
    affine[:2, 2] = centre_out - lin @ centre_in
    return affine, angle, flip


def make_known_pair(
    he: np.ndarray, rng: np.random.Generator, field_amplitude: float = 0.01
) -> KnownPair:
    """Warp ``he`` by a random affine map and a smooth field (amplitude as a fraction of
    the image's longer side), then restain it: the IHC of a pair with a known answer."""
    h, w = he.shape[:2]
    side = int(np.ceil(np.hypot(h, w) * 1.08))
    out_shape = (side, side)
    affine, angle, flip = random_affine((h, w), out_shape, rng)
    field = random_field((h, w), field_amplitude * max(h, w), rng)
    truth = Registration(affine=affine, field=field, field_scale=(1.0, 1.0))
    # moving pixel y shows H&E point x with affine(x + field(x)) = y: invert by iteration
    ys, xs = np.indices(out_shape, dtype=np.float64)
    inv = np.linalg.inv(affine)
    zx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    zy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    px, py = zx.copy(), zy.copy()
    for _ in range(12):
        dx = cv2.remap(
            field[..., 0],
            px.astype(np.float32),
            py.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        dy = cv2.remap(
            field[..., 1],
            px.astype(np.float32),
            py.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        px, py = zx - dx, zy - dy
    warped = cv2.remap(
        he,
        px.astype(np.float32),
        py.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(255, 255, 255),
    )
    return KnownPair(he=he, ihc=restain_as_ihc(warped, rng), truth=truth, angle=angle, flip=flip)


def tissue_points(rgb: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random (x, y) pixel positions on tissue, for measuring errors."""
    ys, xs = np.nonzero(tissue_mask(rgb))
    pick = rng.choice(len(xs), size=min(count, len(xs)), replace=False)
    return np.column_stack([xs[pick], ys[pick]]).astype(np.float64)


def errors_against_truth(
    registration: Registration,
    map_he_to_ihc: Callable[[np.ndarray], np.ndarray],
    points: np.ndarray,
    diagonal: float,
) -> dict[str, float]:
    """rTRE of ``registration`` against a true map (any callable on level-0 (N, 2) points),
    such as a simulator's truth: median, 90th percentile and maximum."""
    from hsafast.registration.quality import rtre

    err = rtre(registration.map(points), map_he_to_ihc(points), diagonal)
    return {
        "median": float(np.median(err)),
        "p90": float(np.percentile(err, 90)),
        "max": float(err.max()),
    }
