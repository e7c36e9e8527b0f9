// Fused gated-attention pooling on the GPU: bf16/fp16 inputs, fp32 accumulation.
//
// 1. gate_logits: each block takes 128 rows of h and 64 hidden units, computes the 128 x 128
//    tile [V h | U h] on tensor cores (WMMA 16x16x16, double-buffered cp.async over D),
//    then in its epilogue adds the biases, applies tanh and sigmoid, multiplies them and
//    projects onto w, leaving one partial logit per (row, 64-unit slab). The slab index varies
//    fastest across blocks, so the blocks that share rows run together and share h in L2.
// 2. softmax_partial: each block sums the slabs' partial logits of 128 rows (+ b), takes its
//    max m_b, s_b = sum exp(a - m_b) and acc_b = sum exp(a - m_b) h_i (fp32).
// 3. merge_partials: rescales the per-block states to the global max (Flash-Decoding style)
//    and writes the float64 state [m, s, acc(D)] that the host divides (or keeps streaming).
// Alternatively the caller passes Z = h @ [V; U]^T from its own GEMM (cuBLAS through PyTorch)
// and logits_from_projection replaces step 1: a comparison point for the tensor-core kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <string>

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

int64_t align_up(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct Layout {
  int slabs;
  int64_t soft_blocks;
  int64_t partial_bytes;
  int64_t parts_bytes;
};

Layout layout(int64_t n, int64_t dim, int64_t hidden, bool projected) {
  Layout l{};
  l.slabs = projected ? 1 : static_cast<int>((hidden + kBH - 1) / kBH);
  l.soft_blocks = (n + kSoftRows - 1) / kSoftRows;
  l.partial_bytes = align_up(static_cast<int64_t>(l.slabs) * n * 4);
  l.parts_bytes = align_up(l.soft_blocks * (dim + 2) * 4);
  return l;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T>
std::string launch(const PoolArgs& a, cudaStream_t stream) {
  const Layout l = layout(a.n, a.dim, a.hidden, a.z != nullptr);
  auto* partial = static_cast<float*>(a.workspace);
  auto* parts = reinterpret_cast<float*>(static_cast<char*>(a.workspace) + l.partial_bytes);
  const T* h = static_cast<const T*>(a.h);
  const T* wts = static_cast<const T*>(a.weights);
  const bool vec = a.dim % 8 == 0 && a.ldh % 8 == 0 && aligned16(a.h) && aligned16(a.weights);

  const int64_t tiles = (a.n + kBM - 1) / kBM;
  const int64_t grid1 = tiles * l.slabs;
  if (grid1 > 0x7fffffffLL) return "too many rows for one launch";
  if (a.z != nullptr) {
    const int64_t blocks = (a.n + kThreads / 32 - 1) / (kThreads / 32);
    const auto grid = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
    logits_from_projection<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(a.z), a.ldz,
                                                             a.n, a.bias_v, a.bias_u, a.w,
                                                             a.hidden, partial);
  } else if (vec)
    gate_logits<T, true><<<static_cast<unsigned>(grid1), kThreads, 0, stream>>>(
        h, a.ldh, a.n, a.dim, wts, a.bias_v, a.bias_u, a.w, a.hidden, l.slabs, partial);
  else
    gate_logits<T, false><<<static_cast<unsigned>(grid1), kThreads, 0, stream>>>(
        h, a.ldh, a.n, a.dim, wts, a.bias_v, a.bias_u, a.w, a.hidden, l.slabs, partial);

  const auto grid2 = static_cast<unsigned>(l.soft_blocks);
  if (vec)
    softmax_partial<T, 8><<<grid2, kThreads, 0, stream>>>(h, a.ldh, a.n, a.dim, partial, l.slabs,
                                                          a.bias_w, a.logits, parts);
  else
    softmax_partial<T, 1><<<grid2, kThreads, 0, stream>>>(h, a.ldh, a.n, a.dim, partial, l.slabs,
                                                          a.bias_w, a.logits, parts);

  const auto grid3 = static_cast<unsigned>((a.dim + kThreads - 1) / kThreads);
  merge_partials<<<grid3, kThreads, 0, stream>>>(parts, l.soft_blocks, a.dim, a.state);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return std::string("CUDA pooling launch failed: ") + cudaGetErrorString(err);
  return "";
}

}  // namespace

int64_t pool_workspace_bytes(int64_t n, int64_t dim, int64_t hidden) {
  if (n <= 0 || dim <= 0 || hidden <= 0) return 0;
  const Layout l = layout(n, dim, hidden, false);  // the larger of the two layouts
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
  auto s = static_cast<cudaStream_t>(stream);
  if (a.dtype == 0) return launch<__nv_bfloat16>(a, s);
  if (a.dtype == 1) return launch<__half>(a, s);
  return "dtype must be 0 (bfloat16) or 1 (float16)";
}

}  // namespace hsafast::cuda
