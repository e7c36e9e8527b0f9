#include "core/tissue.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "core/parallel.hpp"
#include "core/simd.hpp"

namespace hsafast {
namespace tissue {

namespace {

// Rows per parallel chunk so that each chunk holds at least ~64k pixels.
int64_t row_grain(int64_t w) { return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(w, 1)); }

constexpr int64_t kPixelGrain = int64_t{1} << 16;

// Pixels sampled for the background and OD histograms: a 99th percentile and a
// 256-bin histogram are settled by 65k pixels.
constexpr int64_t kSampleTarget = int64_t{1} << 16;

// A horizontal run [x0, x1) of equal pixels in one row.
struct Run {
  int64_t x0;
  int64_t x1;
};

// Runs of pixels equal to `value`, row by row, flattened with row offsets.
struct RunTable {
  std::vector<Run> runs;
  std::vector<int64_t> row_start;  // h + 1 entries
};

// First index >= x where m differs from v (0/1 masks), eight bytes at a time
// through long runs.
inline int64_t skip_equal(const uint8_t* m, int64_t x, int64_t w, uint8_t v) {
  const uint64_t pattern = v ? 0x0101010101010101ULL : 0;
  while (x + 8 <= w) {
    uint64_t word;
    std::memcpy(&word, m + x, 8);
    if (word != pattern) break;
    x += 8;
  }
  while (x < w && (m[x] != 0) == (v != 0)) ++x;
  return x;
}

// Runs of `value` in a 0/1 mask: counted per row, then written in place, so
// that no per-row containers are allocated.
RunTable find_runs(const uint8_t* mask, int64_t h, int64_t w, uint8_t value) {
  const uint8_t other = value ? 0 : 1;
  RunTable table;
  table.row_start.assign(static_cast<size_t>(h) + 1, 0);
  parallel_for(h, row_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const uint8_t* m = mask + y * w;
      int64_t count = 0;
      int64_t x = 0;
      while (x < w) {
        x = skip_equal(m, x, w, other);
        if (x >= w) break;
        x = skip_equal(m, x, w, value);
        ++count;
      }
      table.row_start[static_cast<size_t>(y) + 1] = count;
    }
  });
  for (int64_t y = 0; y < h; ++y)
    table.row_start[static_cast<size_t>(y) + 1] += table.row_start[static_cast<size_t>(y)];
  table.runs.resize(static_cast<size_t>(table.row_start[static_cast<size_t>(h)]));
  parallel_for(h, row_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const uint8_t* m = mask + y * w;
      Run* out = table.runs.data() + table.row_start[static_cast<size_t>(y)];
      int64_t x = 0;
      while (x < w) {
        x = skip_equal(m, x, w, other);
        if (x >= w) break;
        const int64_t start = x;
        x = skip_equal(m, x, w, value);
        *out++ = {start, x};
      }
    }
  });
  return table;
}

int64_t find_root(std::vector<int64_t>& parent, int64_t i) {
  int64_t root = i;
  while (parent[static_cast<size_t>(root)] != root) root = parent[static_cast<size_t>(root)];
  while (parent[static_cast<size_t>(i)] != root) {
    const int64_t next = parent[static_cast<size_t>(i)];
    parent[static_cast<size_t>(i)] = root;
    i = next;
  }
  return root;
}

void unite(std::vector<int64_t>& parent, int64_t a, int64_t b) {
  a = find_root(parent, a);
  b = find_root(parent, b);
  if (a == b) return;
  // The earlier run (raster order) stays the root, so that a component's root
  // is its first run and labels come out in raster order.
  if (a < b)
    parent[static_cast<size_t>(b)] = a;
  else
    parent[static_cast<size_t>(a)] = b;
}

// Components of a run table: per-run label (1-based) plus per-label stats.
struct RunLabels {
  std::vector<int32_t> run_label;
  Components comps;
};

RunLabels label_runs(const RunTable& t, int64_t h, int64_t w, int connectivity) {
  const int64_t n = static_cast<int64_t>(t.runs.size());
  std::vector<int64_t> parent(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) parent[static_cast<size_t>(i)] = i;
  // Runs [a0, a1) and [b0, b1) in adjacent rows touch when they overlap
  // (4-connectivity) or overlap after widening by one pixel (8-connectivity).
  const int64_t reach = connectivity == 8 ? 1 : 0;
  for (int64_t y = 1; y < h; ++y) {
    int64_t i = t.row_start[static_cast<size_t>(y - 1)];
    const int64_t ie = t.row_start[static_cast<size_t>(y)];
    int64_t j = ie;
    const int64_t je = t.row_start[static_cast<size_t>(y + 1)];
    while (i < ie && j < je) {
      const Run& p = t.runs[static_cast<size_t>(i)];
      const Run& c = t.runs[static_cast<size_t>(j)];
      if (p.x0 < c.x1 + reach && c.x0 < p.x1 + reach) unite(parent, i, j);
      if (p.x1 < c.x1) {
        ++i;
      } else if (c.x1 < p.x1) {
        ++j;
      } else {
        ++i;
        ++j;
      }
    }
  }
  RunLabels out;
  out.run_label.assign(static_cast<size_t>(n), 0);
  std::vector<int32_t> root_label(static_cast<size_t>(n), 0);
  int32_t next = 0;
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t r = t.row_start[static_cast<size_t>(y)]; r < t.row_start[static_cast<size_t>(y + 1)];
         ++r) {
      const int64_t root = find_root(parent, r);
      int32_t& lab = root_label[static_cast<size_t>(root)];
      if (lab == 0) {
        lab = ++next;
        out.comps.area.push_back(0);
        out.comps.touches_edge.push_back(0);
        out.comps.box.insert(out.comps.box.end(), {w, y, 0, y + 1});
      }
      out.run_label[static_cast<size_t>(r)] = lab;
      const Run& run = t.runs[static_cast<size_t>(r)];
      out.comps.area[static_cast<size_t>(lab - 1)] += run.x1 - run.x0;
      int64_t* box = out.comps.box.data() + 4 * (lab - 1);
      box[0] = std::min(box[0], run.x0);
      box[2] = std::max(box[2], run.x1);
      box[3] = y + 1;
      if (y == 0 || y == h - 1 || run.x0 == 0 || run.x1 == w)
        out.comps.touches_edge[static_cast<size_t>(lab - 1)] = 1;
    }
  }
  out.comps.count = next;
  return out;
}

void check_connectivity(int connectivity) {
  if (connectivity != 4 && connectivity != 8)
    throw std::invalid_argument("connectivity must be 4 or 8");
}

}  // namespace

int64_t sample_stride(int64_t n_pixels) {
  return std::max<int64_t>(1, n_pixels / kSampleTarget);
}

std::array<uint8_t, 3> estimate_background(const uint8_t* rgb, int64_t n_pixels, int64_t stride,
                                           double percentile, int floor) {
  stride = std::max<int64_t>(1, stride);
  std::array<std::array<int64_t, 256>, 3> hist{};
  for (auto& c : hist) c.fill(0);
  int64_t count = 0;
  for (int64_t i = 0; i < n_pixels; i += stride, ++count) {
    ++hist[0][rgb[3 * i]];
    ++hist[1][rgb[3 * i + 1]];
    ++hist[2][rgb[3 * i + 2]];
  }
  std::array<uint8_t, 3> bg{};
  // Smallest value whose cumulative count reaches the percentile (NumPy's
  // "inverted_cdf" percentile).
  const double target = std::max(1.0, std::ceil(percentile / 100.0 * static_cast<double>(count)));
  for (int c = 0; c < 3; ++c) {
    int64_t cum = 0;
    int value = 255;
    for (int v = 0; v < 256; ++v) {
      cum += hist[c][v];
      if (static_cast<double>(cum) >= target) {
        value = v;
        break;
      }
    }
    bg[c] = static_cast<uint8_t>(std::max(value, std::min(floor, 255)));
  }
  return bg;
}

namespace {

struct OdLut {
  uint8_t q[3][256];
};

OdLut make_lut(const std::array<uint8_t, 3>& background) {
  OdLut lut{};
  for (int c = 0; c < 3; ++c) {
    const double ref = std::log10(static_cast<double>(background[c]) + 1.0);
    for (int v = 0; v < 256; ++v) {
      const double od = std::max(0.0, ref - std::log10(static_cast<double>(v) + 1.0));
      lut.q[c][v] = static_cast<uint8_t>(std::min(255.0, std::nearbyint(OD_SCALE * od)));
    }
  }
  return lut;
}

// Unquantised OD of each channel relative to the background.
struct OdTable {
  float od[3][256];
};

OdTable make_od_table(const std::array<uint8_t, 3>& background) {
  OdTable t{};
  for (int c = 0; c < 3; ++c) {
    const double ref = std::log10(static_cast<double>(background[c]) + 1.0);
    for (int v = 0; v < 256; ++v)
      t.od[c][v] = static_cast<float>(std::max(0.0, ref - std::log10(static_cast<double>(v) + 1.0)));
  }
  return t;
}

}  // namespace

void od_map(const uint8_t* rgb, int64_t n_pixels, const std::array<uint8_t, 3>& background,
            uint8_t* out) {
  const OdLut lut = make_lut(background);
  parallel_for(n_pixels, kPixelGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      out[i] = std::max(lut.q[0][rgb[3 * i]], std::max(lut.q[1][rgb[3 * i + 1]], lut.q[2][rgb[3 * i + 2]]));
  });
}

std::array<int64_t, 256> od_histogram(const uint8_t* rgb, int64_t n_pixels,
                                      const std::array<uint8_t, 3>& background,
                                      const uint8_t* skip, int64_t stride) {
  stride = std::max<int64_t>(1, stride);
  const OdLut lut = make_lut(background);
  std::array<int64_t, 256> hist{};
  hist.fill(0);
  for (int64_t i = 0; i < n_pixels; i += stride) {
    if (skip && skip[i]) continue;
    ++hist[std::max(lut.q[0][rgb[3 * i]], std::max(lut.q[1][rgb[3 * i + 1]], lut.q[2][rgb[3 * i + 2]]))];
  }
  return hist;
}

void od_threshold(const uint8_t* rgb, int64_t n_pixels, const std::array<uint8_t, 3>& background,
                  int t, uint8_t* out) {
  // The LUT falls as intensity rises, so "OD of channel c > t" is "I_c < cut_c":
  // three integer compares per pixel instead of three table look-ups.
  const OdLut lut = make_lut(background);
  int cut[3];
  for (int c = 0; c < 3; ++c) {
    cut[c] = 256;
    for (int v = 0; v < 256; ++v)
      if (static_cast<int>(lut.q[c][v]) <= t) {
        cut[c] = v;
        break;
      }
  }
  const int c0 = cut[0], c1 = cut[1], c2 = cut[2];
  simd::parallel_for(n_pixels, kPixelGrain, [=](int64_t b, int64_t e) HSAFAST_SIMD_LAMBDA {
    const uint8_t* __restrict px = rgb + 3 * b;
    uint8_t* __restrict o = out + b;
    const int64_t n = e - b;
    for (int64_t i = 0; i < n; ++i)
      o[i] = static_cast<uint8_t>((px[3 * i] < c0) | (px[3 * i + 1] < c1) | (px[3 * i + 2] < c2));
  });
}

void artefact_map(const uint8_t* rgb, int64_t n_pixels, const std::array<uint8_t, 3>& background,
                  double black_od, double ink_od, uint8_t* out) {
  // On the quantised OD (0.01 steps, as od_map), in integers: ratios become
  // cross-multiplications.
  const OdLut lut = make_lut(background);
  const int black = static_cast<int>(std::ceil(black_od * OD_SCALE - 1e-9));
  const int ink = static_cast<int>(std::ceil(ink_od * OD_SCALE - 1e-9));
  const int pale = (ink + 2) / 3;
  // A pixel can be an artefact only if some channel reaches the lowest of the
  // ODs; the table falls with intensity, so that is "I_c <= last_c": integer
  // compares reject the pale majority before any ratio is taken.
  const int least = std::min(black, pale);
  int last[3];
  for (int c = 0; c < 3; ++c) {
    last[c] = -1;
    for (int v = 0; v < 256 && lut.q[c][v] >= least; ++v) last[c] = v;
  }
  parallel_for(n_pixels, kPixelGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const uint8_t* p = rgb + 3 * i;
      if (p[0] > last[0] && p[1] > last[1] && p[2] > last[2]) {
        out[i] = kStain;
        continue;
      }
      const int r = lut.q[0][p[0]], g = lut.q[1][p[1]], bl = lut.q[2][p[2]];
      const int lo = std::min(r, std::min(g, bl)), hi = std::max(r, std::max(g, bl));
      uint8_t code = kStain;
      if (lo >= black && 2 * lo >= hi) {
        code = kBlack;
      } else if (hi >= pale) {
        if (r > g && 100 * bl < 35 * r)
          code = kBlueInk;
        else if (10 * g < 9 * std::min(r, bl))
          code = kGreenInk;
        else if (5 * r < g && 4 * bl > 3 * g)
          code = kRedInk;
        if (code != kStain && hi < ink) code = kPaleInk;
      }
      out[i] = code;
    }
  });
}

int64_t artefact_mask(const uint8_t* rgb, int64_t h, int64_t w,
                      const std::array<uint8_t, 3>& background, double black_od, double ink_od,
                      int64_t ink_min_area, int spray, int margin, uint8_t* out) {
  const int64_t n = h * w;
  const auto un = static_cast<size_t>(n);
  std::vector<uint8_t> codes(un), found(un);
  artefact_map(rgb, n, background, black_od, ink_od, codes.data());
  // ink: ink-coloured regions (pale spray and edges included) holding at least
  // ink_min_area dense pixels, and the ink-coloured pixels within `spray` of them
  // (on runs of ink-coloured pixels: no label image)
  for (size_t i = 0; i < un; ++i) found[i] = codes[i] >= kBlueInk;
  const RunTable t = find_runs(found.data(), h, w, 1);
  const RunLabels rl = label_runs(t, h, w, 8);
  std::vector<int64_t> dense(static_cast<size_t>(rl.comps.count) + 1, 0);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t k = t.row_start[static_cast<size_t>(y)]; k < t.row_start[static_cast<size_t>(y + 1)]; ++k) {
      const Run& run = t.runs[static_cast<size_t>(k)];
      int64_t& d = dense[static_cast<size_t>(rl.run_label[static_cast<size_t>(k)])];
      for (int64_t x = run.x0; x < run.x1; ++x) d += codes[static_cast<size_t>(y * w + x)] <= kRedInk;
    }
  std::fill(found.begin(), found.end(), uint8_t{0});
  int64_t strokes = 0;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t k = t.row_start[static_cast<size_t>(y)]; k < t.row_start[static_cast<size_t>(y + 1)]; ++k)
      if (dense[static_cast<size_t>(rl.run_label[static_cast<size_t>(k)])] >= ink_min_area) {
        const Run& run = t.runs[static_cast<size_t>(k)];
        std::fill(found.begin() + y * w + run.x0, found.begin() + y * w + run.x1, uint8_t{1});
        strokes += run.x1 - run.x0;
      }
  if (strokes && spray > 0) {
    std::vector<uint8_t> near(un);
    dilate_disk(found.data(), h, w, spray, near.data());
    for (size_t i = 0; i < un; ++i) found[i] = static_cast<uint8_t>(found[i] | (near[i] & (codes[i] >= kBlueInk)));
  }
  // black: regions of at least ink_min_area pixels (single dark pixels in dense
  // tissue are not dirt)
  std::vector<uint8_t> black(un);
  for (size_t i = 0; i < un; ++i) black[i] = codes[i] == kBlack;
  filter_components(black.data(), h, w, ink_min_area, 0, black.data());
  int64_t count = 0;
  for (size_t i = 0; i < un; ++i) {
    found[i] = static_cast<uint8_t>(found[i] | black[i]);
    count += found[i];
  }
  dilate_disk(found.data(), h, w, count ? margin : 0, out);
  return count;
}

std::array<int64_t, 256> histogram(const uint8_t* x, int64_t n) {
  const int workers = std::max(1, get_num_threads());
  std::vector<std::array<int64_t, 256>> partial(static_cast<size_t>(workers));
  for (auto& p : partial) p.fill(0);
  const int64_t chunk = (n + workers - 1) / workers;
  parallel_for(workers, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t wk = w0; wk < w1; ++wk) {
      auto& ph = partial[static_cast<size_t>(wk)];
      const int64_t b = wk * chunk;
      const int64_t e = std::min(n, b + chunk);
      for (int64_t i = b; i < e; ++i) ++ph[x[i]];
    }
  });
  std::array<int64_t, 256> hist{};
  for (const auto& p : partial)
    for (int v = 0; v < 256; ++v) hist[v] += p[v];
  return hist;
}

int otsu_index(const int64_t* hist, const double* centers, int n_bins) {
  double total = 0, total_sum = 0;
  int populated = 0;
  for (int i = 0; i < n_bins; ++i) {
    total += static_cast<double>(hist[i]);
    total_sum += static_cast<double>(hist[i]) * centers[i];
    populated += hist[i] > 0;
  }
  if (populated < 2) return -1;
  double w0 = 0, s0 = 0, best = -1.0;
  int best_k = -1;
  for (int k = 0; k < n_bins - 1; ++k) {
    w0 += static_cast<double>(hist[k]);
    s0 += static_cast<double>(hist[k]) * centers[k];
    const double w1 = total - w0;
    if (w0 <= 0 || w1 <= 0) continue;
    const double d = s0 / w0 - (total_sum - s0) / w1;
    const double var = w0 * w1 * d * d;
    if (var > best) {
      best = var;
      best_k = k;
    }
  }
  return best_k;
}

void threshold(const uint8_t* x, int64_t n, int t, uint8_t* out) {
  parallel_for(n, kPixelGrain, [=](int64_t b, int64_t e) {
    const uint8_t* __restrict src = x + b;
    uint8_t* __restrict dst = out + b;
    for (int64_t i = 0; i < e - b; ++i) dst[i] = static_cast<uint8_t>(static_cast<int>(src[i]) > t);
  });
}

namespace {

// Largest k with k*k <= r*r - dy*dy: the disk's half-width in row dy.
int64_t disk_half_width(int r, int dy) {
  const int64_t rem = int64_t{r} * r - int64_t{dy} * dy;
  auto k = static_cast<int64_t>(std::sqrt(static_cast<double>(rem)));
  while (k * k > rem) --k;
  while ((k + 1) * (k + 1) <= rem) ++k;
  return k;
}

// One step of horizontal 3-wide dilation (OR) or erosion (AND); pixels outside
// the row read 0 for dilation and 1 for erosion.
template <bool Dilate>
void hstep(const uint8_t* __restrict cur, const int64_t w, uint8_t* __restrict next) {
  if (w == 1) {  // both neighbours are outside, and neutral for the operation
    next[0] = cur[0];
    return;
  }
  if (Dilate) {
    next[0] = static_cast<uint8_t>(cur[0] | cur[1]);
    for (int64_t x = 1; x < w - 1; ++x)
      next[x] = static_cast<uint8_t>(cur[x - 1] | cur[x] | cur[x + 1]);
    next[w - 1] = static_cast<uint8_t>(cur[w - 2] | cur[w - 1]);
  } else {
    next[0] = static_cast<uint8_t>(cur[0] & cur[1]);
    for (int64_t x = 1; x < w - 1; ++x)
      next[x] = static_cast<uint8_t>(cur[x - 1] & cur[x] & cur[x + 1]);
    next[w - 1] = static_cast<uint8_t>(cur[w - 2] & cur[w - 1]);
  }
}

inline void or_into(uint8_t* __restrict o, const uint8_t* __restrict p, const int64_t w) {
  for (int64_t x = 0; x < w; ++x) o[x] |= p[x];
}

inline void and_into(uint8_t* __restrict o, const uint8_t* __restrict p, const int64_t w) {
  for (int64_t x = 0; x < w; ++x) o[x] &= p[x];
}

inline void to_binary(const uint8_t* __restrict src, const int64_t w, uint8_t* __restrict dst) {
  for (int64_t x = 0; x < w; ++x) dst[x] = src[x] != 0;
}

// Disk morphology as a union (dilation) or intersection (erosion) over the
// disk's rows of 1-D operations with the row's half-width: each source row is
// widened step by step and the widths the disk needs are kept, in blocks of
// rows so that memory stays bounded for large radii.
template <bool Dilate>
void morph_disk(const uint8_t* mask, int64_t h, int64_t w, int r, uint8_t* out) {
  if (r <= 0) {
    parallel_for(h * w, kPixelGrain,
                 [=](int64_t b, int64_t e) { to_binary(mask + b, e - b, out + b); });
    return;
  }
  std::vector<int64_t> half(static_cast<size_t>(2 * r + 1));
  for (int dy = -r; dy <= r; ++dy) half[static_cast<size_t>(dy + r)] = disk_half_width(r, dy);
  std::vector<int64_t> widths(half.begin(), half.end());
  std::sort(widths.begin(), widths.end());
  widths.erase(std::unique(widths.begin(), widths.end()), widths.end());
  const auto nk = static_cast<int64_t>(widths.size());
  std::vector<int64_t> plane(static_cast<size_t>(2 * r + 1));
  for (size_t i = 0; i < half.size(); ++i)
    plane[i] = std::lower_bound(widths.begin(), widths.end(), half[i]) - widths.begin();
  const int64_t block = 64;
  const int64_t nblocks = (h + block - 1) / block;
  const int64_t grain = std::max<int64_t>(1, row_grain(w) / block);
  simd::parallel_for(nblocks, grain, [&](int64_t b0, int64_t b1) HSAFAST_SIMD_LAMBDA {
    std::vector<uint8_t> buf;
    std::vector<uint8_t> cur(static_cast<size_t>(w)), next(static_cast<size_t>(w));
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t y0 = blk * block, y1 = std::min(h, y0 + block);
      const int64_t s0 = std::max<int64_t>(0, y0 - r), s1 = std::min(h, y1 + r);
      buf.resize(static_cast<size_t>((s1 - s0) * nk * w));
      for (int64_t yy = s0; yy < s1; ++yy) {
        to_binary(mask + yy * w, w, cur.data());
        int64_t k = 0;
        for (int64_t i = 0; i < nk; ++i) {
          for (; k < widths[static_cast<size_t>(i)]; ++k) {
            hstep<Dilate>(cur.data(), w, next.data());
            cur.swap(next);
          }
          std::memcpy(buf.data() + ((yy - s0) * nk + i) * w, cur.data(), static_cast<size_t>(w));
        }
      }
      for (int64_t y = y0; y < y1; ++y) {
        uint8_t* o = out + y * w;
        std::memset(o, Dilate ? 0 : 1, static_cast<size_t>(w));
        for (int dy = -r; dy <= r; ++dy) {
          const int64_t yy = y + dy;
          if (yy < 0 || yy >= h) continue;  // neutral: 0 for OR, 1 for AND
          const uint8_t* p = buf.data() + ((yy - s0) * nk + plane[static_cast<size_t>(dy + r)]) * w;
          if (Dilate)
            or_into(o, p, w);
          else
            and_into(o, p, w);
        }
      }
    }
  });
}

constexpr int32_t kFar = INT32_MAX;

// Column pass of the distance transform: per pixel, the squared vertical distance
// to the nearest target in its column (kFar if none), by a forward and a backward
// sweep over rows (whole rows at a time, so each sweep streams through memory).
void column_distances(const uint8_t* mask, int64_t h, int64_t w, bool target, int32_t* out) {
  parallel_for(w, 256, [&](int64_t x0, int64_t x1) {
    const int64_t n = x1 - x0;
    for (int64_t y = 0; y < h; ++y) {  // distance to the nearest target above or here
      const uint8_t* m = mask + y * w + x0;
      int32_t* o = out + y * w + x0;
      const int32_t* above = o - w;
      for (int64_t i = 0; i < n; ++i) {
        if ((m[i] != 0) == target)
          o[i] = 0;
        else
          o[i] = (y == 0 || above[i] == kFar) ? kFar : above[i] + 1;
      }
    }
    for (int64_t y = h - 2; y >= 0; --y) {  // ... or below
      int32_t* o = out + y * w + x0;
      const int32_t* below = o + w;
      for (int64_t i = 0; i < n; ++i)
        if (below[i] != kFar && below[i] + 1 < o[i]) o[i] = below[i] + 1;
    }
    for (int64_t y = 0; y < h; ++y) {
      int32_t* o = out + y * w + x0;
      for (int64_t i = 0; i < n; ++i)
        if (o[i] != kFar) o[i] *= o[i];
    }
  });
}

// Row pass: d(x) = min_q (x - q)^2 + f(q) over the row, the lower envelope of
// the parabolas rooted at every q with a finite f(q) (Felzenszwalb & Huttenlocher).
void row_envelope(int32_t* row, int64_t w, std::vector<int64_t>& v, std::vector<double>& z,
                  std::vector<int32_t>& f) {
  f.assign(row, row + w);
  int64_t k = -1;
  for (int64_t q = 0; q < w; ++q) {
    if (f[static_cast<size_t>(q)] == kFar) continue;
    const double fq = static_cast<double>(f[static_cast<size_t>(q)]) + static_cast<double>(q * q);
    double s = 0;
    while (k >= 0) {
      const int64_t p = v[static_cast<size_t>(k)];
      const double fp = static_cast<double>(f[static_cast<size_t>(p)]) + static_cast<double>(p * p);
      s = (fq - fp) / static_cast<double>(2 * (q - p));
      if (s > z[static_cast<size_t>(k)]) break;
      --k;
    }
    ++k;
    v[static_cast<size_t>(k)] = q;
    z[static_cast<size_t>(k)] = k == 0 ? -1e300 : s;
  }
  if (k < 0) return;  // no target in any column of this row: every entry stays kFar
  int64_t j = 0;
  for (int64_t x = 0; x < w; ++x) {
    while (j < k && z[static_cast<size_t>(j + 1)] < static_cast<double>(x)) ++j;
    const int64_t p = v[static_cast<size_t>(j)];
    row[x] = static_cast<int32_t>((x - p) * (x - p) + f[static_cast<size_t>(p)]);
  }
}

// out = (squared distance to the nearest `target` pixel <= r^2) != invert.
void disk_from_distance(const uint8_t* mask, int64_t h, int64_t w, bool target, int r, bool invert,
                        uint8_t* out) {
  std::vector<int32_t> d(static_cast<size_t>(h * w));
  squared_distance(mask, h, w, target, d.data());
  const int64_t r2 = int64_t{r} * r;
  parallel_for(h * w, kPixelGrain, [&](int64_t b, int64_t e) {
    const int32_t* __restrict src = d.data() + b;
    uint8_t* __restrict dst = out + b;
    for (int64_t i = 0; i < e - b; ++i)
      dst[i] = static_cast<uint8_t>((static_cast<int64_t>(src[i]) <= r2) != invert);
  });
}

}  // namespace

void squared_distance(const uint8_t* mask, int64_t h, int64_t w, bool target, int32_t* out) {
  if (h > 30000 || w > 30000)
    throw std::invalid_argument("squared_distance: sides above 30000 pixels overflow int32");
  if (h <= 0 || w <= 0) return;
  column_distances(mask, h, w, target, out);
  parallel_for(h, std::max<int64_t>(1, row_grain(w) / 4), [&](int64_t y0, int64_t y1) {
    std::vector<int64_t> v(static_cast<size_t>(w));
    std::vector<double> z(static_cast<size_t>(w) + 1);
    std::vector<int32_t> f;
    for (int64_t y = y0; y < y1; ++y) row_envelope(out + y * w, w, v, z, f);
  });
}

MorphMethod choose_morph_method(int r, MorphMethod method) {
  if (method != MorphMethod::kAuto) return method;
  // the row union costs O(r) per pixel, the distance transform a constant
  // (about 50 row operations' worth), so rows win for the radii tissue masks use
  return r <= kRowsMaxRadius ? MorphMethod::kRows : MorphMethod::kDistance;
}

void dilate_disk(const uint8_t* mask, int64_t h, int64_t w, int r, uint8_t* out,
                 MorphMethod method) {
  if (r > 0 && choose_morph_method(r, method) == MorphMethod::kDistance)
    disk_from_distance(mask, h, w, true, r, false, out);  // some tissue pixel within r
  else
    morph_disk<true>(mask, h, w, r, out);
}

void erode_disk(const uint8_t* mask, int64_t h, int64_t w, int r, uint8_t* out,
                MorphMethod method) {
  if (r > 0 && choose_morph_method(r, method) == MorphMethod::kDistance)
    disk_from_distance(mask, h, w, false, r, true, out);  // no background pixel within r
  else
    morph_disk<false>(mask, h, w, r, out);
}

Components label(const uint8_t* mask, int64_t h, int64_t w, int connectivity, int32_t* labels) {
  check_connectivity(connectivity);
  const RunTable t = find_runs(mask, h, w, 1);
  RunLabels rl = label_runs(t, h, w, connectivity);
  parallel_for(h, row_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      int32_t* row = labels + y * w;
      std::fill(row, row + w, 0);
      for (int64_t r = t.row_start[static_cast<size_t>(y)]; r < t.row_start[static_cast<size_t>(y + 1)];
           ++r) {
        const Run& run = t.runs[static_cast<size_t>(r)];
        std::fill(row + run.x0, row + run.x1, rl.run_label[static_cast<size_t>(r)]);
      }
    }
  });
  return std::move(rl.comps);
}

void fill_holes(const uint8_t* mask, int64_t h, int64_t w, int64_t max_area, uint8_t* out) {
  parallel_for(h * w, kPixelGrain,
               [=](int64_t b, int64_t e) { to_binary(mask + b, e - b, out + b); });
  if (max_area == 0) return;
  // Holes are 4-connected background regions (the dual of 8-connected tissue)
  // that never reach the image edge.
  const RunTable t = find_runs(mask, h, w, 0);
  const RunLabels rl = label_runs(t, h, w, 4);
  std::vector<uint8_t> fill(static_cast<size_t>(rl.comps.count), 0);
  for (int64_t c = 0; c < rl.comps.count; ++c)
    fill[static_cast<size_t>(c)] =
        !rl.comps.touches_edge[static_cast<size_t>(c)] &&
        (max_area < 0 || rl.comps.area[static_cast<size_t>(c)] <= max_area);
  parallel_for(h, row_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t r = t.row_start[static_cast<size_t>(y)]; r < t.row_start[static_cast<size_t>(y + 1)];
           ++r)
        if (fill[static_cast<size_t>(rl.run_label[static_cast<size_t>(r)] - 1)]) {
          const Run& run = t.runs[static_cast<size_t>(r)];
          std::fill(out + y * w + run.x0, out + y * w + run.x1, uint8_t{1});
        }
  });
}

int64_t filter_components(const uint8_t* mask, int64_t h, int64_t w, int64_t min_area,
                          int64_t keep_largest, uint8_t* out, double thin_width,
                          int64_t thin_length) {
  const RunTable t = find_runs(mask, h, w, 1);
  const RunLabels rl = label_runs(t, h, w, 8);
  const auto n = static_cast<size_t>(rl.comps.count);
  std::vector<uint8_t> keep(n, 0);
  std::vector<int64_t> order;
  for (size_t c = 0; c < n; ++c) {
    const int64_t* box = rl.comps.box.data() + 4 * c;
    const int64_t bw = box[2] - box[0], bh = box[3] - box[1];
    const bool thin = thin_length > 0 && std::max(bw, bh) >= thin_length &&
                      static_cast<double>(rl.comps.area[c]) <= thin_width * static_cast<double>(bw + bh);
    if (rl.comps.area[c] >= min_area && !thin) order.push_back(static_cast<int64_t>(c));
  }
  if (keep_largest > 0 && static_cast<int64_t>(order.size()) > keep_largest) {
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return rl.comps.area[static_cast<size_t>(a)] > rl.comps.area[static_cast<size_t>(b)];
    });
    order.resize(static_cast<size_t>(keep_largest));
  }
  for (int64_t c : order) keep[static_cast<size_t>(c)] = 1;
  parallel_for(h, row_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      uint8_t* row = out + y * w;
      std::memset(row, 0, static_cast<size_t>(w));
      for (int64_t r = t.row_start[static_cast<size_t>(y)]; r < t.row_start[static_cast<size_t>(y + 1)];
           ++r)
        if (keep[static_cast<size_t>(rl.run_label[static_cast<size_t>(r)] - 1)]) {
          const Run& run = t.runs[static_cast<size_t>(r)];
          std::fill(row + run.x0, row + run.x1, uint8_t{1});
        }
    }
  });
  return static_cast<int64_t>(order.size());
}

namespace {

// Calls emit(y, x0, x1, count) for every row y, where count[x - x0] is the number
// of set pixels of column x of `m` in rows [y + lo, y + hi) (clamped to the
// image), with sliding sums over the rows; column chunks run in parallel.
template <typename Emit>
void column_windows(const uint8_t* m, int64_t h, int64_t w, int64_t lo, int64_t hi, Emit&& emit) {
  parallel_for(w, 512, [&](int64_t x0, int64_t x1) {
    const int64_t n = x1 - x0;
    std::vector<int32_t> count(static_cast<size_t>(n), 0);
    auto add = [&](int64_t row, int32_t sign) {
      if (row < 0 || row >= h) return;
      const uint8_t* p = m + row * w + x0;
      for (int64_t i = 0; i < n; ++i) count[static_cast<size_t>(i)] += sign * (p[i] != 0);
    };
    for (int64_t row = lo; row < hi; ++row) add(row, 1);  // the window of row 0
    for (int64_t y = 0; y < h; ++y) {
      if (y > 0) {
        add(y + hi - 1, 1);
        add(y + lo - 1, -1);
      }
      emit(y, x0, x1, count.data());
    }
  });
}

// Horizontal lines only (see straight_lines); out is set, not cleared.
void horizontal_lines(const uint8_t* mask, int64_t h, int64_t w, int r, int64_t length,
                      uint8_t* out) {
  const auto n = static_cast<size_t>(h * w);
  const int64_t near = 2 * int64_t{r} + 1, far = 3 * int64_t{r} + 2;
  const auto most = static_cast<int32_t>((far - near + 1) / 3);
  // flanked: set, with mostly glass (at most a third of the pixels set: dust and
  // noise) `near`..`far` rows above and below (outside the image is glass)
  std::vector<uint8_t> up_ok(n), flanked(n);
  column_windows(mask, h, w, -far, -near + 1, [&](int64_t y, int64_t x0, int64_t x1, const int32_t* c) {
    uint8_t* f = up_ok.data() + y * w;
    for (int64_t x = x0; x < x1; ++x) f[x] = c[x - x0] <= most;
  });
  column_windows(mask, h, w, near, far + 1, [&](int64_t y, int64_t x0, int64_t x1, const int32_t* c) {
    const uint8_t* m = mask + y * w;
    const uint8_t* u = up_ok.data() + y * w;
    uint8_t* f = flanked.data() + y * w;
    for (int64_t x = x0; x < x1; ++x)
      f[x] = static_cast<uint8_t>((m[x] != 0) & u[x] & (c[x - x0] <= most));
  });
  // runs of at least `length` along rows of the flanked pixels gathered over r rows
  // above and below, so that a line a few degrees off the row still runs on
  std::vector<uint8_t>& gathered = up_ok;  // reused
  column_windows(flanked.data(), h, w, -r, r + 1,
                 [&](int64_t y, int64_t x0, int64_t x1, const int32_t* c) {
                   uint8_t* g = gathered.data() + y * w;
                   for (int64_t x = x0; x < x1; ++x) g[x] = c[x - x0] > 0;
                 });
  std::vector<uint8_t> runs(n, 0);
  parallel_for(h, row_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const uint8_t* g = gathered.data() + y * w;
      int64_t x = 0;
      while (x < w) {
        x = skip_equal(g, x, w, 0);
        const int64_t start = x;
        x = skip_equal(g, x, w, 1);
        if (x - start >= length) std::fill(runs.begin() + y * w + start, runs.begin() + y * w + x, 1);
      }
    }
  });
  column_windows(runs.data(), h, w, -r, r + 1, [&](int64_t y, int64_t x0, int64_t x1, const int32_t* c) {
    const uint8_t* f = flanked.data() + y * w;
    uint8_t* o = out + y * w;
    for (int64_t x = x0; x < x1; ++x) o[x] = static_cast<uint8_t>(o[x] | (f[x] & (c[x - x0] > 0)));
  });
}

void transpose(const uint8_t* src, int64_t h, int64_t w, uint8_t* dst) {
  constexpr int64_t kBlock = 64;
  parallel_for((h + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t by = b0 * kBlock; by < std::min(h, b1 * kBlock); by += kBlock)
      for (int64_t bx = 0; bx < w; bx += kBlock)
        for (int64_t y = by; y < std::min(h, by + kBlock); ++y)
          for (int64_t x = bx; x < std::min(w, bx + kBlock); ++x) dst[x * h + y] = src[y * w + x];
  });
}

}  // namespace

namespace {

// Lines along rows and along columns of `mask` at its own resolution (out: 0/1).
void lines_both_ways(const uint8_t* mask, int64_t h, int64_t w, int r, int64_t length,
                     uint8_t* out) {
  std::fill(out, out + h * w, uint8_t{0});
  horizontal_lines(mask, h, w, r, length, out);
  std::vector<uint8_t> t_mask(static_cast<size_t>(h * w)), t_out(static_cast<size_t>(h * w), 0);
  transpose(mask, h, w, t_mask.data());
  horizontal_lines(t_mask.data(), w, h, r, length, t_out.data());
  transpose(t_out.data(), w, h, t_mask.data());
  for (int64_t i = 0; i < h * w; ++i) out[i] = static_cast<uint8_t>(out[i] | t_mask[static_cast<size_t>(i)]);
}

}  // namespace

int64_t straight_lines(const uint8_t* mask, int64_t h, int64_t w, int r, int64_t length,
                       uint8_t* out) {
  std::fill(out, out + h * w, uint8_t{0});
  if (h <= 0 || w <= 0 || length <= 0) return 0;
  const int b = std::max(1, r / 2);
  if (b == 1) {
    lines_both_ways(mask, h, w, r, length, out);
  } else {
    // on blocks of b x b pixels (set if any pixel is): a line stays a line, and the
    // work shrinks b^2-fold; the line pixels are the mask's pixels in line blocks
    const int64_t hb = (h + b - 1) / b, wb = (w + b - 1) / b;
    std::vector<uint8_t> pooled(static_cast<size_t>(hb * wb), 0), lines(static_cast<size_t>(hb * wb));
    parallel_for(hb, std::max<int64_t>(1, row_grain(w) / b), [&](int64_t by0, int64_t by1) {
      for (int64_t by = by0; by < by1; ++by) {
        uint8_t* p = pooled.data() + by * wb;
        for (int64_t y = by * b; y < std::min(h, (by + 1) * b); ++y) {
          const uint8_t* m = mask + y * w;
          for (int64_t bx = 0, x = 0; bx < wb; ++bx) {
            uint8_t any = 0;
            for (const int64_t end = std::min(w, x + b); x < end; ++x) any |= m[x];
            p[bx] = static_cast<uint8_t>(p[bx] | (any != 0));
          }
        }
      }
    });
    lines_both_ways(pooled.data(), hb, wb, (r + b - 1) / b, length / b, lines.data());
    parallel_for(h, row_grain(w), [&](int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y) {
        const uint8_t* l = lines.data() + (y / b) * wb;
        const uint8_t* m = mask + y * w;
        uint8_t* o = out + y * w;
        for (int64_t bx = 0, x = 0; bx < wb; ++bx)
          for (const int64_t end = std::min(w, x + b); x < end; ++x)
            o[x] = static_cast<uint8_t>((m[x] != 0) & l[bx]);
      }
    });
  }
  int64_t count = 0;
  for (int64_t i = 0; i < h * w; ++i) count += out[i];
  return count;
}

void integral_image(const uint8_t* mask, int64_t h, int64_t w, int64_t* ii) {
  const int64_t iw = w + 1;
  // Row sums in parallel, then the column accumulation in parallel over columns.
  parallel_for(h + 1, row_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      int64_t* row = ii + y * iw;
      row[0] = 0;
      if (y == 0) {
        std::fill(row, row + iw, int64_t{0});
        continue;
      }
      const uint8_t* m = mask + (y - 1) * w;
      for (int64_t x = 0; x < w; ++x) row[x + 1] = row[x] + (m[x] != 0);
    }
  });
  parallel_for(iw, 256, [&](int64_t x0, int64_t x1) {
    for (int64_t y = 1; y <= h; ++y) {
      int64_t* row = ii + y * iw;
      const int64_t* prev = row - iw;
      for (int64_t x = x0; x < x1; ++x) row[x] += prev[x];
    }
  });
}

namespace {
// Area of the mask inside [0, u) x [0, v) for real u, v (clamped to the image).
double area_below(const int64_t* ii, int64_t h, int64_t w, double u, double v) {
  u = std::min(std::max(u, 0.0), static_cast<double>(w));
  v = std::min(std::max(v, 0.0), static_cast<double>(h));
  const int64_t i = std::min(static_cast<int64_t>(u), w - 1);
  const int64_t j = std::min(static_cast<int64_t>(v), h - 1);
  const double a = u - static_cast<double>(i);
  const double b = v - static_cast<double>(j);
  const int64_t iw = w + 1;
  const double s00 = static_cast<double>(ii[j * iw + i]);
  const double s01 = static_cast<double>(ii[j * iw + i + 1]);
  const double s10 = static_cast<double>(ii[(j + 1) * iw + i]);
  const double s11 = static_cast<double>(ii[(j + 1) * iw + i + 1]);
  return s00 * (1 - a) * (1 - b) + s01 * a * (1 - b) + s10 * (1 - a) * b + s11 * a * b;
}
}  // namespace

void box_fractions(const int64_t* ii, int64_t h, int64_t w, const double* boxes, int64_t n,
                   double* out) {
  parallel_for(n, 4096, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const double x0 = boxes[4 * k], y0 = boxes[4 * k + 1];
      const double x1 = boxes[4 * k + 2], y1 = boxes[4 * k + 3];
      const double box = (x1 - x0) * (y1 - y0);
      if (!(box > 0) || h <= 0 || w <= 0) {
        out[k] = 0.0;
        continue;
      }
      const double area = area_below(ii, h, w, x1, y1) - area_below(ii, h, w, x0, y1) -
                          area_below(ii, h, w, x1, y0) + area_below(ii, h, w, x0, y0);
      out[k] = std::min(1.0, std::max(0.0, area / box));
    }
  });
}

}  // namespace tissue
}  // namespace hsafast
