"""Detected tissue against outlines drawn by hand on every real image (tests/data/masks/).

The floor of each image is what its coarse outline allows: a mask whose every edge lies
within the drawing tolerance of the drawn line (plus one pixel of the detector's mask)
scores at least |outline eroded| / |outline dilated| by that distance (tissue_truth.py).
It is computed from the outline alone, never from a detector's result.
"""

from __future__ import annotations

import json
import logging

import pytest
from tissue_truth import IMAGES, MASKS, TruthImage, iou, iou_floor, truth_mask

import hsafast

# Fat at 29 um/px: adipocyte membranes (1 um) are a thirtieth of a pixel and their
# lobules absorb 0.01-0.02 OD, inside the scatter of the glass, so only the septa and
# vessels of the fat around the CAMELYON nodes are found. The outline takes the fat in.
FAT_AT_29_UM = pytest.mark.xfail(
    strict=True,
    reason="the fat around the nodes is invisible at 29 um/px: its septa alone are found",
)
MARKS = {"dicom_jpeg": FAT_AT_29_UM, "dicom_j2k": FAT_AT_29_UM}


@pytest.mark.parametrize(
    "image", [pytest.param(im, id=im.name, marks=MARKS.get(im.name, ())) for im in IMAGES]
)
def test_iou_with_the_hand_drawn_outline(
    image: TruthImage, caplog: pytest.LogCaptureFixture
) -> None:
    truth = truth_mask(image.truth)
    scale = json.loads((MASKS / f"{image.truth}.json").read_text())["scale"]
    with caplog.at_level(logging.ERROR), hsafast.open_slide(image.path, mpp=image.mpp) as slide:
        mask = hsafast.detect_tissue(slide)
    floor = iou_floor(truth, mask.downsample[0] * scale)
    score = iou(mask.mask, truth)
    assert score >= floor, f"{image.name}: IoU {score:.3f} under the outline's floor {floor:.3f}"


def test_the_floor_is_met_by_a_mask_within_the_tolerance() -> None:
    # a detector that gets the outline exactly, or shifted by a few pixels, passes
    from scipy import ndimage as ndi

    truth = truth_mask("Rat-Kidney_HE")
    floor = iou_floor(truth, 1.0)
    assert iou(truth, truth) == 1.0
    shifted = ndi.shift(truth.astype(float), (4, -4), order=0) > 0.5
    assert iou(shifted, truth) >= floor
    assert floor > 0.8  # and is a real bar: a coarse outline, not a free pass
    assert iou(ndi.binary_dilation(truth, iterations=40), truth) < floor
