// Host entry points of the fused CUDA gated-attention pooling (no CUDA headers needed).
//
// The caller owns every buffer (PyTorch or CuPy allocates them) and passes raw device
// pointers, so the extension never links a framework. Everything runs on `stream`.
#pragma once

#include <cstdint>
#include <string>

namespace hsafast::cuda {

struct PoolArgs {
  const void* h;  // (n, dim) bf16 or fp16, unit column stride, row stride ldh elements
  int64_t ldh;
  int dtype;  // 0 bfloat16, 1 float16
  int64_t n;
  int64_t dim;
  const void* weights;  // [V; U]: (2 * hidden, dim), same dtype as h, contiguous
  const float* bias_v;  // (hidden)
  const float* bias_u;  // (hidden)
  const float* w;       // (hidden)
  float bias_w;
  int64_t hidden;
  void* workspace;  // pool_workspace_bytes(n, dim, hidden) bytes of scratch
  int64_t workspace_bytes;
  float* logits;  // (n) or null: the attention logits of every row
  double* state;  // (dim + 2): m, s, acc(dim) of the whole bag, as in the CPU kernel
  // Optional precomputed projection Z = h @ [V; U]^T ((n, 2 * hidden), same dtype as h, row
  // stride ldz), e.g. from cuBLAS: when set, the tensor-core projection is skipped and only
  // the gate epilogue, the softmax partials and the merge run.
  const void* z = nullptr;
  int64_t ldz = 0;
  // 1: the one-pass epilogue (logits, block softmax state and weighted sum in one kernel, then
  // a parallel merge); 0: the original three-kernel epilogue, kept for comparison.
  int epilogue = 1;
  float* pooled = nullptr;       // (dim) or null: acc / s as float32
  float* weights_out = nullptr;  // (n) or null: softmax weights; needs logits (may alias it)
  int* status = nullptr;         // or null: set to 0, then 1 if the state is not finite
};

// Scratch the kernels need for these sizes (partial logits and per-block softmax states).
int64_t pool_workspace_bytes(int64_t n, int64_t dim, int64_t hidden);

// Launches the kernels; returns "" on success or a message naming what was wrong.
std::string pool_forward(const PoolArgs& args, void* stream);

}  // namespace hsafast::cuda
