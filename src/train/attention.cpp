// The float attention of training (the specialisations declared in train/ops.h): the algorithm of
// the generic templates, with every inner loop over the head dimension turned into one of three
// row primitives that run on AVX-512, AVX2 or scalar code per cpu::active_isa():
//   dots:    out[j] = a . B_j               (scores q.k, and dO.v in the backward)
//   combine: y = sum_j w[j] B_j             (p.v forward, dq = sum ds k backward)
//   spread:  B_j += w[j] x                  (dk += ds q, dv += p dO)
// The generic templates' dots are one serial chain of dependent adds each (latency-bound, and the
// -O2 baseline build does not vectorise reductions), which made attention about half of a
// training step. Each primitive handles a whole key range per call, so dispatch costs nothing.
// Order of operations is fixed (no dependence on threads): a resumed run stays bit for bit.
#include <immintrin.h>

// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 extract intrinsics
// (a false positive of the headers, as in src/cpu). This file is compiled on its own (CMake), so
// the pragma reaches no other code.
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cmath>

#include "cpu/isa.h"
#include "train/ops.h"

namespace mind4::train {
namespace {

// B_j = base + j * ld for j in [0, n); D values each.
struct TaRows {
  const float* base;
  int64_t ld;
};

// ---- scalar
void ta_dots_scalar(const float* a, TaRows b, int n, int D, float* out) {
  for (int j = 0; j < n; ++j) {
    const float* r = b.base + j * b.ld;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four chains: independent adds, same for every row
    int d = 0;
    for (; d + 4 <= D; d += 4)
      s0 += a[d] * r[d], s1 += a[d + 1] * r[d + 1], s2 += a[d + 2] * r[d + 2],
          s3 += a[d + 3] * r[d + 3];
    for (; d < D; ++d) s0 += a[d] * r[d];
    out[j] = (s0 + s1) + (s2 + s3);
  }
}
void ta_combine_scalar(const float* w, TaRows b, int n, int D, float* y) {
  std::fill_n(y, D, 0.0f);
  for (int j = 0; j < n; ++j) {
    const float* r = b.base + j * b.ld;
    for (int d = 0; d < D; ++d) y[d] += w[j] * r[d];
  }
}
void ta_spread_scalar(const float* w, const float* x, float* base, int64_t ld, int n, int D) {
  for (int j = 0; j < n; ++j) {
    float* r = base + j * ld;
    for (int d = 0; d < D; ++d) r[d] += w[j] * x[d];
  }
}

// ---- AVX2 (8 lanes); a D tail below 8 goes scalar.
MIND4_TARGET_AVX2 float ta_hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
MIND4_TARGET_AVX2 void ta_dots_avx2(const float* a, TaRows b, int n, int D, float* out) {
  const int D8 = D & ~7;
  for (int j = 0; j < n; ++j) {
    const float* r = b.base + j * b.ld;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int d = 0;
    for (; d + 16 <= D8; d += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(r + d), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(r + d + 8), acc1);
    }
    if (d < D8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(r + d), acc0);
    float s = ta_hsum256(_mm256_add_ps(acc0, acc1));
    for (d = D8; d < D; ++d) s += a[d] * r[d];
    out[j] = s;
  }
}
MIND4_TARGET_AVX2 void ta_combine_avx2(const float* w, TaRows b, int n, int D, float* y) {
  const int D8 = D & ~7;
  int d0 = 0;
  // Four 8-wide column strips per pass, four independent accumulators (see the AVX-512 version).
  for (; d0 + 32 <= D8; d0 += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    for (int j = 0; j < n; ++j) {
      const float* r = b.base + j * b.ld + d0;
      const __m256 wj = _mm256_set1_ps(w[j]);
      a0 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(r), a0);
      a1 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(r + 8), a1);
      a2 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(r + 16), a2);
      a3 = _mm256_fmadd_ps(wj, _mm256_loadu_ps(r + 24), a3);
    }
    _mm256_storeu_ps(y + d0, a0);
    _mm256_storeu_ps(y + d0 + 8, a1);
    _mm256_storeu_ps(y + d0 + 16, a2);
    _mm256_storeu_ps(y + d0 + 24, a3);
  }
  for (; d0 < D8; d0 += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int j = 0; j < n; ++j)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_loadu_ps(b.base + j * b.ld + d0), acc);
    _mm256_storeu_ps(y + d0, acc);
  }
  for (int d = D8; d < D; ++d) {
    float acc = 0.0f;
    for (int j = 0; j < n; ++j) acc += w[j] * b.base[j * b.ld + d];
    y[d] = acc;
  }
}
MIND4_TARGET_AVX2 void ta_spread_avx2(const float* w, const float* x, float* base, int64_t ld,
                                      int n, int D) {
  const int D8 = D & ~7;
  for (int j = 0; j < n; ++j) {
    float* r = base + j * ld;
    const __m256 wj = _mm256_set1_ps(w[j]);
    for (int d = 0; d < D8; d += 8)
      _mm256_storeu_ps(r + d, _mm256_fmadd_ps(wj, _mm256_loadu_ps(x + d), _mm256_loadu_ps(r + d)));
    for (int d = D8; d < D; ++d) r[d] += w[j] * x[d];
  }
}

// ---- AVX-512 (16 lanes, masked tail: head_dim is any even number)
MIND4_TARGET_AVX512 void ta_dots_avx512(const float* a, TaRows b, int n, int D, float* out) {
  for (int j = 0; j < n; ++j) {
    const float* r = b.base + j * b.ld;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int d = 0;
    for (; d + 32 <= D; d += 32) {
      acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(r + d), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d + 16), _mm512_loadu_ps(r + d + 16), acc1);
    }
    for (; d < D; d += 16) {
      const __mmask16 m = D - d >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (D - d)) - 1);
      acc0 =
          _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, r + d), acc0);
    }
    out[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  }
}
MIND4_TARGET_AVX512 void ta_combine_avx512(const float* w, TaRows b, int n, int D, float* y) {
  // Four 16-wide column strips per pass, each its own accumulator: one accumulator alone would
  // make the pass a chain of dependent FMAs (latency- not throughput-bound).
  for (int d0 = 0; d0 < D; d0 += 64) {
    __mmask16 m[4];
    for (int i = 0; i < 4; ++i) {
      const int left = D - d0 - 16 * i;
      m[i] = left >= 16  ? __mmask16(0xFFFF)
             : left <= 0 ? __mmask16(0)
                         : __mmask16((1u << left) - 1);
    }
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
           a3 = _mm512_setzero_ps();
    for (int j = 0; j < n; ++j) {
      const float* r = b.base + j * b.ld + d0;
      const __m512 wj = _mm512_set1_ps(w[j]);
      a0 = _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m[0], r), a0);
      a1 = _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m[1], r + 16), a1);
      a2 = _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m[2], r + 32), a2);
      a3 = _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m[3], r + 48), a3);
    }
    _mm512_mask_storeu_ps(y + d0, m[0], a0);
    _mm512_mask_storeu_ps(y + d0 + 16, m[1], a1);
    _mm512_mask_storeu_ps(y + d0 + 32, m[2], a2);
    _mm512_mask_storeu_ps(y + d0 + 48, m[3], a3);
  }
}
MIND4_TARGET_AVX512 void ta_spread_avx512(const float* w, const float* x, float* base, int64_t ld,
                                          int n, int D) {
  for (int j = 0; j < n; ++j) {
    float* r = base + j * ld;
    const __m512 wj = _mm512_set1_ps(w[j]);
    for (int d = 0; d < D; d += 16) {
      const __mmask16 m = D - d >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (D - d)) - 1);
      _mm512_mask_storeu_ps(
          r + d, m,
          _mm512_fmadd_ps(wj, _mm512_maskz_loadu_ps(m, x + d), _mm512_maskz_loadu_ps(m, r + d)));
    }
  }
}

struct TaKernels {
  void (*dots)(const float*, TaRows, int, int, float*);
  void (*combine)(const float*, TaRows, int, int, float*);
  void (*spread)(const float*, const float*, float*, int64_t, int, int);
};

TaKernels ta_kernels() {
  switch (cpu::active_isa()) {
    case cpu::Isa::kAvx512:
      return {ta_dots_avx512, ta_combine_avx512, ta_spread_avx512};
    case cpu::Isa::kAvx2:
      return {ta_dots_avx2, ta_combine_avx2, ta_spread_avx2};
    case cpu::Isa::kScalar:
      break;
  }
  return {ta_dots_scalar, ta_combine_scalar, ta_spread_scalar};
}

}  // namespace

// scores: scratch of S floats (this worker's).
template <>
void attention_fwd<float>(const AttnShape& a, int kvh, const float* qkv, const float* sinks,
                          float scale, float* out, float* lse, float* scores) {
  const TaKernels k = ta_kernels();
  const int64_t ld = a.qkv_stride(), ldo = int64_t(a.NH) * a.D;
  const int group = a.NH / a.NKV, D = a.D;
  const float* kbase = qkv + int64_t(a.NH + kvh) * D;
  const float* vbase = qkv + int64_t(a.NH + a.NKV + kvh) * D;
  for (int h = kvh * group; h < (kvh + 1) * group; ++h)
    for (int s = 0; s < a.S; ++s) {
      const int j0 = a.first_key(s), n = s - j0 + 1;
      k.dots(qkv + s * ld + int64_t(h) * D, {kbase + j0 * ld, ld}, n, D, scores);
      float m = sinks[h];
      for (int j = 0; j < n; ++j) m = std::max(m, scores[j] *= scale);
      float denom = std::exp(sinks[h] - m);
      for (int j = 0; j < n; ++j) denom += scores[j] = std::exp(scores[j] - m);
      const float inv = 1.0f / denom;
      for (int j = 0; j < n; ++j) scores[j] *= inv;
      k.combine(scores, {vbase + j0 * ld, ld}, n, D, out + s * ldo + int64_t(h) * D);
      lse[int64_t(s) * a.NH + h] = m + std::log(denom);
    }
}

template <>
void attention_bwd<float>(const AttnShape& a, int kvh, const float* qkv, const float* sinks,
                          float scale, const float* out, const float* lse, const float* dout,
                          float* dqkv, float* dsinks, float* scratch) {
  const TaKernels k = ta_kernels();
  const int64_t ld = a.qkv_stride(), ldo = int64_t(a.NH) * a.D;
  const int group = a.NH / a.NKV, D = a.D;
  const int64_t koff = int64_t(a.NH + kvh) * D, voff = int64_t(a.NH + a.NKV + kvh) * D;
  float* p = scratch;
  float* ds = scratch + a.S;
  for (int h = kvh * group; h < (kvh + 1) * group; ++h)
    for (int s = 0; s < a.S; ++s) {
      const float* q = qkv + s * ld + int64_t(h) * D;
      const float* o = out + s * ldo + int64_t(h) * D;
      const float* dO = dout + s * ldo + int64_t(h) * D;
      const float L = lse[int64_t(s) * a.NH + h];
      float delta = 0.0f;
      for (int d = 0; d < D; ++d) delta += dO[d] * o[d];
      const int j0 = a.first_key(s), n = s - j0 + 1;
      k.dots(q, {qkv + j0 * ld + koff, ld}, n, D, p);
      for (int j = 0; j < n; ++j) p[j] = std::exp(p[j] * scale - L);
      k.dots(dO, {qkv + j0 * ld + voff, ld}, n, D, ds);
      for (int j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - delta) * scale;
      k.combine(ds, {qkv + j0 * ld + koff, ld}, n, D, dqkv + s * ld + int64_t(h) * D);
      k.spread(ds, q, dqkv + j0 * ld + koff, ld, n, D);
      k.spread(p, dO, dqkv + j0 * ld + voff, ld, n, D);
      dsinks[h] -= std::exp(sinks[h] - L) * delta;
    }
}

}  // namespace mind4::train
