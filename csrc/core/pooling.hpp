// Gated-attention pooling (ABMIL) with an online softmax, fused after the projection.
//
// The caller computes Z = h_chunk @ [V; U]^T with a BLAS library; everything after that
// (biases, tanh, sigmoid, product, projection onto w, online softmax, weighted sum of h)
// happens here in one pass over the chunk, so extra memory is O(chunk x H), never O(N x H).
//
// The running state is (m, s, acc[D]) in float64: m the largest logit seen, s the sum of
// exp(logit - m), acc the sum of exp(logit - m) * h_i. Two states merge by rescaling both to
// the larger m, which is what makes streaming and sharded pooling possible.
#pragma once

#include <cstdint>

namespace hsafast {

struct GateParams {
  const float* bias_v;  // (H)
  const float* bias_u;  // (H)
  const float* w;       // (H)
  float bias_w;
  int64_t hidden;  // H
};

// One chunk of rows.
struct PoolChunk {
  const float* z;  // (rows, 2H): [V h + 0 | U h + 0], biases not yet added
  int64_t ldz;     // row stride of z in elements (>= 2H)
  const float* h;  // (rows, D)
  int64_t ldh;     // row stride of h in elements (>= D)
  int64_t rows;
  int64_t dim;  // D
};

// Logit of each row: w . (tanh(zv + bv) * sigmoid(zu + bu)) + b, written to logits[rows].
void gated_logits(const PoolChunk& chunk, const GateParams& p, float* logits);

// Absorbs one chunk into the state [m, s, acc(D)] (float64, length D + 2). Writes the
// logits of the chunk's rows to `logits` when it is not null. Returns false, leaving the
// state untouched, when a logit or the weighted sum is not finite (NaN or Inf in h or z).
bool pool_chunk(const PoolChunk& chunk, const GateParams& p, double* state, float* logits);

// Merges state b into state a (both length D + 2). An empty state has s == 0.
void merge_pool_states(double* a, const double* b, int64_t dim);

}  // namespace hsafast
