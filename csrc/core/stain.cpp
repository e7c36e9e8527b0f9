#include "core/stain.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "core/parallel.hpp"

// CMakeLists.txt compiles this file without AVX-512 (-mno-avx512f): with it,
// every vector compare goes through a mask register and back, which costs more
// than it saves here.

namespace hsafast::stain {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

// Lanes of the per-channel tables: three copies of DAB (one per intensity
// threshold), hematoxylin, summed OD (tissue test), a saturation indicator and
// the third (residual) stain. Lanes 0-5 are compared with thresholds and
// counted; lanes 0, 3 (clamped at zero) and 6 (not clamped) are summed.
constexpr int kLaneTissue = 4;

struct alignas(32) Tables {
  v8f t[3][256];
};

inline v8i broadcast_tissue(v8i m) {
#if defined(__clang__)
  return __builtin_shufflevector(m, m, 4, 4, 4, 4, 4, 4, 4, 4);
#else
  const v8i idx = {kLaneTissue, kLaneTissue, kLaneTissue, kLaneTissue,
                   kLaneTissue, kLaneTissue, kLaneTissue, kLaneTissue};
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
      tab.t[c][v] = v8f{dab, dab, dab, hema, od, sat, resid, 0.0f};
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

// Accumulates one row of w pixels into acc (kStatCount doubles). Four pixels
// per step into four float accumulators: one accumulator would chain every
// pixel on the latency of a float addition.
inline void stats_row(const uint8_t* px, int64_t w, const Tables& tab, v8f thr, double* acc) {
  v8i cnt = {0, 0, 0, 0, 0, 0, 0, 0};
  v8f sum0 = {0, 0, 0, 0, 0, 0, 0, 0};
  v8f sum1 = sum0, sum2 = sum0, sum3 = sum0;
  int64_t x = 0;
  const float ninf = -std::numeric_limits<float>::infinity();
  const v8f floor = {0, 0, 0, 0, 0, 0, ninf, 0};
  auto pixel = [&](const uint8_t* q, v8f& sum) {
    const v8f s = tab.t[0][q[0]] + tab.t[1][q[1]] + tab.t[2][q[2]];
    const v8i m = s > thr;
    const v8i tissue = broadcast_tissue(m);
    cnt -= m & tissue;
    sum += clamp_tissue(s, floor, tissue);
  };
  for (; x + 4 <= w; x += 4, px += 12) {
    pixel(px, sum0);
    pixel(px + 3, sum1);
    pixel(px + 6, sum2);
    pixel(px + 9, sum3);
  }
  for (; x < w; ++x, px += 3) pixel(px, sum0);
  const v8f sum = (sum0 + sum1) + (sum2 + sum3);
  acc[kDab1] += cnt[0];
  acc[kDab2] += cnt[1];
  acc[kDab3] += cnt[2];
  acc[kHema] += cnt[3];
  acc[kTissue] += cnt[4];
  acc[kSaturated] += cnt[5];
  acc[kDabSum] += sum[0];
  acc[kHemaSum] += sum[3];
  acc[kResidualSum] += sum[6];
}

}  // namespace

void tile_stats(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, const StatsParams& params,
                double* out) {
  if (n <= 0) return;
  auto tab = std::make_unique<Tables>();
  build_tables(params, *tab);
  const float ninf = -std::numeric_limits<float>::infinity();
  const v8f thr = {params.dab_thresholds[0], params.dab_thresholds[1], params.dab_thresholds[2],
                   params.hema_threshold,     params.tissue_od,         0.5f,
                   ninf,                      ninf};
  // Blocks of rows (about 64k pixels) within a tile, each with its own partial
  // sums, so that one large tile or many small ones both spread over threads
  // and the reduction order (hence the result) does not depend on threads.
  const int64_t rows_per_block = std::max<int64_t>(1, 65536 / std::max<int64_t>(w, 1));
  const int64_t blocks_per_tile = (h + rows_per_block - 1) / rows_per_block;
  const int64_t blocks = n * blocks_per_tile;
  std::vector<double> partial(static_cast<size_t>(std::max<int64_t>(blocks, 1)) * kStatCount, 0.0);
  const Tables& t = *tab;
  parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t tile = b / blocks_per_tile;
      const int64_t y0 = (b % blocks_per_tile) * rows_per_block;
      const int64_t y1 = std::min(h, y0 + rows_per_block);
      double* acc = partial.data() + b * kStatCount;
      const uint8_t* base = rgb + (tile * h) * w * 3;
      for (int64_t y = y0; y < y1; ++y) stats_row(base + y * w * 3, w, t, thr, acc);
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
