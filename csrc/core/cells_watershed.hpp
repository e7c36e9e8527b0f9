// Nucleus size and shape from a seeded watershed, with the half-maximum cut
// taken from each nucleus's local background.
//
// The nuclear-stain map is flooded from the seeds in order of decreasing stain
// (4-connected, first come first served at equal priority, as scikit-image's
// watershed does). The flood covers only the pixels that can belong to a
// nucleus: above mask_min, and at or above the lowest half-maximum level of the
// seeds within `reach` of the pixel (every seed's level lies at least halfway
// from its background to its peak; no nucleus reaches further from its centre).
// A nucleus is the part of its basin at or above its own level,
//   background + 0.5 * (max(basin maximum, peak) - background),
// measured by its pixel count and second moments.
#pragma once

#include <cstdint>
#include <vector>

namespace hsafast::cells {

struct NucleusShape {
  double area = 0;   // pixels
  double width = 0;  // minor axis of the moment ellipse, pixels (4 sqrt(smaller eigenvalue))
  double fill = 0;   // area / area of the moment ellipse, at most 1
};

struct WatershedScratch {
  std::vector<int32_t> label;  // (h + 2) x (w + 2): -1 outside the flood, 0 not reached, seed + 1
  // The flood's priority queue (see FloodQueue): entries (pixel, stain, next in its
  // bucket) in push order, first and last entry of each bucket, non-empty buckets.
  std::vector<int32_t> pixel;
  std::vector<float> value;
  std::vector<int32_t> link, head, tail;
  std::vector<uint64_t> nonempty;
};

// stain: the map nuclei are measured on, h x w inside a (h + 2) x (w + 2) layout
// whose border is -inf (padded(x, y) = (y + 1) (w + 2) + x + 1); seeds: pixel index
// y w + x of each nucleus centre; peak and background: the detection map and its
// local background at each seed; reach: the farthest a nucleus extends from its
// centre, pixels; floor: h x w floats of scratch. Later seeds on the same pixel
// replace earlier ones (which then measure zero), as markers drawn in order would.
void measure_nuclei(const float* stain, int64_t h, int64_t w, const std::vector<int64_t>& seeds,
                    const std::vector<double>& peak, const std::vector<double>& background,
                    float mask_min, double reach, float* floor, WatershedScratch& scratch,
                    std::vector<NucleusShape>& out);

}  // namespace hsafast::cells
