#include "cpu/ops.h"

#include <immintrin.h>

// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 reduce/zero
// intrinsics (a known false positive of the headers, not of this code).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cmath>
#include <numbers>

#include "cpu/isa.h"

namespace mind4::cpu {
namespace {

MIND4_TARGET_AVX512 float dot_avx512(const float* a, const float* b, int n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

MIND4_TARGET_AVX2 float dot_avx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  float r = _mm_cvtss_f32(s);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

float dot_scalar(const float* a, const float* b, int n) {
  float acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  for (; i < n; ++i) acc[i & 7] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace

float dot_f32(const float* a, const float* b, int n) {
  switch (active_isa()) {
    case Isa::kAvx512: return dot_avx512(a, b, n);
    case Isa::kAvx2: return dot_avx2(a, b, n);
    case Isa::kScalar: break;
  }
  return dot_scalar(a, b, n);
}

void rmsnorm(const float* x, const float* scale, int n, float eps, float* out) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  float r = float(1.0 / std::sqrt(ss / n + double(eps)));
  for (int i = 0; i < n; ++i) out[i] = x[i] * r * scale[i];
}

void rope_frequencies(const ModelConfig& c, double* inv_freq, double* concentration) {
  const int d_half = c.head_dim / 2;
  const double base = c.rope_theta, factor = c.rope_scaling_factor;
  *concentration = 1.0;
  for (int i = 0; i < d_half; ++i) inv_freq[i] = 1.0 / std::pow(base, 2.0 * i / c.head_dim);
  if (factor <= 1.0) return;
  *concentration = 0.1 * std::log(factor) + 1.0;
  const double two_pi = 2.0 * std::numbers::pi;
  const double low = d_half * std::log(c.initial_context_length / (c.rope_ntk_beta * two_pi)) /
                     std::log(base);
  const double high = d_half * std::log(c.initial_context_length / (c.rope_ntk_alpha * two_pi)) /
                      std::log(base);
  for (int i = 0; i < d_half; ++i) {
    double freq = std::pow(base, 2.0 * i / c.head_dim);
    double interpolation = 1.0 / (factor * freq), extrapolation = 1.0 / freq;
    double ramp = (i - low) / (high - low);
    double mask = 1.0 - std::clamp(ramp, 0.0, 1.0);
    inv_freq[i] = interpolation * (1.0 - mask) + extrapolation * mask;
  }
}

void rope_tables(const ModelConfig& c, int positions, float* cos_table, float* sin_table) {
  const int d_half = c.head_dim / 2;
  double inv_freq[512], concentration;  // head_dim <= 1024 is checked when a model loads
  rope_frequencies(c, inv_freq, &concentration);
  for (int p = 0; p < positions; ++p)
    for (int i = 0; i < d_half; ++i) {
      double angle = double(p) * inv_freq[i];
      cos_table[int64_t(p) * d_half + i] = float(std::cos(angle) * concentration);
      sin_table[int64_t(p) * d_half + i] = float(std::sin(angle) * concentration);
    }
}

void rope_apply(float* x, int heads, int head_dim, const float* cos_row, const float* sin_row) {
  const int d_half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    float* v = x + int64_t(h) * head_dim;
    for (int i = 0; i < d_half; ++i) {
      float x1 = v[i], x2 = v[i + d_half];
      v[i] = x1 * cos_row[i] - x2 * sin_row[i];
      v[i + d_half] = x2 * cos_row[i] + x1 * sin_row[i];
    }
  }
}

void attention_head(const float* q, const float* k, const float* v, int64_t stride, int count,
                    int head_dim, float sink, float scale, float* scores, float* out) {
  float m = sink;
  for (int j = 0; j < count; ++j) {
    scores[j] = dot_f32(q, k + j * stride, head_dim) * scale;
    m = std::max(m, scores[j]);
  }
  float denom = std::exp(sink - m);
  for (int j = 0; j < count; ++j) denom += scores[j] = std::exp(scores[j] - m);
  const float inv = 1.0f / denom;
  for (int d = 0; d < head_dim; ++d) out[d] = 0.0f;
  for (int j = 0; j < count; ++j) {
    const float p = scores[j] * inv;
    const float* vj = v + j * stride;
    for (int d = 0; d < head_dim; ++d) out[d] += p * vj[d];
  }
}

void swiglu_interleaved(const float* h, int n, float limit, float* out) {
  for (int i = 0; i < n; ++i) {
    float g = std::min(h[2 * i], limit);
    float l = std::clamp(h[2 * i + 1], -limit, limit);
    out[i] = g / (1.0f + std::exp(-1.702f * g)) * (l + 1.0f);
  }
}

void router_topk(const float* logits, int n, int k, int* experts, float* weights) {
  // k is small (4 of 32 in gpt-oss): k passes of a max search keep the tie rule obvious.
  for (int s = 0; s < k; ++s) {
    int best = -1;
    for (int e = 0; e < n; ++e) {
      bool taken = false;
      for (int p = 0; p < s; ++p) taken |= experts[p] == e;
      if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
    }
    experts[s] = best;
  }
  float m = logits[experts[0]], sum = 0.0f;
  for (int s = 0; s < k; ++s) sum += weights[s] = std::exp(logits[experts[s]] - m);
  for (int s = 0; s < k; ++s) weights[s] /= sum;
}

}  // namespace mind4::cpu
