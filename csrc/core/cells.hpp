// Cell detection and per-cell DAB grading on uint8 RGB IHC tiles (nuclear and
// membranous markers), the native counterpart of hsafast/stain/compartments.py.
//
// Per tile: colour deconvolution to hematoxylin and DAB; nuclei are the local
// maxima of the nuclear stain (H + DAB, or H alone for membranous markers)
// smoothed at half a nucleus radius, that stand out from their local background
// (a morphological opening with a disk four radii wide); each nucleus is graded
// by its mean DAB (nuclear) or by the stained share of a membrane ring around it
// (membranous); its size and shape come from a seeded watershed cut at half its
// height above the local background (cells_watershed.hpp), and decide whether it
// is tumour-like. Tiles are spread over threads (parallel_for).
#pragma once

#include <cstdint>
#include <vector>

#include "core/cells_filters.hpp"

namespace hsafast::cells {

struct Params {
  // Colour deconvolution: concentration_j = sum_c od_lut[rgb_c] * inv[c][j].
  float od_lut[256];
  float inv[3][3];
  int hema = 0;
  int dab = 2;
  bool membranous = false;
  // Geometry, in pixels (the Python layer derives it from the nucleus radius).
  double detect_sigma = 1.75;    // Gaussian of the detection map
  double shape_sigma = 0.7;      // Gaussian of the map nuclei are measured on
  int peak_window = 11;          // odd side of the window a centre is the maximum of
  int background_diameter = 29;  // odd diameter of the background opening's disk
  double mean_radius = 2.45;     // disk DAB is averaged over (nuclear markers)
  double radius = 3.5;           // nucleus radius (least inner radius of the ring)
  double reach = 10.5;           // farthest a nucleus extends from its centre
  // Detection thresholds (log10 OD).
  float min_od = 0.15f;
  float min_contrast = 0.06f;
  float mask_min = 0.05f;  // no nucleus pixel is fainter than this
  double thresholds[3] = {0.2, 0.4, 0.6};
  // Tumour-like rule.
  double mpp = 0.5;
  double min_area_um2 = 0, min_width_um = 0, min_fill = 0;
  int min_neighbours = 0;
  double neighbour_px = 50;
  double min_group_share = 0;  // share of the nuclei within group_px that pass the size tests
  double group_px = 40;
  // Membrane ring (membranous markers).
  double ring_px = 6;
  double ring_coverage = 0.4;
  Simd simd = Simd::kAuto;
};

struct Cell {
  double x = 0, y = 0;  // centre, tile pixels
  double dab = 0;       // mean DAB (nuclear) or of the ring's stained pixels (membranous)
  int8_t grade = 0;     // 0-3
  double area_um2 = 0, width_um = 0, fill = 0;
  bool tumour = false;
};

// rgb: n tiles of h x w x 3 uint8, C-contiguous; out[i]: the cells of tile i.
void detect(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, const Params& params,
            std::vector<std::vector<Cell>>& out);

}  // namespace hsafast::cells
