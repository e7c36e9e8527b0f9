// Colour deconvolution of uint8 RGB tiles and fused per-tile stain statistics.
//
// Optical density comes from a 256-entry lookup table (the caller chooses the
// convention: log10 OD or scikit-image's scaled natural log); concentrations are
// od_row @ inv, inv being the inverse of the 3x3 stain matrix (rows = stains).
// The statistics kernel folds the lookup table and the matrix into per-channel
// tables, so that one pixel costs three table loads and two vector additions.
#pragma once

#include <cstdint>

namespace hsafast::stain {

// Columns of the statistics output, one row per tile.
enum Stat : int {
  kTissue = 0,     // pixels whose summed RGB optical density exceeds tissue_od
  kDab1 = 1,       // tissue pixels with DAB above threshold 1+ (and 2+, 3+)
  kDab2 = 2,
  kDab3 = 3,
  kHema = 4,       // tissue pixels with hematoxylin above hema_threshold
  kSaturated = 5,  // tissue pixels with a channel at or below saturation_level
  kDabSum = 6,     // sum over tissue pixels of max(DAB, 0)
  kHemaSum = 7,    // sum over tissue pixels of max(hematoxylin, 0)
  kResidualSum = 8,  // sum over tissue pixels of the third stain (not clamped)
  kStatCount = 9,
};

struct StatsParams {
  float od_lut[256];         // optical density of each 8-bit intensity
  float inv[3][3];           // concentration_j = sum_i od_i * inv[i][j]
  int dab = 2;               // index of DAB among the three stains
  int hema = 0;              // index of hematoxylin
  float dab_thresholds[3];   // 1+, 2+, 3+ (same units as od_lut)
  float hema_threshold = 0;  // hematoxylin-positive area threshold
  float tissue_od = 0;       // summed RGB OD above which a pixel is tissue
  int saturation_level = 0;  // a channel value <= this is saturated
};

// rgb: n tiles of h x w x 3 uint8, C-contiguous. out: n x kStatCount doubles.
void tile_stats(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, const StatsParams& params,
                double* out);

// Concentrations of npix pixels (npix x 3 floats), clamped at zero when clamp.
void concentrations(const uint8_t* rgb, int64_t npix, const float od_lut[256],
                    const float inv[3][3], bool clamp, float* out);

}  // namespace hsafast::stain
