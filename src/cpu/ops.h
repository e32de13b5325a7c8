// The small ops of a gpt-oss block (everything but the matrix products): RMSNorm, YaRN rotary
// tables and rotation, attention of one query head with a sink, clamped SwiGLU, router top-k.
// All take and produce fp32.
#pragma once

#include <cstdint>

#include "mind4/config.h"

namespace mind4::cpu {

// sum_i a[i] * b[i] in fp32 (vector path per cpu::active_isa()).
float dot_f32(const float* a, const float* b, int n);

// out = x / sqrt(mean(x^2) + eps) * scale over n values (the mean in double: no cancellation
// worries for any hidden size). out may alias x.
void rmsnorm(const float* x, const float* scale, int n, float eps, float* out);

// inv_freq [head_dim/2] and the attention concentration of YaRN (NTK-by-parts) as in the
// original gpt-oss code; factor <= 1 gives plain RoPE (concentration 1).
void rope_frequencies(const ModelConfig& c, double* inv_freq, double* concentration);
// cos/sin tables [positions, head_dim/2] (concentration folded in), computed in double.
void rope_tables(const ModelConfig& c, int positions, float* cos_table, float* sin_table);
// Rotates `heads` vectors of head_dim (consecutive) by one position's cos/sin row; half-split
// pairs (i, i + head_dim/2).
void rope_apply(float* x, int heads, int head_dim, const float* cos_row, const float* sin_row);

// Attention of one query head over `count` cached positions (keys at k + j*stride, values at
// v + j*stride): softmax(q.k * scale) with the sink logit in the denominator only, then the
// weighted sum of values into out[head_dim]. scores: scratch of `count` floats.
void attention_head(const float* q, const float* k, const float* v, int64_t stride, int count,
                    int head_dim, float sink, float scale, float* scores, float* out);

// h holds interleaved (gate, linear) pairs [2n]; out[i] = g*sigmoid(1.702 g)*(l + 1) with
// g = min(h[2i], limit), l = clamp(h[2i+1], -limit, limit).
void swiglu_interleaved(const float* h, int n, float limit, float* out);

// The k largest of logits[n] (ties: lower index first) and softmax over them, largest first.
void router_topk(const float* logits, int n, int k, int* experts, float* weights);

}  // namespace mind4::cpu
