#include "core/cells_filters.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

// CMakeLists.txt compiles this file with -ffp-contract=off: the AVX2 copy may not
// fuse a multiply and an add that the baseline copy rounds twice.

namespace hsafast::cells {

// Eight floats in one vector (GCC/Clang vector extension): one AVX register in
// the AVX2 copy, two SSE registers in the baseline one. Nothing here crosses a
// library boundary, so the ABI note GCC gives for 32-byte vectors in a build
// without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v8f __attribute__((vector_size(32)));

static inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

static inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); }

namespace baseline {
#include "core/cells_filters.inc"
}  // namespace baseline

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HSAFAST_CELLS_AVX2 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
namespace avx2 {
#include "core/cells_filters.inc"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

Simd parse_simd(const std::string& name) {
  if (name == "auto") return Simd::kAuto;
  if (name == "baseline") return Simd::kBaseline;
  if (name == "avx2") return Simd::kAvx2;
  throw std::invalid_argument("unknown SIMD path '" + name + "' (auto, baseline or avx2)");
}

static bool cpu_has_avx2() {
#if defined(HSAFAST_CELLS_AVX2)
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

std::vector<std::string> simd_paths() {
  std::vector<std::string> out{"baseline"};
  if (cpu_has_avx2()) out.emplace_back("avx2");
  return out;
}

Simd resolve_simd(Simd requested) {
  if (requested == Simd::kAuto) return cpu_has_avx2() ? Simd::kAvx2 : Simd::kBaseline;
  if (requested == Simd::kAvx2 && !cpu_has_avx2())
    throw std::invalid_argument("this CPU (or build) has no AVX2 path");
  return requested;
}

std::vector<int> disk_half_widths(int diameter) {
  // cv::getStructuringElement(MORPH_ELLIPSE): dx = saturate_cast<int>(c * sqrt((r^2 - dy^2) / r^2))
  const int r = diameter / 2;
  const int c = diameter / 2;
  const double inv_r2 = r ? 1.0 / (static_cast<double>(r) * r) : 0.0;
  std::vector<int> hw(static_cast<size_t>(2 * r + 1));
  for (int dy = -r; dy <= r; ++dy) {
    const int dx = static_cast<int>(std::lrint(c * std::sqrt((r * r - dy * dy) * inv_r2)));
    hw[static_cast<size_t>(dy + r)] = std::min(dx, c);
  }
  return hw;
}

std::vector<float> gaussian_half_kernel(double sigma) {
  // cv::GaussianBlur for float images: size cvRound(sigma * 4 * 2 + 1) | 1, weights
  // exp(-x^2 / (2 sigma^2)) computed in double, normalised, stored as float.
  const int n = static_cast<int>(std::lrint(sigma * 8 + 1)) | 1;
  const int r = n / 2;
  std::vector<double> full(static_cast<size_t>(n));
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    const double x = i - r;
    full[static_cast<size_t>(i)] = std::exp(-0.5 / (sigma * sigma) * x * x);
    sum += full[static_cast<size_t>(i)];
  }
  std::vector<float> half(static_cast<size_t>(r + 1));
  for (int i = 0; i <= r; ++i) half[static_cast<size_t>(i)] = static_cast<float>(full[r + i] / sum);
  return half;
}

void gaussian_blur(const float* src, int64_t h, int64_t w, const std::vector<float>& k, float* dst,
                   int64_t dst_stride, FilterScratch& s, Simd simd) {
  const int r = static_cast<int>(k.size()) - 1;
  s.tmp.resize(static_cast<size_t>(h * w));
  s.pad.resize(static_cast<size_t>(w + 2 * r));
  s.taps.resize(2 * static_cast<size_t>(r + 1));
  const float** a = s.taps.data();
  const float** b = a + r + 1;
#if defined(HSAFAST_CELLS_AVX2)
  if (resolve_simd(simd) == Simd::kAvx2)
    return avx2::gaussian_blur(src, h, w, k.data(), r, dst, dst_stride, s.tmp.data(),
                               s.pad.data(), a, b);
#endif
  (void)simd;
  baseline::gaussian_blur(src, h, w, k.data(), r, dst, dst_stride, s.tmp.data(), s.pad.data(), a,
                          b);
}

void erode_disk(const float* src, int64_t h, int64_t w, const std::vector<int>& hw, float* dst,
                FilterScratch& s, Simd simd) {
  const int r = static_cast<int>(hw.size()) / 2;
  const int kmax = *std::max_element(hw.begin(), hw.end());
  // One stored level per distinct half-width of the disk.
  std::vector<int> slot(static_cast<size_t>(kmax + 1), -1);
  int levels = 0;
  for (int k : hw)
    if (slot[static_cast<size_t>(k)] < 0) slot[static_cast<size_t>(k)] = levels++;
  s.pad.resize(static_cast<size_t>(w + 2 * kmax));
  s.levels.resize(static_cast<size_t>(2 * r + 1) * static_cast<size_t>(levels) *
                  static_cast<size_t>(w));
  s.taps.resize(static_cast<size_t>(2 * r + 1));
  int spans = 1;
  while ((int64_t{1} << spans) <= 2 * kmax + 1) ++spans;
  s.tables.resize(static_cast<size_t>(spans) * static_cast<size_t>(w + 2 * kmax));
#if defined(HSAFAST_CELLS_AVX2)
  if (resolve_simd(simd) == Simd::kAvx2)
    return avx2::erode_disk(src, h, w, hw.data(), r, kmax, slot.data(), levels, dst, s.pad.data(),
                            s.tables.data(), s.levels.data(), s.taps.data());
#endif
  (void)simd;
  baseline::erode_disk(src, h, w, hw.data(), r, kmax, slot.data(), levels, dst, s.pad.data(),
                       s.tables.data(), s.levels.data(), s.taps.data());
}

void peak_candidates(const float* src, int64_t h, int64_t w, float min_value, uint8_t* out,
                     FilterScratch& s, Simd simd) {
  s.pad.resize(static_cast<size_t>(3 * (w + 2)));
#if defined(HSAFAST_CELLS_AVX2)
  if (resolve_simd(simd) == Simd::kAvx2)
    return avx2::peak_candidates(src, h, w, min_value, out, s.pad.data());
#endif
  (void)simd;
  baseline::peak_candidates(src, h, w, min_value, out, s.pad.data());
}

}  // namespace hsafast::cells
