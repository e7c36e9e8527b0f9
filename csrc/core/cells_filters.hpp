// Image filters of cell detection: separable Gaussian blur, erosion with a disk,
// local-maximum candidates. Each is a few passes over whole rows, written so that
// the compiler vectorises the inner loop over x; cells_filters.cpp compiles them
// once for the baseline target and once for AVX2, chosen at run time.
//
// Borders follow OpenCV and SciPy, so that results match the Python reference:
// the blur reflects without repeating the edge pixel (OpenCV's default,
// BORDER_REFLECT_101), the erosion repeats it (BORDER_REFLECT); neighbourhoods of
// maxima are clipped to the image, which equals SciPy's "reflect" for a maximum.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hsafast::cells {

// Which compiled copy of the filters runs.
enum class Simd { kAuto, kBaseline, kAvx2 };

// Parses "auto", "baseline" or "avx2"; throws std::invalid_argument otherwise.
Simd parse_simd(const std::string& name);
// The copies this CPU can run ("baseline", and "avx2" where supported).
std::vector<std::string> simd_paths();
// The copy kAuto resolves to on this CPU.
Simd resolve_simd(Simd requested);

// Half-widths of the rows of OpenCV's elliptic structuring element of odd
// diameter d (cv::getStructuringElement(MORPH_ELLIPSE, {d, d})), for row offsets
// -d/2..d/2.
std::vector<int> disk_half_widths(int diameter);

// Normalised Gaussian kernel of OpenCV's GaussianBlur for float images
// (size round(8 sigma + 1) | 1), as k[0] (centre) .. k[r] (offset r).
std::vector<float> gaussian_half_kernel(double sigma);

// Scratch rows the filters need; sized on first use and reused.
struct FilterScratch {
  std::vector<float> pad;     // one padded row
  std::vector<float> levels;  // erosion: running minima of the last 2r + 1 rows
  std::vector<float> tables;  // erosion: minima of one row over 1, 2, 4, ... pixels
  std::vector<float> tmp;     // h x w intermediate of separable passes
  std::vector<const float*> taps;  // the rows (or row offsets) each output row reads
};

// dst = src blurred by the symmetric kernel half_kernel (k[0] centre); src is h x w,
// dst rows lie dst_stride floats apart (w, or more for a padded map).
void gaussian_blur(const float* src, int64_t h, int64_t w, const std::vector<float>& half_kernel,
                   float* dst, int64_t dst_stride, FilterScratch& scratch, Simd simd);

// dst = minimum of src over the disk given by its row half-widths (2r + 1 rows).
void erode_disk(const float* src, int64_t h, int64_t w, const std::vector<int>& half_widths,
                float* dst, FilterScratch& scratch, Simd simd);

// out (h x w bytes) = 1 where src exceeds min_value and is the largest of its 3 x 3
// neighbourhood clipped to the image (ties count as largest), else 0.
void peak_candidates(const float* src, int64_t h, int64_t w, float min_value, uint8_t* out,
                     FilterScratch& scratch, Simd simd);

// Border index maps: reflect (edge repeated) and reflect-101 (edge not repeated).
inline int64_t reflect(int64_t i, int64_t n) {
  if (i >= 0 && i < n) return i;
  while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - i - 1;
  return i;
}
inline int64_t reflect101(int64_t i, int64_t n) {
  if ((i >= 0 && i < n) || n == 1) return n == 1 ? 0 : i;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - i - 2;
  return i;
}

}  // namespace hsafast::cells
