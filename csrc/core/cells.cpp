#include "core/cells.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>

#include "core/cells_watershed.hpp"
#include "core/parallel.hpp"

namespace hsafast::cells {
namespace {

constexpr int kSectors = 36;  // 10-degree sectors of a membrane ring

// Everything one thread needs for one tile, reused from tile to tile.
struct Workspace {
  std::vector<float> nuclear;  // the nuclear map; then scratch of the watershed
  std::vector<float> dab;      // membranous markers only: rings read it
  std::vector<float> smooth;   // detection map
  std::vector<float> shape;    // the map nuclei are measured on, padded by one -inf pixel
  std::vector<float> half, eroded;  // every other pixel of `smooth`, and its erosion
  std::vector<uint8_t> candidates;  // 3 x 3 maxima of `smooth`
  FilterScratch filters;
  WatershedScratch watershed;
  std::vector<int8_t> sectors;  // sector of each offset of the largest ring so far
  int sector_reach = -1;
};

// Per-channel tables of the (hematoxylin, DAB) contributions: three loads and
// two additions of a pair per pixel, summed in the order of
// stain::concentrations, so the maps equal hsafast.stain.concentrations bit for bit.
typedef float v2f __attribute__((vector_size(8)));

struct MapTables {
  v2f t[3][256];
};

MapTables map_tables(const Params& p) {
  MapTables t;
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v)
      t.t[c][v] = v2f{p.od_lut[v] * p.inv[c][p.hema], p.od_lut[v] * p.inv[c][p.dab]};
  return t;
}

// Concentrations (hematoxylin, DAB) of one pixel, clamped at zero as scikit-image does.
inline v2f concentrations(const uint8_t* px, const MapTables& t) {
  const v2f hd = t.t[0][px[0]] + t.t[1][px[1]] + t.t[2][px[2]];
  const v2f zero = {0.0f, 0.0f};
  return hd > zero ? hd : zero;
}

// The nuclear map: H + DAB (nuclear markers) or H with the DAB map (membranous).
void stain_maps(const uint8_t* rgb, int64_t npix, const MapTables& t, bool membranous,
                float* nuclear, float* dab) {
  if (membranous) {
    for (int64_t i = 0; i < npix; ++i, rgb += 3) {
      const v2f hd = concentrations(rgb, t);
      nuclear[i] = hd[0];
      dab[i] = hd[1];
    }
  } else {
    for (int64_t i = 0; i < npix; ++i, rgb += 3) {
      const v2f hd = concentrations(rgb, t);
      nuclear[i] = hd[0] + hd[1];
    }
  }
}

typedef float v8f __attribute__((vector_size(32)));

// Largest of n >= 1 floats, eight lanes at a time.
float max_of(const float* p, int64_t n) {
  float best = p[0];
  int64_t i = 0;
  if (n >= 8) {
    v8f m;
    std::memcpy(&m, p, sizeof(m));
    for (i = 8; i + 8 <= n; i += 8) {
      v8f v;
      std::memcpy(&v, p + i, sizeof(v));
      m = m > v ? m : v;
    }
    for (int j = 0; j < 8; ++j) best = std::max(best, m[j]);
  }
  for (; i < n; ++i) best = std::max(best, p[i]);
  return best;
}

// The morphological opening at one pixel: the largest erosion value within the
// disk around it (reflected borders, as cv::morphologyEx with BORDER_REFLECT).
float opening_at(const float* eroded, int64_t h, int64_t w, const std::vector<int>& hw, int64_t x,
                 int64_t y) {
  const int r = static_cast<int>(hw.size()) / 2;
  float best = -std::numeric_limits<float>::infinity();
  for (int dy = -r; dy <= r; ++dy) {
    const float* row = eroded + reflect(y + dy, h) * w;
    const int k = hw[static_cast<size_t>(dy + r)];
    if (x - k >= 0 && x + k < w) {
      best = std::max(best, max_of(row + x - k, 2 * k + 1));
    } else {
      for (int dx = -k; dx <= k; ++dx) best = std::max(best, row[reflect(x + dx, w)]);
    }
  }
  return best;
}

// Whether no pixel of the (2 half + 1)^2 window around (x, y), clipped to the
// image, exceeds v.
bool is_window_max(const float* sm, int64_t h, int64_t w, int64_t x, int64_t y, int half,
                   float v) {
  const int64_t x0 = std::max<int64_t>(x - half, 0), x1 = std::min<int64_t>(x + half, w - 1);
  for (int64_t yy = std::max<int64_t>(y - half, 0); yy <= std::min<int64_t>(y + half, h - 1); ++yy)
    if (max_of(sm + yy * w + x0, x1 - x0 + 1) > v) return false;
  return true;
}

struct Centre {
  double x, y;
  int64_t pixel;       // the first (raster order) peak pixel of the centre's flat top
  float background;    // the opening there (NaN when not computed)
};

// Nucleus centres: maxima of the detection map over the peak window, above
// min_od and at least min_contrast above the opening; flat tops (several equal
// maxima touching, 8-connected) become one centre at their centroid, in raster
// order of their first pixel.
std::vector<Centre> find_centres(Workspace& ws, int64_t h, int64_t w, const std::vector<int>& disk,
                                 const Params& p) {
  const int64_t hh = (h + 1) / 2, hw = (w + 1) / 2;  // the background's grid
  const float* sm = ws.smooth.data();
  const uint8_t* cand = ws.candidates.data();  // 3 x 3 maxima above min_od: a cheap first test
  std::vector<int64_t> peaks;
  std::vector<float> peak_bg;
  for (int64_t i0 = 0; i0 < h * w; i0 += 8) {
    uint64_t word = 0;
    if (i0 + 8 <= h * w) {
      std::memcpy(&word, cand + i0, 8);
      if (word == 0) continue;
    }
    for (int64_t i = i0; i < std::min(i0 + 8, h * w); ++i) {
      if (!cand[i]) continue;
      const int64_t x = i % w, y = i / w;
      if (!is_window_max(sm, h, w, x, y, p.peak_window / 2, sm[i])) continue;
      float bg = std::numeric_limits<float>::quiet_NaN();
      if (p.min_contrast > 0) {
        // the opening is at least the erosion here: a cheap test first
        const int64_t hx = x / 2, hy = y / 2;
        if (!(sm[i] - ws.eroded[static_cast<size_t>(hy * hw + hx)] > p.min_contrast)) continue;
        bg = opening_at(ws.eroded.data(), hh, hw, disk, hx, hy);
        if (!(sm[i] - bg > p.min_contrast)) continue;
      }
      peaks.push_back(i);
      peak_bg.push_back(bg);
    }
  }
  // Union-find over the (raster-ordered) peak pixels, 8-connected.
  const size_t k = peaks.size();
  std::vector<size_t> parent(k);
  std::iota(parent.begin(), parent.end(), size_t{0});
  auto find = [&](size_t a) {
    while (parent[a] != a) a = parent[a] = parent[parent[a]];
    return a;
  };
  auto join = [&](size_t a, size_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);  // root: the earliest pixel
  };
  auto index_of = [&](int64_t pix) -> int64_t {
    auto it = std::lower_bound(peaks.begin(), peaks.end(), pix);
    return it != peaks.end() && *it == pix ? it - peaks.begin() : -1;
  };
  for (size_t a = 0; a < k; ++a) {
    const int64_t x = peaks[a] % w, y = peaks[a] / w;
    if (x > 0 && a > 0 && peaks[a - 1] == peaks[a] - 1) join(a, a - 1);
    if (y == 0) continue;
    for (int64_t dx = -1; dx <= 1; ++dx) {
      if (x + dx < 0 || x + dx >= w) continue;
      const int64_t b = index_of(peaks[a] - w + dx);
      if (b >= 0) join(a, static_cast<size_t>(b));
    }
  }
  std::vector<double> sx(k, 0), sy(k, 0), cnt(k, 0);
  for (size_t a = 0; a < k; ++a) {
    const size_t root = find(a);
    sx[root] += static_cast<double>(peaks[a] % w);
    sy[root] += static_cast<double>(peaks[a] / w);
    cnt[root] += 1;
  }
  std::vector<Centre> centres;
  for (size_t a = 0; a < k; ++a)
    if (find(a) == a) centres.push_back({sx[a] / cnt[a], sy[a] / cnt[a], peaks[a], peak_bg[a]});
  return centres;
}

int64_t nearest_pixel(double v, int64_t n) {
  const auto i = static_cast<int64_t>(std::nearbyint(v));  // half to even, as np.rint
  return std::clamp<int64_t>(i, 0, n - 1);
}

int8_t grade_of(double value, const double thresholds[3]) {
  int8_t g = 0;
  for (int k = 0; k < 3; ++k) g += value > thresholds[k];
  return g;
}

// Offsets (dx, dy) of the pixels within `radius` of a centre.
std::vector<std::pair<int, int>> disk_offsets(double radius) {
  const int r = static_cast<int>(std::ceil(radius));
  std::vector<std::pair<int, int>> out;
  for (int dy = -r; dy <= r; ++dy)
    for (int dx = -r; dx <= r; ++dx)
      if (dx * dx + dy * dy <= radius * radius) out.emplace_back(dx, dy);
  return out;
}

// Mean of DAB over the disk around (x, y), reflected borders (cv::filter2D with
// BORDER_REFLECT and a normalised disk kernel), straight from the tile's pixels.
double mean_dab(const uint8_t* rgb, int64_t h, int64_t w, int64_t x, int64_t y,
                const std::vector<std::pair<int, int>>& disk, int reach, const MapTables& t) {
  double sum = 0;
  if (x >= reach && y >= reach && x + reach < w && y + reach < h) {
    const uint8_t* c = rgb + (y * w + x) * 3;
    for (const auto& [dx, dy] : disk) sum += concentrations(c + (dy * w + dx) * 3, t)[1];
  } else {
    for (const auto& [dx, dy] : disk)
      sum += concentrations(rgb + (reflect(y + dy, h) * w + reflect(x + dx, w)) * 3, t)[1];
  }
  return sum / static_cast<double>(disk.size());
}

// Tumour-like: large, wide, elliptical, among at least min_neighbours others like
// it within neighbour_px, and in a group where at least min_group_share of the nuclei
// within group_px are like it (neighbours counted among the cells passing the size
// and shape tests; the cell itself is not counted).
void tumour_rule(std::vector<Cell>& cells, const Params& p) {
  std::vector<size_t> big;
  for (size_t i = 0; i < cells.size(); ++i) {
    Cell& c = cells[i];
    c.tumour = c.area_um2 >= p.min_area_um2 && c.width_um >= p.min_width_um && c.fill >= p.min_fill;
    if (c.tumour) big.push_back(i);
  }
  const bool by_count = p.min_neighbours > 0, by_share = p.min_group_share > 0;
  if (!(by_count || by_share) || big.empty()) return;
  // Buckets of side r (the larger radius), so each cell looks at its 3 x 3 buckets only.
  const double r_count = p.neighbour_px, r_share = p.group_px;
  const double r = std::max(by_count ? r_count : 0.0, by_share ? r_share : 0.0);
  auto key = [&](double x, double y) {
    return std::make_pair(static_cast<int64_t>(std::floor(y / r)), static_cast<int64_t>(std::floor(x / r)));
  };
  std::vector<std::pair<std::pair<int64_t, int64_t>, size_t>> grid;
  grid.reserve(cells.size());
  for (size_t i = 0; i < cells.size(); ++i) grid.emplace_back(key(cells[i].x, cells[i].y), i);
  std::sort(grid.begin(), grid.end());
  std::vector<bool> keep(cells.size(), false);
  for (size_t i : big) {
    const auto [gy, gx] = key(cells[i].x, cells[i].y);
    int like_near = 0, like_group = 0, all_group = 0;
    for (int64_t by = gy - 1; by <= gy + 1; ++by)
      for (int64_t bx = gx - 1; bx <= gx + 1; ++bx) {
        auto lo = std::lower_bound(grid.begin(), grid.end(),
                                   std::make_pair(std::make_pair(by, bx), size_t{0}));
        for (auto it = lo; it != grid.end() && it->first == std::make_pair(by, bx); ++it) {
          if (it->second == i) continue;
          const Cell& o = cells[it->second];
          const double dx = o.x - cells[i].x, dy = o.y - cells[i].y, d2 = dx * dx + dy * dy;
          if (d2 <= r_share * r_share) {
            ++all_group;
            like_group += o.tumour;
          }
          like_near += o.tumour && d2 <= r_count * r_count;
        }
      }
    keep[i] = (!by_count || like_near >= p.min_neighbours) &&
              (!by_share || static_cast<double>(like_group) >= p.min_group_share * all_group);
  }
  for (size_t i : big) cells[i].tumour = keep[i];
}

const int8_t* sector_table(Workspace& ws, int reach) {
  if (reach > ws.sector_reach) {
    const int side = 2 * reach + 1;
    ws.sectors.resize(static_cast<size_t>(side) * side);
    for (int dy = -reach; dy <= reach; ++dy)
      for (int dx = -reach; dx <= reach; ++dx) {
        const double angle = std::atan2(static_cast<double>(dy), static_cast<double>(dx));
        const auto s = static_cast<int64_t>((angle + M_PI) * (kSectors / (2 * M_PI)));
        ws.sectors[static_cast<size_t>((dy + reach) * side + dx + reach)] =
            static_cast<int8_t>(s % kSectors);
      }
    ws.sector_reach = reach;
  }
  return ws.sectors.data();
}

// Membranous grading: the ring from 1.15 x the nucleus's equivalent radius (at
// least 1.15 x the configured radius) outwards by ring_px; positive when DAB 1+
// pixels fall in at least ring_coverage of its 36 sectors, graded by their mean.
void grade_membranes(std::vector<Cell>& cells, Workspace& ws, int64_t h, int64_t w,
                     const Params& p) {
  std::vector<double> r_in(cells.size()), r_out(cells.size());
  int reach_max = 0;
  for (size_t i = 0; i < cells.size(); ++i) {
    r_in[i] = 1.15 * std::max(std::sqrt(cells[i].area_um2 / M_PI) / p.mpp, p.radius);
    r_out[i] = r_in[i] + p.ring_px;
    reach_max = std::max(reach_max, static_cast<int>(std::ceil(r_out[i])));
  }
  const int8_t* sectors = sector_table(ws, reach_max);
  const int side = 2 * ws.sector_reach + 1;
  const float hit = static_cast<float>(p.thresholds[0]);
  const float* d = ws.dab.data();
  for (size_t i = 0; i < cells.size(); ++i) {
    Cell& c = cells[i];
    const auto reach = static_cast<int64_t>(std::ceil(r_out[i]));
    const auto cx = static_cast<int64_t>(std::nearbyint(c.x));
    const auto cy = static_cast<int64_t>(std::nearbyint(c.y));
    const double in2 = r_in[i] * r_in[i], out2 = r_out[i] * r_out[i];
    bool seen[kSectors] = {};
    int covered = 0;
    double sum = 0;
    int64_t on = 0;
    for (int64_t y = std::max<int64_t>(cy - reach, 0); y < std::min(cy + reach + 1, h); ++y)
      for (int64_t x = std::max<int64_t>(cx - reach, 0); x < std::min(cx + reach + 1, w); ++x) {
        const int64_t dx = x - cx, dy = y - cy;
        const auto rr = static_cast<double>(dx * dx + dy * dy);
        const float v = d[y * w + x];
        if (rr < in2 || rr > out2 || !(v > hit)) continue;
        const int s = sectors[(dy + ws.sector_reach) * side + dx + ws.sector_reach];
        covered += !seen[s];
        seen[s] = true;
        sum += v;
        ++on;
      }
    const double intensity = on ? sum / static_cast<double>(on) : 0.0;
    const bool positive = static_cast<double>(covered) / kSectors >= p.ring_coverage;
    c.grade = positive ? std::max<int8_t>(grade_of(intensity, p.thresholds), 1) : 0;
    c.dab = positive ? intensity : 0.0;
  }
}

void detect_tile(const uint8_t* rgb, int64_t h, int64_t w, const Params& p, const MapTables& tab,
                 const std::vector<float>& detect_kernel, const std::vector<float>& shape_kernel,
                 const std::vector<int>& disk, Workspace& ws, std::vector<Cell>& cells) {
  const auto npix = static_cast<size_t>(h * w);
  const int64_t stride = w + 2;  // the padded shape map
  const int64_t hh = (h + 1) / 2, hw = (w + 1) / 2;  // the background's half-resolution grid
  ws.nuclear.resize(npix);
  ws.smooth.resize(npix);
  ws.candidates.resize(npix);
  ws.shape.resize(static_cast<size_t>((h + 2) * stride));
  ws.half.resize(static_cast<size_t>(hh * hw));
  ws.eroded.resize(static_cast<size_t>(hh * hw));
  if (p.membranous) ws.dab.resize(npix);
  stain_maps(rgb, h * w, tab, p.membranous, ws.nuclear.data(), ws.dab.data());
  gaussian_blur(ws.nuclear.data(), h, w, detect_kernel, ws.smooth.data(), w, ws.filters, p.simd);
  peak_candidates(ws.smooth.data(), h, w, p.min_od, ws.candidates.data(), ws.filters, p.simd);
  for (int64_t y = 0; y < hh; ++y) {
    const float* src = ws.smooth.data() + 2 * y * w;
    float* dst = ws.half.data() + y * hw;
    for (int64_t x = 0; x < hw; ++x) dst[x] = src[2 * x];
  }
  erode_disk(ws.half.data(), hh, hw, disk, ws.eroded.data(), ws.filters, p.simd);
  const auto centres = find_centres(ws, h, w, disk, p);
  cells.assign(centres.size(), Cell{});
  if (centres.empty()) return;

  const auto mean_disk = disk_offsets(p.mean_radius);
  const int mean_reach = static_cast<int>(std::ceil(p.mean_radius));
  std::vector<int64_t> seeds(centres.size());
  std::vector<double> peak(centres.size()), background(centres.size());
  for (size_t i = 0; i < centres.size(); ++i) {
    Cell& c = cells[i];
    c.x = centres[i].x;
    c.y = centres[i].y;
    const int64_t x = nearest_pixel(c.x, w), y = nearest_pixel(c.y, h);
    seeds[i] = y * w + x;
    peak[i] = ws.smooth[static_cast<size_t>(seeds[i])];
    const bool known = seeds[i] == centres[i].pixel && !std::isnan(centres[i].background);
    background[i] =
        known ? centres[i].background : opening_at(ws.eroded.data(), hh, hw, disk, x / 2, y / 2);
    if (!p.membranous) {
      c.dab = mean_dab(rgb, h, w, x, y, mean_disk, mean_reach, tab);
      c.grade = grade_of(c.dab, p.thresholds);
    }
  }
  // The shape map goes inside a border of -inf, so the flood needs no bounds checks.
  float* shape = ws.shape.data();
  const float ninf = -std::numeric_limits<float>::infinity();
  std::fill(shape, shape + stride, ninf);
  std::fill(shape + (h + 1) * stride, shape + (h + 2) * stride, ninf);
  for (int64_t y = 1; y <= h; ++y) shape[y * stride] = shape[y * stride + w + 1] = ninf;
  gaussian_blur(ws.nuclear.data(), h, w, shape_kernel, shape + stride + 1, stride, ws.filters,
                p.simd);
  std::vector<NucleusShape> shapes;
  measure_nuclei(shape, h, w, seeds, peak, background, p.mask_min, p.reach, ws.nuclear.data(),
                 ws.watershed, shapes);
  for (size_t i = 0; i < cells.size(); ++i) {
    cells[i].area_um2 = shapes[i].area * p.mpp * p.mpp;
    cells[i].width_um = shapes[i].width * p.mpp;
    cells[i].fill = shapes[i].fill;
  }
  tumour_rule(cells, p);
  if (p.membranous) grade_membranes(cells, ws, h, w, p);
}

}  // namespace

void detect(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, const Params& params,
            std::vector<std::vector<Cell>>& out) {
  out.assign(static_cast<size_t>(std::max<int64_t>(n, 0)), {});
  if (n <= 0 || h <= 0 || w <= 0) return;
  Params p = params;
  p.simd = resolve_simd(params.simd);
  const MapTables tab = map_tables(p);
  const auto detect_kernel = gaussian_half_kernel(p.detect_sigma);
  const auto shape_kernel = gaussian_half_kernel(p.shape_sigma);
  const auto disk = disk_half_widths(p.background_diameter);
  // Tiles are handed out one at a time to the workers, which keep their buffers.
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(n, get_num_threads());
  parallel_for(workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t worker = begin; worker < end; ++worker) {
      Workspace ws;
      for (int64_t t = next++; t < n; t = next++)
        detect_tile(rgb + t * h * w * 3, h, w, p, tab, detect_kernel, shape_kernel, disk, ws,
                    out[static_cast<size_t>(t)]);
    }
  });
}

}  // namespace hsafast::cells
