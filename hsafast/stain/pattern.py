"""Is the DAB of a tile nuclear? Unstained nuclei inside DAB rings say it is not.

A nuclear stain (Ki-67, P53) puts DAB on nuclei: a stained nucleus is a DAB peak,
and an unstained one sits among unstained cytoplasm, so a nucleus whose centre is
free of DAB while a ring of DAB surrounds it is rare (it takes stained neighbours
on every side). A cytoplasmic or membranous stain does the opposite: nearly every
stained cell is such a hole, its nucleus (hematoxylin) ringed by DAB. Counting the
holes against the stained nuclei of the nuclear reading tells the two apart, so
that a cytoplasmic stain scored as Ki-67 is flagged instead of reading 99 %.

Nuclei are found on hematoxylin with the membranous cell detector, which also says
whether DAB covers enough of the ring around each nucleus; the hole test then
compares the DAB at the nucleus centre with the mean DAB of that ring. The ring is
read off the nuclei that the nuclear reading finds stained through their centre:
in dense, proliferative tissue an unstained nucleus is ringed by stained
neighbours, which is nuclear staining, not a hole.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from hsafast.stain.compartments import CellConfig, Cells, detect_cells
from hsafast.stain.deconvolution import concentrations
from hsafast.stain.markers import Marker
from hsafast.stain.vectors import StainMatrix

#: A hole's centre holds less than this share of its ring's mean DAB.
HOLE_CONTRAST = 0.8
#: The ring, in nucleus radii from the centre: just outside the nucleus, through the cytoplasm.
RING = (1.2, 2.0)
#: Least mean DAB of a hole's ring, as a share of the marker's 1+ threshold: a 1+ membrane
#: about 1 um wide crossing a ring 0.8 nucleus radii (about 2.8 um) wide averages a third
#: of 1+ over it. On simulated training tiles (``python -m bench calibrate stain``) the
#: rings of membranous and cytoplasmic holes average 0.34 and 0.52 of 1+ at their 1st
#: percentile, while most holes of nuclear staining (the faint halo between touching
#: stained nuclei; median 0.15) fall below.
RING_DAB = 0.25
#: Share of a ring that must lie off stained nuclei for its DAB to say anything.
MIN_FREE_RING = 0.5
#: Stained nuclei are masked this many times their radius (from their area): the blur
#: of optics and section thickness spreads their DAB past the segmented edge.
STAINED_MARGIN = 1.3


@lru_cache(maxsize=8)
def _probe(thresholds: tuple[float, float, float]) -> Marker:
    """A membranous marker with the measured marker's DAB grades: nuclei on hematoxylin
    and the DAB ring around each."""
    return Marker(
        "nuclear-pattern probe",
        "membranous",
        ("negative", "positive"),
        {"negative": "low", "positive": "intermediate/high"},
        cutoffs=(0.5,),
        dab_thresholds=thresholds,
    )


def dab_holes(
    tile: np.ndarray,
    matrix: StainMatrix,
    mpp: float,
    marker: Marker,
    config: CellConfig,
    stained: Cells,
) -> tuple[int, int]:
    """(nuclei found on hematoxylin, those that are unstained holes in a DAB ring).

    ``stained``: the tile's cells from the nuclear reading; the nuclei it grades
    stained, with 1+ DAB at their centre, are left out of every ring, so that an
    unstained nucleus between stained neighbours (dense, highly proliferative tissue)
    is not taken for a hole. A ring mostly covered by such nuclei says nothing, and a
    ring whose remaining DAB is fainter than ``RING_DAB`` of 1+ is no DAB ring.
    """
    nuclei, rings = hole_rings(tile, matrix, mpp, marker, config, stained)
    return nuclei, int((rings >= RING_DAB * marker.dab_thresholds[0]).sum())


def hole_rings(
    tile: np.ndarray,
    matrix: StainMatrix,
    mpp: float,
    marker: Marker,
    config: CellConfig,
    stained: Cells,
) -> tuple[int, np.ndarray]:
    """(nuclei found on hematoxylin, the ring DAB of every hole before the ``RING_DAB``
    floor): what ``dab_holes`` counts, and what the floor is calibrated on."""
    import cv2

    every_cell = replace(
        config,
        tumour_min_area_um2=0.0,
        tumour_min_width_um=0.0,
        tumour_min_fill=0.0,
        tumour_min_neighbours=0,
    )
    cells = detect_cells(tile, matrix, mpp, _probe(marker.dab_thresholds), every_cell)[0]
    ringed = cells.grade >= 1
    if not ringed.any():
        return len(cells), np.empty(0, np.float32)
    dab = concentrations(tile, matrix)[..., matrix.index("dab")].astype(np.float32)
    r = config.nucleus_radius_um / mpp
    centre = cv2.GaussianBlur(dab, (0, 0), max(0.25 * r, 0.5))
    h, w = dab.shape
    x = np.clip(np.rint(cells.xy[ringed, 0]).astype(np.intp), 0, w - 1)
    y = np.clip(np.rint(cells.xy[ringed, 1]).astype(np.intp), 0, h - 1)
    # the ring's mean DAB at each ringed nucleus only (pixels past the edge: the nearest
    # one), off the stained nuclei
    dy, dx = _annulus(RING[0] * r, RING[1] * r)
    ry = np.clip(y[:, None] + dy, 0, h - 1)
    rx = np.clip(x[:, None] + dx, 0, w - 1)
    free = ~_stained_nuclei(stained, centre >= marker.dab_thresholds[0], mpp)[ry, rx]
    ring = (dab[ry, rx] * free).sum(axis=1) / np.maximum(free.sum(axis=1), 1)
    holes = (free.mean(axis=1) >= MIN_FREE_RING) & (centre[y, x] < HOLE_CONTRAST * ring)
    return len(cells), ring[holes]


def _stained_nuclei(cells: Cells, dab_centre: np.ndarray, mpp: float) -> np.ndarray:
    """Mask of the nuclei the nuclear reading grades stained and whose centre holds 1+ DAB
    (``dab_centre``), as discs of their area: DAB through the nucleus, not a membrane
    touching its edge."""
    import cv2

    mask = np.zeros(dab_centre.shape, np.uint8)
    if cells.area_um2 is None:  # cells built without shapes: nothing to leave out
        return mask.astype(bool)
    h, w = dab_centre.shape
    stained = cells.grade >= 1
    for (cx, cy), area in zip(cells.xy[stained], cells.area_um2[stained], strict=True):
        x, y = min(max(round(float(cx)), 0), w - 1), min(max(round(float(cy)), 0), h - 1)
        if not dab_centre[y, x]:
            continue
        radius = max(1, round(STAINED_MARGIN * float(np.sqrt(area / np.pi)) / mpp))
        cv2.circle(mask, (x, y), radius, 1, thickness=-1)
    return mask.astype(bool)


def _annulus(r0: float, r1: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the pixels between radii ``r0`` and ``r1``."""
    reach = int(np.ceil(r1))
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    d = np.hypot(xx, yy)
    inside = (d >= r0) & (d <= r1)
    return yy[inside], xx[inside]
