// Tissue detection and tile scoring on low-resolution slide images.
//
// Every step works on plain row-major buffers (RGB uint8 pixels, uint8 0/1 masks)
// so that each can be tested alone against a NumPy/OpenCV/scikit-image reference,
// and tissue_mask() chains them for the common path without extra copies.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace hsafast {
namespace tissue {

// Relative optical density is quantised in steps of 1/OD_SCALE (0.01 OD).
constexpr double OD_SCALE = 100.0;

// Per-channel background (glass) intensity: the `percentile` of each channel's
// histogram, raised to at least `floor` so that a section covering the whole
// image does not become its own background.
// Pixels are sampled every `stride` (sample_stride(n) in the pipeline).
std::array<uint8_t, 3> estimate_background(const uint8_t* rgb, int64_t n_pixels, int64_t stride = 1,
                                           double percentile = 99.0, int floor = 200);

// Sampling stride that keeps about 65k pixels for the statistics.
int64_t sample_stride(int64_t n_pixels);

// Quantised optical density of the most absorbing channel, relative to the
// background: round(OD_SCALE * max_c max(0, log10((bg_c + 1) / (I_c + 1)))),
// saturated at 255. With exclude_artefacts, black pixels (every channel below
// black_level) and green ink (green above red and blue by green_margin) read 0.
void od_map(const uint8_t* rgb, int64_t n_pixels, const std::array<uint8_t, 3>& background,
            bool exclude_artefacts, int black_level, int green_margin, uint8_t* out);

// Histogram of od_map over every `stride`-th pixel (for the automatic threshold).
std::array<int64_t, 256> od_histogram(const uint8_t* rgb, int64_t n_pixels,
                                      const std::array<uint8_t, 3>& background,
                                      bool exclude_artefacts, int black_level, int green_margin,
                                      int64_t stride);

// od_map(...) > t as 0/1, straight from the RGB pixels.
void od_threshold(const uint8_t* rgb, int64_t n_pixels, const std::array<uint8_t, 3>& background,
                  int t, bool exclude_artefacts, int black_level, int green_margin, uint8_t* out);

// 256-bin histogram of a uint8 buffer.
std::array<int64_t, 256> histogram(const uint8_t* x, int64_t n);

// Otsu's threshold over a histogram whose bins sit at `centers` (ascending):
// the bin index k maximising the between-class variance of {<= k} and {> k}.
// Returns -1 when fewer than two bins are populated.
int otsu_index(const int64_t* hist, const double* centers, int n_bins);

// out = (x > t) as 0/1.
void threshold(const uint8_t* x, int64_t n, int t, uint8_t* out);

// Binary dilation / erosion of a 0/1 mask with the disk x^2 + y^2 <= r^2.
// Outside the image counts as background for dilation and as foreground for
// erosion (so closing and opening never eat tissue that touches the border),
// which is what OpenCV's default border does.
void dilate_disk(const uint8_t* mask, int64_t h, int64_t w, int r, uint8_t* out);
void erode_disk(const uint8_t* mask, int64_t h, int64_t w, int r, uint8_t* out);

// Connected components of the foreground (connectivity 4 or 8).
// Labels are 1..n in raster order of each component's first pixel (as
// scipy.ndimage.label numbers them); 0 is background.
struct Components {
  int64_t count = 0;
  std::vector<int64_t> area;          // area[label - 1]
  std::vector<uint8_t> touches_edge;  // touches_edge[label - 1]
};
Components label(const uint8_t* mask, int64_t h, int64_t w, int connectivity, int32_t* labels);

// Fill background regions (4-connected) that do not touch the image edge and
// whose area is at most max_area pixels (max_area < 0: fill every hole).
void fill_holes(const uint8_t* mask, int64_t h, int64_t w, int64_t max_area, uint8_t* out);

// Keep 8-connected components of at least min_area pixels and, when
// keep_largest > 0, only the keep_largest biggest of those (ties: earlier label).
// Returns the number of components kept.
int64_t filter_components(const uint8_t* mask, int64_t h, int64_t w, int64_t min_area,
                          int64_t keep_largest, uint8_t* out);

// Summed-area table of a 0/1 mask: (h+1) x (w+1), ii[y][x] = sum(mask[:y, :x]).
void integral_image(const uint8_t* mask, int64_t h, int64_t w, int64_t* ii);

// Fraction of each box covered by the mask. Boxes are (x0, y0, x1, y1) in mask
// pixels with real-valued edges; pixels are unit squares, the parts of a box
// outside the mask count as background, and the fraction is exact (bilinear
// interpolation of the summed-area table is the exact area for fractional edges).
void box_fractions(const int64_t* ii, int64_t h, int64_t w, const double* boxes, int64_t n,
                   double* out);

struct Params {
  int threshold = -1;  // fixed quantised threshold; < 0 for automatic
  int min_threshold = 3;
  int max_threshold = 6;
  bool exclude_artefacts = true;
  int black_level = 50;
  int green_margin = 20;
  int closing_radius = 3;
  int opening_radius = 1;
  int64_t max_hole_area = -1;  // pixels; < 0 fills every hole, 0 none
  int64_t min_area = 0;        // pixels
  int64_t keep_largest = 0;    // 0 keeps all
};

struct Result {
  std::array<uint8_t, 3> background{};
  int otsu = -1;       // Otsu's quantised threshold before clamping (-1: undefined)
  int threshold = 0;   // quantised threshold used: tissue where od > threshold
  int64_t components = 0;
};

// The whole chain: background, OD, threshold, closing, opening, hole filling,
// component filtering. `out` receives the 0/1 mask (h x w).
Result tissue_mask(const uint8_t* rgb, int64_t h, int64_t w, const Params& p, uint8_t* out);

}  // namespace tissue
}  // namespace hsafast
