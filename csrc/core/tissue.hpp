// Tissue detection and tile scoring on low-resolution slide images.
//
// Every step works on plain row-major buffers (RGB uint8 pixels, uint8 0/1 masks)
// so that each can be tested alone against a NumPy/OpenCV/SciPy/scikit-image
// reference; hsafast/tissue.py chains them.
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
// saturated at 255.
void od_map(const uint8_t* rgb, int64_t n_pixels, const std::array<uint8_t, 3>& background,
            uint8_t* out);

// Histogram of od_map over every `stride`-th pixel (for the automatic threshold);
// pixels where `skip` is non-zero are left out (skip may be null).
std::array<int64_t, 256> od_histogram(const uint8_t* rgb, int64_t n_pixels,
                                      const std::array<uint8_t, 3>& background,
                                      const uint8_t* skip, int64_t stride);

// od_map(...) > t as 0/1, straight from the RGB pixels.
void od_threshold(const uint8_t* rgb, int64_t n_pixels, const std::array<uint8_t, 3>& background,
                  int t, uint8_t* out);

// What a pixel is when it is not stain, from its optical density relative to the
// background (r, g, b: OD of each channel, quantised as od_map's; the ratio tests
// run on those integers):
//   BLACK  every channel >= black_od and the lightest within half of the densest
//          (neutral: black ink, dirt, the scanner's edge; dense DAB keeps red far
//          below blue, dense haematoxylin blue below green);
//   the colours no mix of haematoxylin, eosin and DAB takes (Ruifrok & Johnston's
//   vectors all absorb green at least as much as red, and none absorbs blue and
//   green together while passing red):
//   BLUE   r > g and b < 0.35 r (haematoxylin: b = 0.44 r),
//   GREEN  g < 0.9 min(r, b),
//   RED    r < 0.2 g and b > 0.75 g (eosin: b = 0.11 g, r = 0.07 g),
//   when the densest channel is >= ink_od (a pen stroke's body), or PALE when it
//   is between a third of that and ink_od (its spray and feathered edge).
enum Artefact : uint8_t {
  kStain = 0,
  kBlack = 1,
  kBlueInk = 2,
  kGreenInk = 3,
  kRedInk = 4,
  kPaleInk = 5
};
void artefact_map(const uint8_t* rgb, int64_t n_pixels, const std::array<uint8_t, 3>& background,
                  double black_od, double ink_od, uint8_t* out);

// The pixels to take out as artefacts (0/1): ink, the 8-connected regions of
// ink colours (pale included) that hold at least ink_min_area dense ink pixels
// with the ink-coloured pixels within `spray` of them, and black regions of at
// least ink_min_area pixels, all widened by a disk of radius `margin`. Returns
// how many pixels were found before widening.
int64_t artefact_mask(const uint8_t* rgb, int64_t h, int64_t w,
                      const std::array<uint8_t, 3>& background, double black_od, double ink_od,
                      int64_t ink_min_area, int spray, int margin, uint8_t* out);

// 256-bin histogram of a uint8 buffer.
std::array<int64_t, 256> histogram(const uint8_t* x, int64_t n);

// Otsu's threshold over a histogram whose bins sit at `centers` (ascending):
// the bin index k maximising the between-class variance of {<= k} and {> k}.
// Returns -1 when fewer than two bins are populated.
int otsu_index(const int64_t* hist, const double* centers, int n_bins);

// out = (x > t) as 0/1.
void threshold(const uint8_t* x, int64_t n, int t, uint8_t* out);

// Squared Euclidean distance from every pixel to the nearest pixel whose mask
// value is `target` (0 or non-zero), exact, in O(h w) (Felzenszwalb &
// Huttenlocher's lower envelope of parabolas). Pixels outside the image are
// never targets; with no target pixel at all every distance is INT32_MAX.
// Sides up to 30000 pixels (the squares fit in int32).
void squared_distance(const uint8_t* mask, int64_t h, int64_t w, bool target, int32_t* out);

// Binary dilation / erosion of a 0/1 mask with the disk x^2 + y^2 <= r^2.
// Outside the image counts as background for dilation and as foreground for
// erosion (so closing and opening never eat tissue that touches the border),
// which is what OpenCV's default border does. Two exact methods with equal
// results: kRows, a union/intersection over the disk's rows of 1-D operations
// of the row's half-width (O(r) per pixel), and kDistance, a threshold on
// squared_distance (cost independent of r); kAuto takes rows up to
// kRowsMaxRadius.
enum class MorphMethod { kAuto, kRows, kDistance };
constexpr int kRowsMaxRadius = 60;
void dilate_disk(const uint8_t* mask, int64_t h, int64_t w, int r, uint8_t* out,
                 MorphMethod method = MorphMethod::kAuto);
void erode_disk(const uint8_t* mask, int64_t h, int64_t w, int r, uint8_t* out,
                MorphMethod method = MorphMethod::kAuto);

// Connected components of the foreground (connectivity 4 or 8).
// Labels are 1..n in raster order of each component's first pixel (as
// scipy.ndimage.label numbers them); 0 is background.
struct Components {
  int64_t count = 0;
  std::vector<int64_t> area;          // area[label - 1]
  std::vector<uint8_t> touches_edge;  // touches_edge[label - 1]
  std::vector<int64_t> box;           // 4 per label: x0, y0, x1, y1 (exclusive ends)
};
Components label(const uint8_t* mask, int64_t h, int64_t w, int connectivity, int32_t* labels);

// Fill background regions (4-connected) that do not touch the image edge and
// whose area is at most max_area pixels (max_area < 0: fill every hole).
void fill_holes(const uint8_t* mask, int64_t h, int64_t w, int64_t max_area, uint8_t* out);

// Keep 8-connected components of at least min_area pixels and, when
// keep_largest > 0, only the keep_largest biggest of those (ties: earlier label).
// With thin_length > 0, components at least thin_length long (bounding box) and
// on average at most thin_width wide (area <= thin_width * (box width + box
// height): a line, or two meeting at a corner) are dropped first.
// Returns the number of components kept.
int64_t filter_components(const uint8_t* mask, int64_t h, int64_t w, int64_t min_area,
                          int64_t keep_largest, uint8_t* out, double thin_width = 0,
                          int64_t thin_length = 0);

// Coverslip and slide edges: pixels of straight runs, along rows or columns, at
// least `length` long, of set pixels that have mostly glass (at most a third of
// the pixels set; outside the image is glass) 2r+1 to 3r+2 pixels away on both
// sides across the run, so lines up to 2r+1 wide; the run may drift r pixels across (a line a few degrees off the axis).
// Tissue touching a line keeps its own pixels (they have tissue on one side).
// Scanners image slides along their edges, so coverslip edges run along the
// image's axes. With r >= 4 the search runs on blocks of r/2 x r/2 pixels (set
// if any pixel is; half-width ceil(r / block), length / block) and the line
// pixels are the mask's pixels in line blocks. Returns the number of line
// pixels (written to `out` as 0/1).
int64_t straight_lines(const uint8_t* mask, int64_t h, int64_t w, int r, int64_t length,
                       uint8_t* out);

// Summed-area table of a 0/1 mask: (h+1) x (w+1), ii[y][x] = sum(mask[:y, :x]).
void integral_image(const uint8_t* mask, int64_t h, int64_t w, int64_t* ii);

// Fraction of each box covered by the mask. Boxes are (x0, y0, x1, y1) in mask
// pixels with real-valued edges; pixels are unit squares, the parts of a box
// outside the mask count as background, and the fraction is exact (bilinear
// interpolation of the summed-area table is the exact area for fractional edges).
void box_fractions(const int64_t* ii, int64_t h, int64_t w, const double* boxes, int64_t n,
                   double* out);

}  // namespace tissue
}  // namespace hsafast
