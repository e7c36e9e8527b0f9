// Fused gated-attention pooling on the GPU: bf16/fp16 inputs, fp32 accumulation.
//
// Projection h @ [V; U]^T, either
//  - "tensor cores": gate_logits, each block takes 128 rows of h and 64 hidden units, computes
//    the 128 x 128 tile [V h | U h] on tensor cores (WMMA 16x16x16, double-buffered cp.async
//    over D), then in its epilogue adds the biases, applies tanh and sigmoid, multiplies them
//    and projects onto w, leaving one partial logit per (row, 64-unit slab). The slab index
//    varies fastest across blocks, so the blocks that share rows run together and share h in L2;
//  - or the caller passes Z = h @ [V; U]^T from its own GEMM (cuBLAS through PyTorch).
//
// Epilogue, two implementations (PoolArgs::epilogue):
//  - one-pass (1): pool_partials gives each block a contiguous run of rows (a few hundred, so
//    that the grid is about four blocks per SM); it computes the rows' logits (from Z with
//    16-byte loads, one warp per row, or by summing the slabs), the block's max m_b,
//    s_b = sum exp(a - m_b) and acc_b = sum exp(a - m_b) h_i, reading each row of h once with
//    16-byte loads. merge_parts then rescales the few hundred block states to the global max in
//    parallel over D (32 columns x 32 warps per block), writes the float64 state and, on
//    request, the pooled float32 vector and a non-finite flag; softmax_weights turns logits
//    into weights on request.
//  - three-kernel (0), the first version: logits_from_projection (one warp per row, scalar
//    loads), softmax_partial over 128-row blocks, merge_partials (one block per 256 columns,
//    looping over all partials); finalize_state then writes the pooled vector and the flag.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <atomic>

#include "cuda/pooling_cuda.hpp"

namespace hsafast::cuda {

namespace {

using namespace nvcuda;

constexpr int kBM = 128;          // rows of h per block
constexpr int kBH = 64;           // hidden units per block (V and U: 128 output columns)
constexpr int kBN = 2 * kBH;      // output columns per block
constexpr int kBK = 32;           // depth of one smem stage
constexpr int kPitch = kBK + 8;   // smem row pitch in elements (keeps WMMA pointers aligned)
constexpr int kThreads = 256;     // 8 warps: 4 along rows x 2 along hidden units
constexpr int kSoftRows = 128;    // rows per softmax-partial block
constexpr int64_t kAlign = 256;   // workspace sub-buffer alignment in bytes

static_assert(kBM * kBK / 8 == 2 * kThreads, "each thread stages two 16-byte chunks of h");
static_assert(kBN * kBK / 8 == 2 * kThreads, "each thread stages two 16-byte chunks of W");

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}

// 8 consecutive elements [k, k + 8) of row `row` of a (rows x cols, pitch ld) matrix, zero
// outside it. kVec: the caller guarantees 16-byte alignment and cols % 8 == 0.
template <typename T, bool kVec>
__device__ __forceinline__ uint4 load8(const T* base, int64_t ld, int64_t row, int64_t rows,
                                       int64_t k, int64_t cols) {
  uint4 out = make_uint4(0u, 0u, 0u, 0u);
  if (row >= rows) return out;
  const T* p = base + row * ld + k;
  if (kVec) {
    if (k < cols) out = *reinterpret_cast<const uint4*>(p);
  } else {  // 16-bit words packed in pairs; a zero word is +0.0 in both bf16 and fp16
    const auto* q = reinterpret_cast<const uint16_t*>(p);
    uint32_t words[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const uint32_t lo = (k + 2 * e < cols) ? q[2 * e] : 0u;
      const uint32_t hi = (k + 2 * e + 1 < cols) ? q[2 * e + 1] : 0u;
      words[e] = lo | (hi << 16);
    }
    out = make_uint4(words[0], words[1], words[2], words[3]);
  }
  return out;
}

// 16-byte asynchronous copy global -> shared (sm_80+); zero-fills when !valid.
__device__ __forceinline__ void cp_async16(void* smem_ptr, const void* gmem_ptr, bool valid) {
  const auto saddr = static_cast<unsigned>(__cvta_generic_to_shared(smem_ptr));
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(gmem_ptr),
               "r"(src_size));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

// Two blocks per SM on the fast path; the scalar-load fallback gets the registers it wants.
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads, kVec ? 2 : 1)
    gate_logits(const T* __restrict__ h, int64_t ldh, int64_t n, int64_t dim,
                const T* __restrict__ weights, const float* __restrict__ bias_v,
                const float* __restrict__ bias_u, const float* __restrict__ w, int64_t hidden,
                int slabs, float* __restrict__ partial) {
  __shared__ __align__(128) T smem[2][(kBM + kBN) * kPitch];
  __shared__ float slab_sum[2][kBM];

  const int slab = static_cast<int>(blockIdx.x % slabs);
  const int64_t tile = blockIdx.x / slabs;
  const int64_t row0 = tile * kBM;
  const int64_t j0 = static_cast<int64_t>(slab) * kBH;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int warp_m = warp % 4;  // rows warp_m * 32 .. + 32
  const int warp_n = warp / 4;  // hidden units j0 + warp_n * 32 .. + 32

  // Chunk c (0..511) of a tile is row c / 4, columns (c % 4) * 8 .. + 8. Output column r of
  // the block is V row j0 + r for r < 64, else U row j0 + r - 64 (row H + j0 + r - 64 of W).
  // kVec: cp.async straight into shared memory; otherwise staged through registers.
  uint4 stage_a[kVec ? 1 : 2], stage_b[kVec ? 1 : 2];
  auto fetch_tile = [&](int64_t k0, int buf) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int c = tid + i * kThreads;
      const int r = c / 4;
      const int kc = (c % 4) * 8;
      const int64_t k = k0 + kc;
      const int64_t unit = j0 + (r < kBH ? r : r - kBH);
      const int64_t wrow = (r < kBH ? 0 : hidden) + unit;
      if constexpr (kVec) {
        const bool a_ok = row0 + r < n && k < dim;
        const bool b_ok = unit < hidden && k < dim;
        cp_async16(&smem[buf][r * kPitch + kc], a_ok ? h + (row0 + r) * ldh + k : h, a_ok);
        cp_async16(&smem[buf][(kBM + r) * kPitch + kc], b_ok ? weights + wrow * dim + k : weights,
                   b_ok);
      } else {
        stage_a[i] = load8<T, false>(h, ldh, row0 + r, n, k, dim);
        stage_b[i] = unit < hidden ? load8<T, false>(weights, dim, wrow, 2 * hidden, k, dim)
                                   : make_uint4(0u, 0u, 0u, 0u);
      }
    }
    if constexpr (kVec) cp_async_commit();
  };
  // Completes the fetch of tile `buf`: waits for the copies, or stores the staged registers.
  auto land_tile = [&](int buf) {
    if constexpr (kVec) {
      cp_async_wait_all();
    } else {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int c = tid + i * kThreads;
        const int r = c / 4;
        const int kc = (c % 4) * 8;
        *reinterpret_cast<uint4*>(&smem[buf][r * kPitch + kc]) = stage_a[i];
        *reinterpret_cast<uint4*>(&smem[buf][(kBM + r) * kPitch + kc]) = stage_b[i];
      }
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_v[2][2], acc_u[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::fill_fragment(acc_v[i][j], 0.0f);
      wmma::fill_fragment(acc_u[i][j], 0.0f);
    }

  const int64_t k_tiles = (dim + kBK - 1) / kBK;
  fetch_tile(0, 0);
  land_tile(0);
  __syncthreads();
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    const int buf = static_cast<int>(kt & 1);
    if (kt + 1 < k_tiles) fetch_tile((kt + 1) * kBK, buf ^ 1);
    const T* a_s = smem[buf];
    const T* b_s = smem[buf] + kBM * kPitch;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fv[2], fu[2];
#pragma unroll
      for (int i = 0; i < 2; ++i)
        wmma::load_matrix_sync(fa[i], a_s + (warp_m * 32 + i * 16) * kPitch + kk, kPitch);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::load_matrix_sync(fv[j], b_s + (warp_n * 32 + j * 16) * kPitch + kk, kPitch);
        wmma::load_matrix_sync(fu[j], b_s + (kBH + warp_n * 32 + j * 16) * kPitch + kk, kPitch);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::mma_sync(acc_v[i][j], fa[i], fv[j], acc_v[i][j]);
          wmma::mma_sync(acc_u[i][j], fa[i], fu[j], acc_u[i][j]);
        }
    }
    if (kt + 1 < k_tiles) land_tile(buf ^ 1);
    __syncthreads();
  }

  // Epilogue: each warp stages one 16 x 16 V tile and the matching U tile at a time in
  // (now free) shared memory; lane pairs own a row, 8 hidden units each.
  float* stage = reinterpret_cast<float*>(&smem[0][0]) + warp * 2 * 256;
  const int er = lane / 2;
  const int ec = (lane % 2) * 8;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(stage, acc_v[i][j], 16, wmma::mem_row_major);
      wmma::store_matrix_sync(stage + 256, acc_u[i][j], 16, wmma::mem_row_major);
      __syncwarp();
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const int64_t unit = j0 + warp_n * 32 + j * 16 + ec + c;
        if (unit < hidden) {
          const float zv = stage[er * 16 + ec + c] + __ldg(bias_v + unit);
          const float zu = stage[256 + er * 16 + ec + c] + __ldg(bias_u + unit);
          const float gate = tanhf(zv) * (1.0f / (1.0f + __expf(-zu)));
          sum = fmaf(gate, __ldg(w + unit), sum);
        }
      }
      __syncwarp();
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    if (lane % 2 == 0) slab_sum[warp_n][warp_m * 32 + i * 16 + er] = sum;
  }
  __syncthreads();
  if (tid < kBM) {
    const int64_t row = row0 + tid;
    if (row < n) partial[static_cast<int64_t>(slab) * n + row] = slab_sum[0][tid] + slab_sum[1][tid];
  }
}

// Gate epilogue from a precomputed projection Z (one warp per row): the partial logit of the
// row's only "slab", w . (tanh(zv + bv) * sigmoid(zu + bu)); b_w is added by softmax_partial.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    logits_from_projection(const T* __restrict__ z, int64_t ldz, int64_t n,
                           const float* __restrict__ bias_v, const float* __restrict__ bias_u,
                           const float* __restrict__ w, int64_t hidden, float* __restrict__ partial) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
       row < n; row += warps) {
    const T* zr = z + row * ldz;
    float sum = 0.0f;
    for (int64_t j = lane; j < hidden; j += 32) {
      const float zv = to_float(zr[j]) + __ldg(bias_v + j);
      const float zu = to_float(zr[hidden + j]) + __ldg(bias_u + j);
      sum = fmaf(tanhf(zv) * (1.0f / (1.0f + __expf(-zu))), __ldg(w + j), sum);
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) partial[row] = sum;
  }
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float out = scratch[0];
  for (int i = 1; i < static_cast<int>(blockDim.x / 32); ++i) out = fmaxf(out, scratch[i]);
  __syncthreads();
  return out;
}

template <typename V>
__device__ __forceinline__ V block_sum(V v, V* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  V out = scratch[0];
  for (int i = 1; i < static_cast<int>(blockDim.x / 32); ++i) out += scratch[i];
  __syncthreads();
  return out;
}

// kVec consecutive elements at src as floats: one 16-byte load for kVec == 8 (src aligned).
template <typename T, int kVec>
__device__ __forceinline__ void load_row(const T* src, float* out) {
  if constexpr (kVec == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src);
    const T* vals = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = to_float(vals[e]);
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e) out[e] = to_float(src[e]);
  }
}

// Per block of kSoftRows rows: logits, local max, sum of exponentials and weighted sum.
// kVec: 8 columns per thread with 16-byte loads (aligned rows, dim % 8 == 0), else 1.
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    softmax_partial(const T* __restrict__ h, int64_t ldh, int64_t n, int64_t dim,
                    const float* __restrict__ partial, int slabs, float bias_w,
                    float* __restrict__ logits, float* __restrict__ parts) {
  __shared__ float p[kSoftRows];
  __shared__ float scratch[kThreads / 32];
  __shared__ float red[kThreads * kVec];
  const int tid = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kSoftRows;
  const int rows = static_cast<int>(n - row0 < kSoftRows ? n - row0 : kSoftRows);

  float a = -INFINITY;
  if (tid < rows) {
    a = bias_w;
    for (int s = 0; s < slabs; ++s) a += partial[static_cast<int64_t>(s) * n + row0 + tid];
    if (logits != nullptr) logits[row0 + tid] = a;
  }
  const float m = block_max(a, scratch);
  const float e = tid < rows ? expf(a - m) : 0.0f;
  if (tid < kSoftRows) p[tid] = e;
  const float s = block_sum(e, scratch);  // also orders the writes to p before their reads

  float* out = parts + static_cast<int64_t>(blockIdx.x) * (dim + 2);
  if (tid == 0) {
    out[0] = m;
    out[1] = s;
  }
  const int64_t groups = dim / kVec;
  if (groups >= kThreads) {
    for (int64_t g = tid; g < groups; g += kThreads) {
      float acc[kVec] = {};
      for (int i = 0; i < rows; ++i) {
        float vals[kVec];
        load_row<T, kVec>(h + (row0 + i) * ldh + g * kVec, vals);
        const float pi = p[i];
#pragma unroll
        for (int e2 = 0; e2 < kVec; ++e2) acc[e2] = fmaf(pi, vals[e2], acc[e2]);
      }
#pragma unroll
      for (int e2 = 0; e2 < kVec; ++e2) out[2 + g * kVec + e2] = acc[e2];
    }
    return;
  }
  // Fewer column groups than threads: split the rows too, then reduce through shared memory.
  const int g_count = static_cast<int>(groups);
  const int splits = kThreads / g_count;
  const int split = tid / g_count;
  const int g = tid % g_count;
  float acc[kVec] = {};
  if (split < splits) {
    for (int i = split; i < rows; i += splits) {
      float vals[kVec];
      load_row<T, kVec>(h + (row0 + i) * ldh + static_cast<int64_t>(g) * kVec, vals);
      const float pi = p[i];
#pragma unroll
      for (int e2 = 0; e2 < kVec; ++e2) acc[e2] = fmaf(pi, vals[e2], acc[e2]);
    }
#pragma unroll
    for (int e2 = 0; e2 < kVec; ++e2) red[(split * g_count + g) * kVec + e2] = acc[e2];
  }
  __syncthreads();
  for (int c = tid; c < g_count * kVec; c += kThreads) {
    float total = 0.0f;
    for (int sp = 0; sp < splits; ++sp) total += red[sp * g_count * kVec + c];
    out[2 + c] = total;
  }
}

// Rescales every block's (m_b, s_b, acc_b) to the global max and sums them in float64.
__global__ void __launch_bounds__(kThreads)
    merge_partials(const float* __restrict__ parts, int64_t blocks, int64_t dim,
                   double* __restrict__ state) {
  __shared__ float scratch[kThreads / 32];
  __shared__ double dscratch[kThreads / 32];
  __shared__ double scale[kThreads];
  const int tid = threadIdx.x;
  const int64_t stride = dim + 2;
  float m = -INFINITY;
  for (int64_t b = tid; b < blocks; b += kThreads) m = fmaxf(m, parts[b * stride]);
  m = block_max(m, scratch);
  double s = 0.0;
  for (int64_t b = tid; b < blocks; b += kThreads)
    s += static_cast<double>(parts[b * stride + 1]) * exp(static_cast<double>(parts[b * stride]) - m);
  s = block_sum(s, dscratch);

  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + tid;
  double acc = 0.0;
  for (int64_t b0 = 0; b0 < blocks; b0 += kThreads) {
    if (b0 + tid < blocks) scale[tid] = exp(static_cast<double>(parts[(b0 + tid) * stride]) - m);
    __syncthreads();
    const int64_t count = blocks - b0 < kThreads ? blocks - b0 : kThreads;
    if (d < dim)
      for (int64_t j = 0; j < count; ++j) acc += scale[j] * parts[(b0 + j) * stride + 2 + d];
    __syncthreads();
  }
  if (d < dim) state[2 + d] = acc;
  if (blockIdx.x == 0 && tid == 0) {
    state[0] = m;
    state[1] = s;
  }
}

// ---- one-pass epilogue -------------------------------------------------------------------

constexpr int kPartThreads = 256;  // 8 warps
constexpr int kPartWarps = kPartThreads / 32;
constexpr int kPartBlocksPerSm = 4;  // grid target; 4 x 256 threads fit one SM at <= 64 regs
constexpr int kPartMinRows = 64;     // rows per block never fall below this (workspace bound)
constexpr int kPartMaxRows = 1024;   // nor exceed this (shared memory of the block's weights)
constexpr int kMergeThreads = 1024;  // 32 warps over the block partials
constexpr int kMergeCols = 32;       // one column per lane

__device__ __forceinline__ float gate(float zv, float zu) {
  return tanhf(zv) * (1.0f / (1.0f + __expf(-zu)));
}

// sum over e of w[j + e] * gate(zv[e] + bv[j + e], zu[e] + bu[j + e]) for 8 packed units.
template <typename T>
__device__ __forceinline__ float gate_dot8(uint4 rv, uint4 ru, const float* __restrict__ bias_v,
                                           const float* __restrict__ bias_u,
                                           const float* __restrict__ w, int64_t j, float sum) {
  const T* v = reinterpret_cast<const T*>(&rv);
  const T* u = reinterpret_cast<const T*>(&ru);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float zv = to_float(v[e]) + __ldg(bias_v + j + e);
    const float zu = to_float(u[e]) + __ldg(bias_u + j + e);
    sum = fmaf(gate(zv, zu), __ldg(w + j + e), sum);
  }
  return sum;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// acc[e] += p[i] * h[i][e] over rows i = begin, begin + step, ... < end of the column group at
// `col` (kVec elements; kVec == 8: one 16-byte load per row). Four rows' loads are issued
// before their products, so each thread keeps four loads in flight.
template <typename T, int kVec>
__device__ __forceinline__ void weighted_rows(const T* __restrict__ col, int64_t ldh,
                                              const float* p, int begin, int end, int step,
                                              float* acc) {
  using Raw = typename std::conditional<kVec == 8, uint4, T>::type;
  static_assert(sizeof(Raw) == kVec * sizeof(T), "one raw load per row");
  int i = begin;
  for (; i + 3 * step < end; i += 4 * step) {
    Raw raw[4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
      raw[r] = *reinterpret_cast<const Raw*>(col + static_cast<int64_t>(i + r * step) * ldh);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const float pr = p[i + r * step];
      const T* vals = reinterpret_cast<const T*>(&raw[r]);
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[e] = fmaf(pr, to_float(vals[e]), acc[e]);
    }
  }
  for (; i < end; i += step) {
    const Raw raw = *reinterpret_cast<const Raw*>(col + static_cast<int64_t>(i) * ldh);
    const float pr = p[i];
    const T* vals = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc[e] = fmaf(pr, to_float(vals[e]), acc[e]);
  }
}

// Logit sources of pool_partials.
constexpr int kFromSlabs = 0;  // sum of gate_logits' per-slab partials
constexpr int kFromZ = 1;      // gate epilogue on Z, scalar loads
constexpr int kFromZVec = 2;   // gate epilogue on Z, 16-byte loads (hidden % 8 == 0, aligned)

// One block: rows [row0, row0 + rows_per_block) of the bag. Writes [m_b, s_b, acc_b(dim)] to
// parts row blockIdx.x, and the rows' logits when `logits` is not null.
// kVec: 8 columns of h per thread with 16-byte loads (aligned rows, dim % 8 == 0), else 1.
template <typename T, int kVec, int kSource>
__global__ void __launch_bounds__(kPartThreads, kPartBlocksPerSm)
    pool_partials(const T* __restrict__ h, int64_t ldh, int64_t n, int64_t dim,
                  const float* __restrict__ slab_logits, int slabs, const T* __restrict__ z,
                  int64_t ldz, const float* __restrict__ bias_v, const float* __restrict__ bias_u,
                  const float* __restrict__ w, int64_t hidden, float bias_w, int rows_per_block,
                  float* __restrict__ logits, float* __restrict__ parts) {
  __shared__ float p[kPartMaxRows];
  __shared__ float scratch[kPartWarps];
  __shared__ float red[kPartThreads * kVec];
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int rows = static_cast<int>(n - row0 < rows_per_block ? n - row0 : rows_per_block);

  // 1. logits of the block's rows into p (and out to `logits`)
  if constexpr (kSource == kFromSlabs) {
    for (int i = tid; i < rows; i += kPartThreads) {
      float a = bias_w;
      for (int s = 0; s < slabs; ++s) a += slab_logits[static_cast<int64_t>(s) * n + row0 + i];
      p[i] = a;
      if (logits != nullptr) logits[row0 + i] = a;
    }
  } else if constexpr (kSource == kFromZVec) {
    // a warp per row, two rows per iteration (i and i + kPartWarps) for loads in flight
    for (int i = warp; i < rows; i += 2 * kPartWarps) {
      const int i2 = i + kPartWarps;
      const bool two = i2 < rows;
      const T* z1 = z + (row0 + i) * ldz;
      const T* z2 = z + (row0 + (two ? i2 : i)) * ldz;
      float s1 = 0.0f, s2 = 0.0f;
      for (int64_t j = lane * 8; j < hidden; j += 256) {
        const uint4 v1 = *reinterpret_cast<const uint4*>(z1 + j);
        const uint4 u1 = *reinterpret_cast<const uint4*>(z1 + hidden + j);
        const uint4 v2 = *reinterpret_cast<const uint4*>(z2 + j);
        const uint4 u2 = *reinterpret_cast<const uint4*>(z2 + hidden + j);
        s1 = gate_dot8<T>(v1, u1, bias_v, bias_u, w, j, s1);
        s2 = gate_dot8<T>(v2, u2, bias_v, bias_u, w, j, s2);
      }
      s1 = warp_sum(s1);
      s2 = warp_sum(s2);
      if (lane == 0) {
        p[i] = bias_w + s1;
        if (logits != nullptr) logits[row0 + i] = bias_w + s1;
        if (two) {
          p[i2] = bias_w + s2;
          if (logits != nullptr) logits[row0 + i2] = bias_w + s2;
        }
      }
    }
  } else {
    for (int i = warp; i < rows; i += kPartWarps) {
      const T* zr = z + (row0 + i) * ldz;
      float sum = 0.0f;
      for (int64_t j = lane; j < hidden; j += 32)
        sum = fmaf(gate(to_float(zr[j]) + __ldg(bias_v + j), to_float(zr[hidden + j]) + __ldg(bias_u + j)),
                   __ldg(w + j), sum);
      sum = warp_sum(sum);
      if (lane == 0) {
        p[i] = bias_w + sum;
        if (logits != nullptr) logits[row0 + i] = bias_w + sum;
      }
    }
  }
  __syncthreads();

  // 2. block max, exponentials (in place) and their sum; NaN logits make s NaN
  float m_local = -INFINITY;
  for (int i = tid; i < rows; i += kPartThreads) m_local = fmaxf(m_local, p[i]);
  const float m = block_max(m_local, scratch);
  float s_local = 0.0f;
  for (int i = tid; i < rows; i += kPartThreads) {
    const float e = expf(p[i] - m);
    p[i] = e;
    s_local += e;
  }
  const float s = block_sum(s_local, scratch);  // its barriers order the writes to p

  // 3. weighted sum of the rows of h, each row read once, 16-byte loads along D
  float* out = parts + static_cast<int64_t>(blockIdx.x) * (dim + 2);
  if (tid == 0) {
    out[0] = m;
    out[1] = s;
  }
  const T* hb = h + row0 * ldh;
  const int64_t groups = dim / kVec;
  if (groups >= kPartThreads) {
    for (int64_t g = tid; g < groups; g += kPartThreads) {
      float acc[kVec] = {};
      weighted_rows<T, kVec>(hb + g * kVec, ldh, p, 0, rows, 1, acc);
#pragma unroll
      for (int e = 0; e < kVec; ++e) out[2 + g * kVec + e] = acc[e];
    }
    return;
  }
  // Fewer column groups than threads: split the rows too, then reduce through shared memory.
  const int g_count = static_cast<int>(groups);
  const int splits = kPartThreads / g_count;
  const int split = tid / g_count;
  const int g = tid % g_count;
  if (split < splits) {
    float acc[kVec] = {};
    weighted_rows<T, kVec>(hb + static_cast<int64_t>(g) * kVec, ldh, p, split, rows, splits, acc);
#pragma unroll
    for (int e = 0; e < kVec; ++e) red[(split * g_count + g) * kVec + e] = acc[e];
  }
  __syncthreads();
  for (int c = tid; c < g_count * kVec; c += kPartThreads) {
    float total = 0.0f;
    for (int sp = 0; sp < splits; ++sp) total += red[sp * g_count * kVec + c];
    out[2 + c] = total;
  }
}

// Rescales the block states to the global max and sums them in float64: block x owns columns
// [32 x, 32 x + 32) (a lane each), its 32 warps split the block states. Every block also
// derives m and s (a few hundred values), so that it can write pooled = acc / s; status gets
// bit 0 set when anything is not finite.
__global__ void __launch_bounds__(kMergeThreads)
    merge_parts(const float* __restrict__ parts, int64_t blocks, int64_t dim,
                double* __restrict__ state, float* __restrict__ pooled, int* __restrict__ status) {
  __shared__ float scratch[kMergeThreads / 32];
  __shared__ double dscratch[kMergeThreads / 32];
  __shared__ double scale[kMergeThreads];
  __shared__ double red[kMergeThreads / 32][kMergeCols + 1];
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int64_t stride = dim + 2;
  float m_local = -INFINITY;
  for (int64_t b = tid; b < blocks; b += kMergeThreads) m_local = fmaxf(m_local, parts[b * stride]);
  const float m = block_max(m_local, scratch);

  const int64_t d = static_cast<int64_t>(blockIdx.x) * kMergeCols + lane;
  double acc = 0.0;
  double s_local = 0.0;
  for (int64_t b0 = 0; b0 < blocks; b0 += kMergeThreads) {
    const int count = static_cast<int>(blocks - b0 < kMergeThreads ? blocks - b0 : kMergeThreads);
    if (tid < count) {
      const double sc = exp(static_cast<double>(parts[(b0 + tid) * stride]) - m);
      scale[tid] = sc;
      s_local += static_cast<double>(parts[(b0 + tid) * stride + 1]) * sc;
    }
    __syncthreads();
    if (d < dim) {
      const float* col = parts + b0 * stride + 2 + d;
#pragma unroll 4
      for (int j = warp; j < count; j += 32) acc += scale[j] * col[j * stride];
    }
    __syncthreads();
  }
  const double s = block_sum(s_local, dscratch);
  red[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && d < dim) {
    double total = 0.0;
    for (int k = 0; k < kMergeThreads / 32; ++k) total += red[k][lane];
    state[2 + d] = total;
    if (pooled != nullptr) pooled[d] = static_cast<float>(total / s);
    if (status != nullptr && !isfinite(total)) atomicOr(status, 1);
  }
  if (blockIdx.x == 0 && tid == 0) {
    state[0] = m;
    state[1] = s;
    if (status != nullptr && !(isfinite(m) && isfinite(s))) atomicOr(status, 1);
  }
}

// pooled = acc / s and the non-finite flag from a finished state (three-kernel epilogue).
__global__ void __launch_bounds__(kThreads)
    finalize_state(const double* __restrict__ state, int64_t dim, float* __restrict__ pooled,
                   int* __restrict__ status) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (d < dim) {
    const double v = state[2 + d];
    if (pooled != nullptr) pooled[d] = static_cast<float>(v / state[1]);
    if (status != nullptr && !isfinite(v)) atomicOr(status, 1);
  }
  if (d == 0 && status != nullptr && !(isfinite(state[0]) && isfinite(state[1])))
    atomicOr(status, 1);
}

// weights_i = exp(a_i - m) / s in float64, as the host formula; in place when
// weights == logits (each thread reads its element before writing it).
__global__ void __launch_bounds__(kThreads)
    softmax_weights(const float* logits, int64_t n, const double* __restrict__ state,
                    float* weights) {
  const double m = state[0];
  const double s = state[1];
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    weights[i] = static_cast<float>(exp(static_cast<double>(logits[i]) - m) / s);
}

int64_t align_up(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Layout {
  int slabs;            // 64-unit slabs of the tensor-core projection (1 when Z is given)
  int64_t part_rows;    // rows per block of the one-pass epilogue
  int64_t part_blocks;  // its block states
  int64_t soft_blocks;  // block states of the three-kernel epilogue
  int64_t partial_bytes;
  int64_t parts_bytes;
};

// Multiprocessors of the current device, cached per device (the query is a driver call).
int sm_count() {
  static std::atomic<int> cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 132;
  if (dev >= 0 && dev < 64) {
    const int known = cache[dev].load(std::memory_order_relaxed);
    if (known > 0) return known;
  }
  int count = 0;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      count <= 0)
    count = 132;
  if (dev >= 0 && dev < 64) cache[dev].store(count, std::memory_order_relaxed);
  return count;
}

// Rows per block of the one-pass epilogue: about kPartBlocksPerSm blocks per SM, a multiple of
// 8, within [kPartMinRows, kPartMaxRows]; so the block count is at most ceil(n / kPartMinRows),
// whatever the device, which bounds the workspace.
int64_t part_rows(int64_t n, int sms) {
  const int64_t target = static_cast<int64_t>(sms) * kPartBlocksPerSm;
  int64_t rows = ceil_div(ceil_div(n, target), 8) * 8;
  if (rows < kPartMinRows) rows = kPartMinRows;
  if (rows > kPartMaxRows) rows = kPartMaxRows;
  return rows;
}

Layout layout(int64_t n, int64_t dim, int64_t hidden, bool projected, int sms) {
  Layout l{};
  l.slabs = projected ? 1 : static_cast<int>(ceil_div(hidden, kBH));
  l.part_rows = part_rows(n, sms);
  l.part_blocks = ceil_div(n, l.part_rows);
  l.soft_blocks = ceil_div(n, kSoftRows);
  l.partial_bytes = align_up(static_cast<int64_t>(l.slabs) * n * 4);
  // room for the larger of the two epilogues' block states on any device
  l.parts_bytes = align_up(ceil_div(n, kPartMinRows) * (dim + 2) * 4);
  return l;
}

static_assert(kSoftRows >= kPartMinRows, "the three-kernel states fit the one-pass bound");

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T, int kVec, int kSource>
void launch_partials(const PoolArgs& a, const Layout& l, const float* slab_logits, float* parts,
                     cudaStream_t stream) {
  pool_partials<T, kVec, kSource><<<static_cast<unsigned>(l.part_blocks), kPartThreads, 0, stream>>>(
      static_cast<const T*>(a.h), a.ldh, a.n, a.dim, slab_logits, l.slabs,
      static_cast<const T*>(a.z), a.ldz, a.bias_v, a.bias_u, a.w, a.hidden, a.bias_w,
      static_cast<int>(l.part_rows), a.logits, parts);
}

template <typename T>
std::string launch(const PoolArgs& a, cudaStream_t stream) {
  const bool projected = a.z != nullptr;
  const Layout l = layout(a.n, a.dim, a.hidden, projected, a.epilogue == 1 ? sm_count() : 132);
  auto* partial = static_cast<float*>(a.workspace);
  auto* parts = reinterpret_cast<float*>(static_cast<char*>(a.workspace) + l.partial_bytes);
  const T* h = static_cast<const T*>(a.h);
  const T* wts = static_cast<const T*>(a.weights);
  const bool vec = a.dim % 8 == 0 && a.ldh % 8 == 0 && aligned16(a.h) && aligned16(a.weights);
  const bool vec_z = projected && a.hidden % 8 == 0 && a.ldz % 8 == 0 && aligned16(a.z);

  if (a.status != nullptr) {
    const cudaError_t err = cudaMemsetAsync(a.status, 0, sizeof(int), stream);
    if (err != cudaSuccess) return std::string("CUDA pooling memset failed: ") + cudaGetErrorString(err);
  }
  const int64_t tiles = ceil_div(a.n, kBM);
  const int64_t grid1 = tiles * l.slabs;
  if (grid1 > 0x7fffffffLL) return "too many rows for one launch";
  if (!projected) {
    if (vec)
      gate_logits<T, true><<<static_cast<unsigned>(grid1), kThreads, 0, stream>>>(
          h, a.ldh, a.n, a.dim, wts, a.bias_v, a.bias_u, a.w, a.hidden, l.slabs, partial);
    else
      gate_logits<T, false><<<static_cast<unsigned>(grid1), kThreads, 0, stream>>>(
          h, a.ldh, a.n, a.dim, wts, a.bias_v, a.bias_u, a.w, a.hidden, l.slabs, partial);
  }

  if (a.epilogue == 1) {
    if (projected && vec_z) {
      if (vec) launch_partials<T, 8, kFromZVec>(a, l, nullptr, parts, stream);
      else launch_partials<T, 1, kFromZVec>(a, l, nullptr, parts, stream);
    } else if (projected) {
      if (vec) launch_partials<T, 8, kFromZ>(a, l, nullptr, parts, stream);
      else launch_partials<T, 1, kFromZ>(a, l, nullptr, parts, stream);
    } else {
      if (vec) launch_partials<T, 8, kFromSlabs>(a, l, partial, parts, stream);
      else launch_partials<T, 1, kFromSlabs>(a, l, partial, parts, stream);
    }
    const auto grid3 = static_cast<unsigned>(ceil_div(a.dim, kMergeCols));
    merge_parts<<<grid3, kMergeThreads, 0, stream>>>(parts, l.part_blocks, a.dim, a.state,
                                                     a.pooled, a.status);
  } else {
    if (projected) {
      const int64_t blocks = ceil_div(a.n, kThreads / 32);
      const auto grid = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
      logits_from_projection<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(a.z), a.ldz,
                                                               a.n, a.bias_v, a.bias_u, a.w,
                                                               a.hidden, partial);
    }
    const auto grid2 = static_cast<unsigned>(l.soft_blocks);
    if (vec)
      softmax_partial<T, 8><<<grid2, kThreads, 0, stream>>>(h, a.ldh, a.n, a.dim, partial,
                                                            l.slabs, a.bias_w, a.logits, parts);
    else
      softmax_partial<T, 1><<<grid2, kThreads, 0, stream>>>(h, a.ldh, a.n, a.dim, partial,
                                                            l.slabs, a.bias_w, a.logits, parts);
    const auto grid3 = static_cast<unsigned>(ceil_div(a.dim, kThreads));
    merge_partials<<<grid3, kThreads, 0, stream>>>(parts, l.soft_blocks, a.dim, a.state);
    if (a.pooled != nullptr || a.status != nullptr)
      finalize_state<<<grid3, kThreads, 0, stream>>>(a.state, a.dim, a.pooled, a.status);
  }
  if (a.weights_out != nullptr) {
    const int64_t blocks = ceil_div(a.n, kThreads);
    const auto grid = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
    softmax_weights<<<grid, kThreads, 0, stream>>>(a.logits, a.n, a.state, a.weights_out);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return std::string("CUDA pooling launch failed: ") + cudaGetErrorString(err);
  return "";
}

}  // namespace

int64_t pool_workspace_bytes(int64_t n, int64_t dim, int64_t hidden) {
  if (n <= 0 || dim <= 0 || hidden <= 0) return 0;
  const Layout l = layout(n, dim, hidden, false, 132);  // the larger of the two layouts
  return l.partial_bytes + l.parts_bytes;
}

std::string pool_forward(const PoolArgs& a, void* stream) {
  if (a.n <= 0) return "no rows to pool (n == 0)";
  if (a.dim <= 0 || a.hidden <= 0) return "dim and hidden must be positive";
  if (a.ldh < a.dim && a.n > 1) return "row stride ldh is smaller than dim";
  if (a.h == nullptr || a.weights == nullptr || a.bias_v == nullptr || a.bias_u == nullptr ||
      a.w == nullptr || a.state == nullptr || a.workspace == nullptr)
    return "a required device pointer is null";
  if (a.workspace_bytes < pool_workspace_bytes(a.n, a.dim, a.hidden))
    return "workspace is smaller than pool_workspace_bytes(n, dim, hidden)";
  if (a.dim > 0x7fffffffLL / 8) return "dim is too large";
  if (a.z != nullptr && a.ldz < 2 * a.hidden && a.n > 1)
    return "row stride ldz of the projection is smaller than 2 * hidden";
  if (a.epilogue != 0 && a.epilogue != 1) return "epilogue must be 0 (three-kernel) or 1 (one-pass)";
  if (a.weights_out != nullptr && a.logits == nullptr)
    return "weights need a logits buffer (it may be the weights buffer itself)";
  auto s = static_cast<cudaStream_t>(stream);
  if (a.dtype == 0) return launch<__nv_bfloat16>(a, s);
  if (a.dtype == 1) return launch<__half>(a, s);
  return "dtype must be 0 (bfloat16) or 1 (float16)";
}

}  // namespace hsafast::cuda
