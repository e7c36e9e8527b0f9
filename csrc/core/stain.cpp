#include "core/stain.hpp"

#include <algorithm>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <limits>
#include <memory>
#include <vector>

#include "core/parallel.hpp"
#include "core/simd.hpp"

// The eight-lane row loop (stats_row) is compiled for the baseline and for AVX2
// (simd.hpp); the AVX-512 path is a loop of its own (stats_row_avx512, two pixels
// per register): compiled for AVX-512, the eight-lane loop would send every
// compare through a mask register and back, which costs more than it saves.

namespace hsafast::stain {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

// Lanes of the per-channel tables: three copies of DAB (one per intensity
// threshold), summed OD (tissue test), hematoxylin, a saturation indicator, the
// third (residual) stain and summed OD again. Lanes 0-5 are compared with
// thresholds and counted; lanes 0, 4 (clamped at zero) and 6 (not clamped) are
// summed. Summed OD sits in lane 3 and lane 7, one per 128-bit half, so that
// the tissue test reaches every lane through an in-lane shuffle (one cycle)
// rather than a cross-lane permute.
struct alignas(32) Tables {
  v8f t[3][256];
};

HSAFAST_SIMD_INLINE v8i broadcast_tissue(v8i m) {
#if defined(__clang__)
  return __builtin_shufflevector(m, m, 3, 3, 3, 3, 7, 7, 7, 7);
#else
  const v8i idx = {3, 3, 3, 3, 7, 7, 7, 7};
  return __builtin_shuffle(m, idx);
#endif
}

HSAFAST_SIMD_INLINE v4i broadcast_tissue(v4i m) {
#if defined(__clang__)
  return __builtin_shufflevector(m, m, 3, 3, 3, 3);
#else
  const v4i idx = {3, 3, 3, 3};
  return __builtin_shuffle(m, idx);
#endif
}

void build_tables(const StatsParams& p, Tables& tab) {
  const int third = 3 - p.dab - p.hema;
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      const float od = p.od_lut[v];
      const float dab = od * p.inv[c][p.dab];
      const float hema = od * p.inv[c][p.hema];
      const float sat = v <= p.saturation_level ? 1.0f : 0.0f;
      const float resid = od * p.inv[c][third];
      tab.t[c][v] = v8f{dab, dab, dab, od, hema, sat, resid, od};
    }
  }
}

// max(s, floor) on tissue pixels, zero elsewhere; the floor is zero (clamping)
// except for the residual lane (-inf: no clamping). `s > floor ? s : floor` is
// exactly x86's maxps, which the compiler emits.
template <typename VF, typename VI>
HSAFAST_SIMD_INLINE VF clamp_tissue(VF s, VF floor, VI tissue) {
  const VF m = s > floor ? s : floor;
  return reinterpret_cast<VF>(reinterpret_cast<VI>(m) & tissue);
}

// One pixel's lanes: threshold tests counted on tissue, clamped sums.
template <typename VF, typename VI>
HSAFAST_SIMD_INLINE void pixel_lanes(VF s, VF thr, VF floor, VI& cnt, VF& sum) {
  const VI m = s > thr;
  const VI tissue = broadcast_tissue(m);
  cnt -= m & tissue;
  sum += clamp_tissue(s, floor, tissue);
}

struct RowSums {
  v8i cnt = {0, 0, 0, 0, 0, 0, 0, 0};
  v8f sum[4] = {};  // one accumulator per pixel position modulo 4
};

// kHalves: the baseline path, whose 128-bit registers would take 8-lane compares and
// selects one lane at a time; each 128-bit half holds its own copy of summed OD, so
// the halves are tested apart with the same steps.
template <bool kHalves>
HSAFAST_SIMD_INLINE void pixel(const uint8_t* q, const Tables& tab, v8f thr, v8f floor, v8i& cnt,
                               v8f& sum) {
  const v8f s = tab.t[0][q[0]] + tab.t[1][q[1]] + tab.t[2][q[2]];
  if constexpr (kHalves) {
    v4f sh[2], th[2], fh[2], uh[2];
    v4i ch[2];
    std::memcpy(sh, &s, sizeof s);
    std::memcpy(th, &thr, sizeof thr);
    std::memcpy(fh, &floor, sizeof floor);
    std::memcpy(uh, &sum, sizeof sum);
    std::memcpy(ch, &cnt, sizeof cnt);
    pixel_lanes(sh[0], th[0], fh[0], ch[0], uh[0]);
    pixel_lanes(sh[1], th[1], fh[1], ch[1], uh[1]);
    std::memcpy(&sum, uh, sizeof sum);
    std::memcpy(&cnt, ch, sizeof cnt);
  } else {
    pixel_lanes(s, thr, floor, cnt, sum);
  }
}

// Pixels [x, w) of a row, one at a time into the first accumulator.
template <bool kHalves>
HSAFAST_SIMD_INLINE void row_tail(const uint8_t* px, int64_t x, int64_t w, const Tables& tab,
                                  v8f thr, v8f floor, RowSums& r) {
  for (; x < w; ++x, px += 3) pixel<kHalves>(px, tab, thr, floor, r.cnt, r.sum[0]);
}

HSAFAST_SIMD_INLINE void add_row(const RowSums& r, double* acc) {
  const v8f sum = (r.sum[0] + r.sum[1]) + (r.sum[2] + r.sum[3]);
  acc[kDab1] += r.cnt[0];
  acc[kDab2] += r.cnt[1];
  acc[kDab3] += r.cnt[2];
  acc[kTissue] += r.cnt[3];
  acc[kHema] += r.cnt[4];
  acc[kSaturated] += r.cnt[5];
  acc[kDabSum] += sum[0];
  acc[kHemaSum] += sum[4];
  acc[kResidualSum] += sum[6];
}

HSAFAST_SIMD_INLINE v8f sum_floor() {
  const float ninf = -std::numeric_limits<float>::infinity();
  return v8f{0, 0, 0, 0, 0, 0, ninf, 0};
}

// Accumulates one row of w pixels into acc (kStatCount doubles). Four pixels
// per step into four float accumulators: one accumulator would chain every
// pixel on the latency of a float addition.
template <bool kHalves>
HSAFAST_SIMD_INLINE void stats_row(const uint8_t* px, int64_t w, const Tables& tab,
                                   const v8f& thr, double* acc) {
  RowSums r;
  const v8f floor = sum_floor();
  int64_t x = 0;
  for (; x + 4 <= w; x += 4, px += 12) {
    pixel<kHalves>(px, tab, thr, floor, r.cnt, r.sum[0]);
    pixel<kHalves>(px + 3, tab, thr, floor, r.cnt, r.sum[1]);
    pixel<kHalves>(px + 6, tab, thr, floor, r.cnt, r.sum[2]);
    pixel<kHalves>(px + 9, tab, thr, floor, r.cnt, r.sum[3]);
  }
  row_tail<kHalves>(px, x, w, tab, thr, floor, r);
  add_row(r, acc);
}

#if defined(HSAFAST_SIMD_X86)
// The same row with two pixels per 512-bit register: the per-pixel tests
// (compare, tissue mask, count, clamp, sum) cost half the instructions, and
// AVX-512 compares with a mask fold the tissue test into the threshold test.
// Pixel positions 0-3 modulo 4 land in the same accumulators (low and high
// halves), so the sums are bit-identical to stats_row.
#define HSAFAST_AVX512 HSAFAST_TARGET_AVX512 HSAFAST_SIMD_INLINE

HSAFAST_AVX512 __m512 join(v8f a, v8f b) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(reinterpret_cast<__m256d>(a)),
                                             reinterpret_cast<__m256d>(b), 1));
}

// Table sums of two consecutive pixels, q and q + 3.
HSAFAST_AVX512 __m512 two_pixels(const uint8_t* q, const Tables& tab) {
  return join(tab.t[0][q[0]] + tab.t[1][q[1]] + tab.t[2][q[2]],
              tab.t[0][q[3]] + tab.t[1][q[4]] + tab.t[2][q[5]]);
}

HSAFAST_AVX512 void step(__m512 s, __m512 thr, __m512 floor, __m512 tissue_od, __m512i one,
                         __m512i& cnt, __m512& sum) {
  // Summed OD sits in lanes 3 and 7 of each pixel: an in-lane shuffle spreads
  // it over its 128-bit group, compared there with the tissue threshold.
  const __mmask16 tissue = _mm512_cmp_ps_mask(_mm512_permute_ps(s, 0xFF), tissue_od, _CMP_GT_OQ);
  const __mmask16 hit = _mm512_mask_cmp_ps_mask(tissue, s, thr, _CMP_GT_OQ);
#if defined(__clang__)
  cnt = _mm512_mask_add_epi32(cnt, hit, cnt, one);
#else
  // GCC 12 copies the accumulator around the intrinsic's merge masking (two
  // extra moves per step); written out it is one instruction.
  asm("vpaddd %2, %0, %0%{%1%}" : "+v"(cnt) : "Yk"(hit), "v"(one));
#endif
  sum = _mm512_mask_add_ps(sum, tissue, sum, _mm512_max_ps(s, floor));
}

HSAFAST_AVX512 void stats_row_avx512(const uint8_t* px, int64_t w, const Tables& tab,
                                     const v8f& thr8, double* acc) {
  const v8f floor8 = sum_floor();
  const __m512 thr = join(thr8, thr8);
  const __m512 floor = join(floor8, floor8);
  const __m512 tissue_od = _mm512_permute_ps(thr, 0xFF);
  const __m512i one = _mm512_set1_epi32(1);
  __m512i cnt01 = _mm512_setzero_si512(), cnt23 = _mm512_setzero_si512();
  __m512 sum01 = _mm512_setzero_ps(), sum23 = _mm512_setzero_ps();
  int64_t x = 0;
  for (; x + 4 <= w; x += 4, px += 12) {
    step(two_pixels(px, tab), thr, floor, tissue_od, one, cnt01, sum01);
    step(two_pixels(px + 6, tab), thr, floor, tissue_od, one, cnt23, sum23);
  }
  RowSums r;
  const __m512i cnt = _mm512_add_epi32(cnt01, cnt23);
  r.cnt = reinterpret_cast<v8i>(_mm512_castsi512_si256(cnt)) +
          reinterpret_cast<v8i>(_mm512_extracti64x4_epi64(cnt, 1));
  r.sum[0] = reinterpret_cast<v8f>(_mm512_castps512_ps256(sum01));
  r.sum[1] = reinterpret_cast<v8f>(_mm512_extractf64x4_pd(_mm512_castps_pd(sum01), 1));
  r.sum[2] = reinterpret_cast<v8f>(_mm512_castps512_ps256(sum23));
  r.sum[3] = reinterpret_cast<v8f>(_mm512_extractf64x4_pd(_mm512_castps_pd(sum23), 1));
  row_tail<false>(px, x, w, tab, thr8, floor8, r);
  add_row(r, acc);
}
#endif

// Rows [y0, y1) of one tile (base: its first pixel) into acc, one function per SIMD
// path. thr is passed by pointer: baseline and AVX code pass vectors differently.
void stats_rows_scalar(const uint8_t* base, int64_t y0, int64_t y1, int64_t w, const Tables& tab,
                       const v8f* thr, double* acc) {
  for (int64_t y = y0; y < y1; ++y) stats_row<true>(base + y * w * 3, w, tab, *thr, acc);
}

HSAFAST_TARGET_AVX2 void stats_rows_avx2(const uint8_t* base, int64_t y0, int64_t y1, int64_t w,
                                         const Tables& tab, const v8f* thr, double* acc) {
  for (int64_t y = y0; y < y1; ++y) stats_row<false>(base + y * w * 3, w, tab, *thr, acc);
}

HSAFAST_TARGET_AVX512 void stats_rows_avx512(const uint8_t* base, int64_t y0, int64_t y1,
                                             int64_t w, const Tables& tab, const v8f* thr,
                                             double* acc) {
#if defined(HSAFAST_SIMD_X86)
  for (int64_t y = y0; y < y1; ++y) stats_row_avx512(base + y * w * 3, w, tab, *thr, acc);
#else
  stats_rows_scalar(base, y0, y1, w, tab, thr, acc);
#endif
}

}  // namespace

void tile_stats(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, const StatsParams& params,
                double* out) {
  if (n <= 0) return;
  auto tab = std::make_unique<Tables>();
  build_tables(params, *tab);
  const float ninf = -std::numeric_limits<float>::infinity();
  const v8f thr = {params.dab_thresholds[0], params.dab_thresholds[1], params.dab_thresholds[2],
                   params.tissue_od,          params.hema_threshold,    0.5f,
                   ninf,                      params.tissue_od};
  // Blocks of rows (about 64k pixels) within a tile, each with its own partial
  // sums, so that one large tile or many small ones both spread over threads
  // and the reduction order (hence the result) does not depend on threads.
  const int64_t rows_per_block = std::max<int64_t>(1, 65536 / std::max<int64_t>(w, 1));
  const int64_t blocks_per_tile = (h + rows_per_block - 1) / rows_per_block;
  const int64_t blocks = n * blocks_per_tile;
  std::vector<double> partial(static_cast<size_t>(std::max<int64_t>(blocks, 1)) * kStatCount, 0.0);
  const Tables& t = *tab;
  const auto rows = simd::select(stats_rows_scalar, stats_rows_avx2, stats_rows_avx512);
  parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t tile = b / blocks_per_tile;
      const int64_t y0 = (b % blocks_per_tile) * rows_per_block;
      const int64_t y1 = std::min(h, y0 + rows_per_block);
      double* acc = partial.data() + b * kStatCount;
      const uint8_t* base = rgb + (tile * h) * w * 3;
      rows(base, y0, y1, w, t, &thr, acc);
    }
  });
  std::fill(out, out + n * kStatCount, 0.0);
  for (int64_t b = 0; b < blocks; ++b) {
    double* dst = out + (b / blocks_per_tile) * kStatCount;
    const double* src = partial.data() + b * kStatCount;
    for (int k = 0; k < kStatCount; ++k) dst[k] += src[k];
  }
}

void concentrations(const uint8_t* rgb, int64_t npix, const float od_lut[256],
                    const float inv[3][3], bool clamp, float* out) {
  // Per-channel tables of the three concentration contributions, one 4-float vector
  // per intensity (the fourth lane unused), so that a pixel is two vector additions.
  std::vector<v4f> tab(3 * 256);
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v)
      for (int j = 0; j < 4; ++j) tab[c * 256 + v][j] = j < 3 ? od_lut[v] * inv[c][j] : 0.0f;
  const v4f* t = tab.data();
  const float lowest = clamp ? 0.0f : -std::numeric_limits<float>::infinity();
  const v4f floor = {lowest, lowest, lowest, lowest};
  simd::parallel_for(npix, 16384, [&](int64_t begin, int64_t end) HSAFAST_SIMD_LAMBDA {
    const uint8_t* px = rgb + begin * 3;
    float* o = out + begin * 3;
    for (int64_t i = begin; i < end; ++i, px += 3, o += 3) {
      v4f v = t[px[0]] + t[256 + px[1]] + t[512 + px[2]];
      v = v > floor ? v : floor;
      std::memcpy(o, &v, 3 * sizeof(float));
    }
  });
}

}  // namespace hsafast::stain
