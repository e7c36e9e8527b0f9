"""The tissue outlines drawn by hand (tests/data/masks/), rasterised, and IoU against them.

Shared by tests/test_tissue_truth.py and ``python -m bench tissue``. How the
outlines were drawn: tests/data/masks/README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parent.parent
MASKS = ROOT / "tests" / "data" / "masks"

#: Pixel sizes given to the files that record none (um/px): the three small images
#: at the sizes their sources state (20x), the BIRL 5%-scale sections at sizes read
#: off their anatomy (tests/data/masks/README.md), TCGA in pixel units (None).
BIRL_LUNG_MPP = 3.5
BIRL_KIDNEY_MPP = 12.0


@dataclass(frozen=True)
class TruthImage:
    name: str
    """Short name for tables and test ids."""
    truth: str
    """File stem in tests/data/masks/."""
    mpp: float | None
    """Pixel size to open the file with (None: the file's own, or pixel units)."""
    kind: str
    """What the image is, for the tables."""

    @property
    def path(self) -> Path:
        return ROOT / json.loads((MASKS / f"{self.truth}.json").read_text())["image"]


IMAGES = [
    TruthImage("cmu1", "CMU-1-Small-Region", None, "H&E skin, frayed, 0.5 um/px"),
    TruthImage("tcga", "tcga-cr-7395-01a-01-ts1", None, "H&E frozen section, no pixel size"),
    TruthImage(
        "dicom_jpeg", "multiframe_camelyon_challenge_image", None, "H&E nodes in fat, 29 um/px"
    ),
    TruthImage(
        "dicom_j2k",
        "multi_frame_jpeg2000_camelyon_challenge_image",
        None,
        "H&E nodes in fat, ink, coverslip edges, 29 um/px",
    ),
    TruthImage("ihc_dab", "skimage_ihc", 0.5, "DAB IHC field, no glass"),
    TruthImage("he_tile", "wsidicom_test_tile_CMU-1-Small-Region", 0.499, "H&E tile"),
    TruthImage("he_field", "stardist_histo", 0.5, "H&E field, no glass"),
    TruthImage("lung_he", "Izd2-29-041-w35_HE", BIRL_LUNG_MPP, "mouse lung H&E"),
    TruthImage("lung_prospc", "Izd2-29-041-w35_proSPC", BIRL_LUNG_MPP, "mouse lung IHC, pale"),
    TruthImage("kidney_he", "Rat-Kidney_HE", BIRL_KIDNEY_MPP, "rat kidney H&E"),
    TruthImage("kidney_ck", "Rat-Kidney_PanCytokeratin", BIRL_KIDNEY_MPP, "rat kidney IHC, pale"),
]

#: How far a coarse outline drawn by eye may sit from the tissue's edge, in pixels
#: of the picture it was drawn on: the vertices were seen to be off by up to this
#: much while checking them over the image.
DRAWING_TOLERANCE_PX = 8


def truth_mask(stem: str) -> np.ndarray:
    """The hand-drawn outline of one image filled at its drawing scale (bool)."""
    spec = json.loads((MASKS / f"{stem}.json").read_text())
    width, height = spec["level0_size"]
    scale = spec["scale"]
    mask = np.zeros((round(height * scale), round(width * scale)), np.uint8)
    for ring in spec["tissue"]:
        cv2.fillPoly(mask, [np.round(np.asarray(ring, float)).astype(np.int32)], 1)
    for ring in spec.get("holes", []):
        cv2.fillPoly(mask, [np.round(np.asarray(ring, float)).astype(np.int32)], 0)
    return mask.astype(bool)


def iou(detected: np.ndarray, truth: np.ndarray) -> float:
    """IoU of a detected mask with the truth, on the truth's grid (the detected mask
    resampled by nearest neighbour: each truth pixel takes the mask pixel it lies in)."""
    h, w = truth.shape
    ys = np.minimum((np.arange(h) + 0.5) * detected.shape[0] / h, detected.shape[0] - 1)
    xs = np.minimum((np.arange(w) + 0.5) * detected.shape[1] / w, detected.shape[1] - 1)
    resampled = detected[ys.astype(np.intp)][:, xs.astype(np.intp)]
    union = np.logical_or(resampled, truth).sum()
    return float(np.logical_and(resampled, truth).sum() / union) if union else 1.0


def iou_floor(truth: np.ndarray, mask_px: float) -> float:
    """What a mask whose every edge lies within the drawing tolerance (plus one
    pixel of the detector's mask, ``mask_px`` truth pixels) of the drawn outline
    scores at least: |truth eroded| / |truth dilated| by that distance. The image's
    border is not a drawn edge (outside counts as tissue when eroding)."""
    reach = round(DRAWING_TOLERANCE_PX + mask_px)
    cross = ndi.generate_binary_structure(2, 1)
    inner = ndi.binary_erosion(truth, cross, iterations=reach, border_value=1)
    outer = ndi.binary_dilation(truth, cross, iterations=reach)
    return float(inner.sum() / outer.sum())
