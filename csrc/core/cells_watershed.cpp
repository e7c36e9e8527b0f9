#include "core/cells_watershed.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace hsafast::cells {
namespace {

// The flood's priority queue, in the exact order of scikit-image's watershed heap
// (decreasing stain, then arrival), at a bucket queue's cost: stain values are cut
// into kBuckets steps between the flood's lowest and highest pixel, each bucket is a
// list kept in that order (almost always appended to at its end: it holds a few
// pixels), and a bitmap finds the first non-empty bucket. Entries are allocated in
// push order, so they double as the list of flooded pixels.
constexpr int kBuckets = 8192;
constexpr int kWords = kBuckets / 64;

class FloodQueue {
 public:
  FloodQueue(WatershedScratch& s, size_t capacity, float lo, float hi) : s_(s), hi_(hi) {
    s.pixel.resize(capacity);
    s.value.resize(capacity);
    s.link.resize(capacity);
    s.head.assign(kBuckets, -1);
    s.tail.resize(kBuckets);
    s.nonempty.assign(kWords, 0);
    scale_ = hi > lo ? static_cast<float>((kBuckets - 1) / (static_cast<double>(hi) - lo)) : 0.0f;
  }

  void push(int32_t p, float v) {
    const float f = (hi_ - v) * scale_;  // monotone in v: higher stain, lower bucket
    const int b = f <= 0 ? 0 : f >= kBuckets - 1 ? kBuckets - 1 : static_cast<int>(f);
    const int32_t e = size_++;
    int32_t* link = s_.link.data();
    const float* value = s_.value.data();
    s_.pixel[static_cast<size_t>(e)] = p;
    s_.value[static_cast<size_t>(e)] = v;
    link[e] = -1;
    int32_t& head = s_.head[static_cast<size_t>(b)];
    int32_t& tail = s_.tail[static_cast<size_t>(b)];
    if (head < 0) {
      head = tail = e;
      s_.nonempty[static_cast<size_t>(b >> 6)] |= uint64_t{1} << (b & 63);
    } else if (value[tail] >= v) {  // after every pixel of equal or higher stain
      link[tail] = e;
      tail = e;
    } else {
      int32_t prev = -1, cur = head;
      while (value[cur] >= v) prev = cur, cur = link[cur];
      link[e] = cur;
      (prev < 0 ? head : link[prev]) = e;
    }
    if (b < current_) current_ = b;
  }

  // The pixel of highest stain that came first, or -1 when the queue is empty.
  int32_t pop() {
    int word = current_ >> 6;
    uint64_t bits = s_.nonempty[static_cast<size_t>(word)] & (~uint64_t{0} << (current_ & 63));
    while (bits == 0) {
      if (++word >= kWords) return -1;
      bits = s_.nonempty[static_cast<size_t>(word)];
    }
    current_ = word * 64 + __builtin_ctzll(bits);
    int32_t& head = s_.head[static_cast<size_t>(current_)];
    const int32_t e = head;
    head = s_.link[static_cast<size_t>(e)];
    if (head < 0) s_.nonempty[static_cast<size_t>(word)] &= ~(uint64_t{1} << (current_ & 63));
    return s_.pixel[static_cast<size_t>(e)];
  }

  // Every pixel pushed so far, in push order.
  const int32_t* begin() const { return s_.pixel.data(); }
  const int32_t* end() const { return s_.pixel.data() + size_; }

 private:
  WatershedScratch& s_;
  float hi_, scale_ = 0;
  int32_t size_ = 0;
  int current_ = 0;
};

NucleusShape shape_from_moments(const int64_t* sums) {
  NucleusShape out;
  const auto n = static_cast<double>(sums[0]);
  out.area = n;
  if (n <= 0) return out;
  double m[6];
  for (int k = 0; k < 6; ++k) m[k] = static_cast<double>(sums[k]);
  const double mx = m[1] / n, my = m[2] / n;
  const double vxx = m[3] / n - mx * mx;
  const double vyy = m[4] / n - my * my;
  const double vxy = m[5] / n - mx * my;
  const double half = 0.5 * (vxx + vyy);
  const double disc = std::sqrt(std::max(half * half - (vxx * vyy - vxy * vxy), 0.0));
  const double small = std::max(half - disc, 0.0), large = half + disc;
  // a filled ellipse with second moments l1, l2 has area 4 pi sqrt(l1 l2)
  const double ellipse = 4.0 * M_PI * std::sqrt(small * large);
  out.fill = ellipse > 0 ? std::min(n / ellipse, 1.0) : 0.0;
  out.width = 4.0 * std::sqrt(small);
  return out;
}

// The smallest float f with (double)f >= v, so that `pixel >= f` tests `pixel >= v`.
float float_at_least(double v) {
  float f = static_cast<float>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

}  // namespace

void measure_nuclei(const float* st, int64_t h, int64_t w, const std::vector<int64_t>& seeds,
                    const std::vector<double>& peak, const std::vector<double>& background,
                    float mask_min, double reach, float* fl, WatershedScratch& s,
                    std::vector<NucleusShape>& out) {
  const size_t n = seeds.size();
  out.assign(n, NucleusShape{});
  if (n == 0) return;
  const int64_t stride = w + 2;
  const auto total = static_cast<size_t>((h + 2) * stride);
  const float inf = std::numeric_limits<float>::infinity();
  s.label.resize(total);
  int32_t* label = s.label.data();
  auto padded = [&](int64_t pixel) {
    return static_cast<int32_t>((pixel / w + 1) * stride + pixel % w + 1);
  };

  // The lowest level a nucleus may have, painted within `reach` of each seed:
  // row dy of the disk spans [-span[dy + r], span[dy + r]], the largest dx with
  // dx^2 + dy^2 <= reach^2.
  std::fill(fl, fl + h * w, inf);
  const auto r = static_cast<int64_t>(std::floor(reach));
  std::vector<int64_t> span(static_cast<size_t>(2 * r + 1));
  for (int64_t dy = -r; dy <= r; ++dy) {
    const double room = reach * reach - static_cast<double>(dy * dy);
    auto dx = static_cast<int64_t>(std::sqrt(std::max(room, 0.0)));
    while (static_cast<double>((dx + 1) * (dx + 1)) <= room) ++dx;
    while (dx > 0 && static_cast<double>(dx * dx) > room) --dx;
    span[static_cast<size_t>(dy + r)] = dx;
  }
  for (size_t i = 0; i < n; ++i) {
    // a nucleus's basin holds its seed pixel, so its maximum is at least the stain there
    const double top = std::max(peak[i], static_cast<double>(st[padded(seeds[i])]));
    const float lower = float_at_least(background[i] + 0.5 * (top - background[i]));
    const int64_t cx = seeds[i] % w, cy = seeds[i] / w;
    for (int64_t y = std::max<int64_t>(cy - r, 0); y <= std::min<int64_t>(cy + r, h - 1); ++y) {
      const int64_t dx = span[static_cast<size_t>(y - cy + r)];
      const int64_t x0 = std::max<int64_t>(cx - dx, 0), x1 = std::min<int64_t>(cx + dx, w - 1);
      float* __restrict f = fl + y * w;
      for (int64_t x = x0; x <= x1; ++x) f[x] = std::min(f[x], lower);
    }
  }
  // One pass: flood pixels labelled 0, the rest (and the border) -1, and the flood's
  // stain range.
  const float above = std::nextafter(mask_min, inf);
  std::fill(label, label + stride, -1);
  std::fill(label + (h + 1) * stride, label + total, -1);
  float hi = -inf, lo = inf;
  for (int64_t y = 0; y < h; ++y) {
    const float* __restrict row = st + (y + 1) * stride + 1;
    int32_t* __restrict lab = label + (y + 1) * stride + 1;
    const float* __restrict f = fl + y * w;
    lab[-1] = lab[w] = -1;
    float m[8], l[8];
    std::fill(m, m + 8, -inf);
    std::fill(l, l + 8, inf);
    int64_t x = 0;
    for (; x + 8 <= w; x += 8)
      for (int j = 0; j < 8; ++j) {
        const float v = row[x + j];
        const bool in = (v >= f[x + j]) & (v >= above);
        lab[x + j] = in ? 0 : -1;
        m[j] = std::max(m[j], in ? v : -inf);
        l[j] = std::min(l[j], in ? v : inf);
      }
    for (; x < w; ++x) {
      const float v = row[x];
      const bool in = (v >= f[x]) & (v >= above);
      lab[x] = in ? 0 : -1;
      if (in) hi = std::max(hi, v), lo = std::min(lo, v);
    }
    for (int j = 0; j < 8; ++j) hi = std::max(hi, m[j]), lo = std::min(lo, l[j]);
  }

  // Seeds, in raster order (the order markers enter the flood); a later seed on
  // the same pixel takes it over. Seeds may lie outside the flood's pixels.
  std::vector<int32_t> order(n);
  for (size_t i = 0; i < n; ++i) {
    order[i] = padded(seeds[i]);
    label[order[i]] = static_cast<int32_t>(i + 1);
    lo = std::min(lo, st[order[i]]);
    hi = std::max(hi, st[order[i]]);
  }
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());

  FloodQueue queue(s, total, lo, hi);
  for (int32_t q : order) queue.push(q, st[q]);
  const int32_t up = -static_cast<int32_t>(stride), down = static_cast<int32_t>(stride);
  for (int32_t p = queue.pop(); p >= 0; p = queue.pop()) {
    const int32_t lab = label[p];
    if (label[p + up] == 0) label[p + up] = lab, queue.push(p + up, st[p + up]);
    if (label[p - 1] == 0) label[p - 1] = lab, queue.push(p - 1, st[p - 1]);
    if (label[p + 1] == 0) label[p + 1] = lab, queue.push(p + 1, st[p + 1]);
    if (label[p + down] == 0) label[p + down] = lab, queue.push(p + down, st[p + down]);
  }

  // Each basin's highest stain, then its level.
  std::vector<float> top(n + 1, -inf);
  for (int32_t q : queue) {
    float& t = top[static_cast<size_t>(label[q])];
    t = std::max(t, st[q]);
  }
  std::vector<float> level(n + 1);
  for (size_t i = 0; i < n; ++i) {
    const double t = std::max(static_cast<double>(top[i + 1]), peak[i]);
    level[i + 1] = static_cast<float>(background[i] + 0.5 * (t - background[i]));
  }
  // Pixel counts and coordinate sums are integers: summed exactly, in any order.
  std::vector<int64_t> mom(6 * (n + 1), 0);
  const double inv = 1.0 / static_cast<double>(stride);
  for (int32_t q : queue) {
    const int32_t lab = label[q];
    if (!(st[q] >= level[static_cast<size_t>(lab)])) continue;
    auto row = static_cast<int64_t>(q * inv);  // q / stride without a division
    if (row * stride > q) --row;
    if ((row + 1) * stride <= q) ++row;
    const int64_t x = q - row * stride - 1, y = row - 1;
    int64_t* m = &mom[6 * static_cast<size_t>(lab)];
    m[0] += 1;
    m[1] += x;
    m[2] += y;
    m[3] += x * x;
    m[4] += y * y;
    m[5] += x * y;
  }
  for (size_t i = 0; i < n; ++i) out[i] = shape_from_moments(&mom[6 * (i + 1)]);
}

}  // namespace hsafast::cells
