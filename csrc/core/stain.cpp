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

// CMakeLists.txt compiles this file without AVX-512 (-mno-avx512f): with it,
// every compare of the eight-lane loop goes through a mask register and back,
// which costs more than it saves. The two-pixel loop (stats_row_avx512) is the
// one place written for AVX-512, chosen at run time.

namespace hsafast::stain {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

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

inline v8i broadcast_tissue(v8i m) {
#if defined(__clang__)
  return __builtin_shufflevector(m, m, 3, 3, 3, 3, 7, 7, 7, 7);
#else
  const v8i idx = {3, 3, 3, 3, 7, 7, 7, 7};
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
// except for the residual lane (-inf: no clamping).
inline v8f clamp_tissue(v8f s, v8f floor, v8i tissue) {
#if defined(__AVX__) && defined(__GNUC__) && !defined(__clang__)
  const v8f m = __builtin_ia32_maxps256(s, floor);  // a compare and blend otherwise
#else
  const v8f m = s > floor ? s : floor;
#endif
  return reinterpret_cast<v8f>(reinterpret_cast<v8i>(m) & tissue);
}

struct RowSums {
  v8i cnt = {0, 0, 0, 0, 0, 0, 0, 0};
  v8f sum[4] = {};  // one accumulator per pixel position modulo 4
};

inline void pixel(const uint8_t* q, const Tables& tab, v8f thr, v8f floor, v8i& cnt, v8f& sum) {
  const v8f s = tab.t[0][q[0]] + tab.t[1][q[1]] + tab.t[2][q[2]];
  const v8i m = s > thr;
  const v8i tissue = broadcast_tissue(m);
  cnt -= m & tissue;
  sum += clamp_tissue(s, floor, tissue);
}

// Pixels [x, w) of a row, one at a time into the first accumulator.
inline void row_tail(const uint8_t* px, int64_t x, int64_t w, const Tables& tab, v8f thr,
                     v8f floor, RowSums& r) {
  for (; x < w; ++x, px += 3) pixel(px, tab, thr, floor, r.cnt, r.sum[0]);
}

inline void add_row(const RowSums& r, double* acc) {
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

inline v8f sum_floor() {
  const float ninf = -std::numeric_limits<float>::infinity();
  return v8f{0, 0, 0, 0, 0, 0, ninf, 0};
}

// Accumulates one row of w pixels into acc (kStatCount doubles). Four pixels
// per step into four float accumulators: one accumulator would chain every
// pixel on the latency of a float addition.
inline void stats_row(const uint8_t* px, int64_t w, const Tables& tab, v8f thr, double* acc) {
  RowSums r;
  const v8f floor = sum_floor();
  int64_t x = 0;
  for (; x + 4 <= w; x += 4, px += 12) {
    pixel(px, tab, thr, floor, r.cnt, r.sum[0]);
    pixel(px + 3, tab, thr, floor, r.cnt, r.sum[1]);
    pixel(px + 6, tab, thr, floor, r.cnt, r.sum[2]);
    pixel(px + 9, tab, thr, floor, r.cnt, r.sum[3]);
  }
  row_tail(px, x, w, tab, thr, floor, r);
  add_row(r, acc);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HSAFAST_STAIN_AVX512 1
// The same row with two pixels per 512-bit register: the per-pixel tests
// (compare, tissue mask, count, clamp, sum) cost half the instructions, and
// AVX-512 compares with a mask fold the tissue test into the threshold test.
// Pixel positions 0-3 modulo 4 land in the same accumulators (low and high
// halves), so the sums are bit-identical to stats_row.
#define HSAFAST_AVX512 __attribute__((target("avx512f"), always_inline)) inline

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

__attribute__((target("avx512f"))) void stats_row_avx512(const uint8_t* px, int64_t w,
                                                         const Tables& tab, v8f thr8,
                                                         double* acc) {
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
  row_tail(px, x, w, tab, thr8, floor8, r);
  add_row(r, acc);
}
#endif

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
  auto row = stats_row;
#if defined(HSAFAST_STAIN_AVX512)
  if (__builtin_cpu_supports("avx512f")) row = stats_row_avx512;
#endif
  parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t tile = b / blocks_per_tile;
      const int64_t y0 = (b % blocks_per_tile) * rows_per_block;
      const int64_t y1 = std::min(h, y0 + rows_per_block);
      double* acc = partial.data() + b * kStatCount;
      const uint8_t* base = rgb + (tile * h) * w * 3;
      for (int64_t y = y0; y < y1; ++y) row(base + y * w * 3, w, t, thr, acc);
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
  // Per-channel tables of the three concentration contributions.
  std::vector<float> tab(3 * 256 * 4);
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v)
      for (int j = 0; j < 3; ++j) tab[(c * 256 + v) * 4 + j] = od_lut[v] * inv[c][j];
  const float* t = tab.data();
  parallel_for(npix, 16384, [&](int64_t begin, int64_t end) {
    const uint8_t* px = rgb + begin * 3;
    float* o = out + begin * 3;
    for (int64_t i = begin; i < end; ++i, px += 3, o += 3) {
      const float* a = t + (0 * 256 + px[0]) * 4;
      const float* b = t + (1 * 256 + px[1]) * 4;
      const float* c = t + (2 * 256 + px[2]) * 4;
      for (int j = 0; j < 3; ++j) {
        const float v = a[j] + b[j] + c[j];
        o[j] = clamp ? std::max(v, 0.0f) : v;
      }
    }
  });
}

}  // namespace hsafast::stain
