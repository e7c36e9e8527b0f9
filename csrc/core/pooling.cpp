// Fused gated-attention epilogue and online softmax over one chunk of rows (see pooling.hpp).
//
// tanh and sigmoid are computed from one exp each, written with GCC/Clang vector extensions
// so the compiler emits full-width SIMD for whatever the target has (AVX-512, AVX2, NEON).
// The exp is a Cody-Waite range reduction with a degree-7 Taylor polynomial: relative
// error below 1e-7 on the clamped range, far inside the 1e-5 budget of the pooled output.
// The row loops are compiled for each SIMD path of simd.hpp (baseline, AVX2, AVX-512)
// and chosen at run time; every helper they call is inlined into them.
#include "core/pooling.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/parallel.hpp"
#include "core/simd.hpp"

namespace hsafast {

namespace {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.42860682030941723212e-6f;
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
constexpr float kExpLo = -87.0f;            // keeps 2^n a normal float
constexpr float kExpHi = 88.0f;             // keeps 2^n finite

// exp(r) for |r| <= ln(2) / 2: degree-7 Taylor polynomial in Horner form, shared by
// the scalar and the vector exp so that both round identically.
template <typename F>
HSAFAST_SIMD_INLINE F exp_poly(F r) {
  F q = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
  q = q * r + 1.0f / 120.0f;
  q = q * r + 1.0f / 24.0f;
  q = q * r + 1.0f / 6.0f;
  q = q * r + 0.5f;
  q = q * r + 1.0f;
  return q * r + 1.0f;
}

// Scalar exp with the same algorithm as the vector one (used for tails of H).
HSAFAST_SIMD_INLINE float fast_exp(float x) {
  x = x < kExpLo ? kExpLo : (x > kExpHi ? kExpHi : x);
  const float t = x * kLog2e + kRoundMagic;
  const float n = t - kRoundMagic;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  const float q = exp_poly(r);
  int32_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  const int32_t eb = (tb - 0x4B400000 + 127) << 23;
  float scale;
  std::memcpy(&scale, &eb, sizeof scale);
  return q * scale;
}

// tanh(zv) * sigmoid(zu) = (E2 - 1) / ((E2 + 1) (1 + E1)), E2 = exp(2 zv), E1 = exp(-zu): one
// division instead of two. The clamps keep the denominator finite; they change nothing in
// float32, where tanh(10) and sigmoid(30) already round to 1.
constexpr float kTanhClamp = 20.0f;    // on 2 zv
constexpr float kSigmoidClamp = 30.0f;  // on -zu

HSAFAST_SIMD_INLINE float gate(float zv, float zu) {
  float x2 = 2.0f * zv;
  x2 = x2 < -kTanhClamp ? -kTanhClamp : (x2 > kTanhClamp ? kTanhClamp : x2);
  float nu = -zu;
  nu = nu < -kSigmoidClamp ? -kSigmoidClamp : (nu > kSigmoidClamp ? kSigmoidClamp : nu);
  const float e2 = fast_exp(x2);
  return (e2 - 1.0f) / ((e2 + 1.0f) * (1.0f + fast_exp(nu)));
}

// Vectors of L floats: each SIMD path uses its register width (4 lanes baseline, 8 AVX2,
// 16 AVX-512). A wider vector than the target has would be split by the compiler, and
// its compares and selects split into single lanes.
template <int L>
struct Lanes;
template <>
struct Lanes<4> {
  typedef float f __attribute__((vector_size(16)));
  typedef int32_t i __attribute__((vector_size(16)));
};
template <>
struct Lanes<8> {
  typedef float f __attribute__((vector_size(32)));
  typedef int32_t i __attribute__((vector_size(32)));
};
template <>
struct Lanes<16> {
  typedef float f __attribute__((vector_size(64)));
  typedef int32_t i __attribute__((vector_size(64)));
};

template <int L>
HSAFAST_SIMD_INLINE typename Lanes<L>::f vload(const float* p) {
  typename Lanes<L>::f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <int L, typename V = typename Lanes<L>::f>
HSAFAST_SIMD_INLINE V vclamp(V x, float lo, float hi) {
  x = x < lo ? V{} + lo : x;
  return x > hi ? V{} + hi : x;
}

template <int L, typename V = typename Lanes<L>::f>
HSAFAST_SIMD_INLINE V vexp(V x) {
  using VI = typename Lanes<L>::i;
  x = vclamp<L>(x, kExpLo, kExpHi);
  const V t = x * kLog2e + kRoundMagic;
  const V n = t - kRoundMagic;
  V r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  const V q = exp_poly(r);
  const VI eb = ((VI)t - 0x4B400000 + 127) << 23;
  return q * (V)eb;
}

template <int L, typename V = typename Lanes<L>::f>
HSAFAST_SIMD_INLINE V vgate(V zv, V zu) {
  const V e2 = vexp<L>(vclamp<L>(2.0f * zv, -kTanhClamp, kTanhClamp));
  const V e1 = vexp<L>(vclamp<L>(-zu, -kSigmoidClamp, kSigmoidClamp));
  return (e2 - 1.0f) / ((e2 + 1.0f) * (1.0f + e1));
}

template <int L>
HSAFAST_SIMD_INLINE float row_logit(const float* z, const GateParams& p) {
  const int64_t H = p.hidden;
  int64_t j = 0;
  typename Lanes<L>::f acc{};
  for (; j + L <= H; j += L) {
    const auto zv = vload<L>(z + j) + vload<L>(p.bias_v + j);
    const auto zu = vload<L>(z + H + j) + vload<L>(p.bias_u + j);
    acc += vgate<L>(zv, zu) * vload<L>(p.w + j);
  }
  float total = 0.0f;
  for (int l = 0; l < L; ++l) total += acc[l];
  for (; j < H; ++j) total += gate(z[j] + p.bias_v[j], z[H + j] + p.bias_u[j]) * p.w[j];
  return total + p.bias_w;
}

constexpr int64_t kRowBlock = 32;  // rows whose logits are computed before their h rows are summed
constexpr int64_t kMinRowsPerTask = 64;

// acc(float64) += sum of e[i] * row i of h over one block of rows. The block's sum runs in
// float32 (block_sum, D floats that stay in L1) and reaches acc once per block: float32 SIMD
// is twice as wide as float64 and needs no conversions, and a block is too short for float32
// rounding to matter (32 terms, each e <= 1), while acc keeps float64 over the whole bag.
HSAFAST_SIMD_INLINE void add_weighted_rows(const float* h, int64_t ldh, const double* e, int64_t rows, int64_t D,
                       float* block_sum, double* acc) {
  std::fill(block_sum, block_sum + D, 0.0f);
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {  // four rows per pass over block_sum: a quarter of its traffic
    const float e0 = static_cast<float>(e[i]), e1 = static_cast<float>(e[i + 1]);
    const float e2 = static_cast<float>(e[i + 2]), e3 = static_cast<float>(e[i + 3]);
    const float* h0 = h + i * ldh;
    const float* h1 = h0 + ldh;
    const float* h2 = h1 + ldh;
    const float* h3 = h2 + ldh;
    for (int64_t d = 0; d < D; ++d)
      block_sum[d] += (e0 * h0[d] + e1 * h1[d]) + (e2 * h2[d] + e3 * h3[d]);
  }
  for (; i < rows; ++i) {
    const float ei = static_cast<float>(e[i]);
    const float* hr = h + i * ldh;
    for (int64_t d = 0; d < D; ++d) block_sum[d] += ei * hr[d];
  }
  for (int64_t d = 0; d < D; ++d) acc[d] += static_cast<double>(block_sum[d]);
}

// Pools rows [r0, r1) into a fresh state part = [m, s, acc(D)]; false on a non-finite logit.
template <int L>
HSAFAST_SIMD_INLINE bool pool_rows(const PoolChunk& c, const GateParams& p, int64_t r0,
                                   int64_t r1, double* part, float* logits) {
  const int64_t D = c.dim;
  double m = -std::numeric_limits<double>::infinity();
  double s = 0.0;
  double* acc = part + 2;
  std::fill(acc, acc + D, 0.0);
  std::vector<float> block_sum(static_cast<size_t>(D));
  double e[kRowBlock];
  for (int64_t b0 = r0; b0 < r1; b0 += kRowBlock) {
    const int64_t b1 = std::min(r1, b0 + kRowBlock);
    double block_max = -std::numeric_limits<double>::infinity();
    for (int64_t i = b0; i < b1; ++i) {
      const float a = row_logit<L>(c.z + i * c.ldz, p);
      if (!std::isfinite(a)) return false;
      logits[i] = a;
      block_max = std::max(block_max, static_cast<double>(a));
    }
    if (block_max > m) {
      const double scale = std::exp(m - block_max);  // exp(-inf) == 0 for the first block
      s *= scale;
      for (int64_t d = 0; d < D; ++d) acc[d] *= scale;
      m = block_max;
    }
    for (int64_t i = b0; i < b1; ++i) {
      e[i - b0] = std::exp(static_cast<double>(logits[i]) - m);
      s += e[i - b0];
    }
    add_weighted_rows(c.h + b0 * c.ldh, c.ldh, e, b1 - b0, D, block_sum.data(), acc);
  }
  part[0] = m;
  part[1] = s;
  return true;
}

template <int L>
HSAFAST_SIMD_INLINE void logit_rows(const PoolChunk& c, const GateParams& p, int64_t r0,
                                    int64_t r1, float* logits) {
  for (int64_t i = r0; i < r1; ++i) logits[i] = row_logit<L>(c.z + i * c.ldz, p);
}

// The row loops of each SIMD path (simd.hpp), at its vector width.
bool pool_rows_scalar(const PoolChunk& c, const GateParams& p, int64_t r0, int64_t r1,
                      double* part, float* logits) {
  return pool_rows<4>(c, p, r0, r1, part, logits);
}
HSAFAST_TARGET_AVX2 bool pool_rows_avx2(const PoolChunk& c, const GateParams& p, int64_t r0,
                                        int64_t r1, double* part, float* logits) {
  return pool_rows<8>(c, p, r0, r1, part, logits);
}
HSAFAST_TARGET_AVX512 bool pool_rows_avx512(const PoolChunk& c, const GateParams& p, int64_t r0,
                                            int64_t r1, double* part, float* logits) {
  return pool_rows<16>(c, p, r0, r1, part, logits);
}

void logit_rows_scalar(const PoolChunk& c, const GateParams& p, int64_t r0, int64_t r1,
                       float* logits) {
  logit_rows<4>(c, p, r0, r1, logits);
}
HSAFAST_TARGET_AVX2 void logit_rows_avx2(const PoolChunk& c, const GateParams& p, int64_t r0,
                                         int64_t r1, float* logits) {
  logit_rows<8>(c, p, r0, r1, logits);
}
HSAFAST_TARGET_AVX512 void logit_rows_avx512(const PoolChunk& c, const GateParams& p, int64_t r0,
                                             int64_t r1, float* logits) {
  logit_rows<16>(c, p, r0, r1, logits);
}

bool all_finite(const double* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

}  // namespace

void gated_logits(const PoolChunk& c, const GateParams& p, float* logits) {
  const auto rows = simd::select(logit_rows_scalar, logit_rows_avx2, logit_rows_avx512);
  parallel_for(c.rows, kMinRowsPerTask, [&](int64_t b, int64_t e) { rows(c, p, b, e, logits); });
}

void merge_pool_states(double* a, const double* b, int64_t dim) {
  if (b[1] == 0.0) return;
  if (a[1] == 0.0) {
    std::copy(b, b + dim + 2, a);
    return;
  }
  const double m = std::max(a[0], b[0]);
  const double sa = std::exp(a[0] - m);
  const double sb = std::exp(b[0] - m);
  a[0] = m;
  a[1] = a[1] * sa + b[1] * sb;
  for (int64_t d = 0; d < dim; ++d) a[2 + d] = a[2 + d] * sa + b[2 + d] * sb;
}

bool pool_chunk(const PoolChunk& c, const GateParams& p, double* state, float* logits) {
  if (c.rows <= 0) return true;
  const int64_t D = c.dim;
  std::vector<float> own_logits;
  if (logits == nullptr) {
    own_logits.resize(static_cast<size_t>(c.rows));
    logits = own_logits.data();
  }
  const int64_t tasks = std::max<int64_t>(
      1, std::min<int64_t>(get_num_threads(), c.rows / kMinRowsPerTask));
  std::vector<double> parts(static_cast<size_t>(tasks * (D + 2)));
  std::vector<char> ok(static_cast<size_t>(tasks), 1);
  const auto pool = simd::select(pool_rows_scalar, pool_rows_avx2, pool_rows_avx512);
  parallel_for(tasks, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t r0 = c.rows * t / tasks;
      const int64_t r1 = c.rows * (t + 1) / tasks;
      double* part = parts.data() + t * (D + 2);
      ok[static_cast<size_t>(t)] = pool(c, p, r0, r1, part, logits) && all_finite(part + 1, D + 1);
    }
  });
  for (char flag : ok)
    if (!flag) return false;
  std::vector<double> merged(state, state + D + 2);
  for (int64_t t = 0; t < tasks; ++t) merge_pool_states(merged.data(), parts.data() + t * (D + 2), D);
  if (!all_finite(merged.data() + 1, D + 1)) return false;
  std::copy(merged.begin(), merged.end(), state);
  return true;
}

}  // namespace hsafast
