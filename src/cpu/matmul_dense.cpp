// bf16- and f32-weight matrix products (see matmul.h). Each path computes a tile of R weight
// rows x TT tokens with R*TT register accumulators, so a converted weight vector serves TT tokens
// and an activation vector serves R rows. bf16 -> f32 is a 16-bit shift (bf16 is the top half of
// an fp32), done in registers right after the load.
#include <immintrin.h>

// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 reduce/zero
// intrinsics (a known false positive of the headers, not of this code).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>

#include "cpu/isa.h"
#include "cpu/matmul.h"

namespace mind4::cpu {
namespace {

constexpr int kRows = 4;    // weight rows per tile
constexpr int kTokens = 4;  // tokens per tile

inline float load_scalar(const uint16_t* w, int j) {
  uint32_t bits = uint32_t(w[j]) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
inline float load_scalar(const float* w, int j) { return w[j]; }

// ---------------------------------------------------------------- scalar
template <typename W>
void matmul_scalar(const float* x, int64_t ldx, int tokens, const W* w, int k, const float* bias,
                   float* out, int64_t ldo, int n_begin, int n_end) {
  for (int n = n_begin; n < n_end; ++n) {
    const W* row = w + int64_t(n) * k;
    for (int t = 0; t < tokens; ++t) {
      const float* xt = x + t * ldx;
      // Eight partial sums: the same association as a vector unit, and fewer rounding steps
      // in a row than one long chain.
      float acc[8] = {};
      int j = 0;
      for (; j + 8 <= k; j += 8)
        for (int l = 0; l < 8; ++l) acc[l] += load_scalar(row, j + l) * xt[j + l];
      for (; j < k; ++j) acc[j & 7] += load_scalar(row, j) * xt[j];
      float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      out[t * ldo + n] = s + (bias ? bias[n] : 0.0f);
    }
  }
}

// ---------------------------------------------------------------- AVX2
MIND4_TARGET_AVX2 inline __m256 load8(const uint16_t* w) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
MIND4_TARGET_AVX2 inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }

MIND4_TARGET_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int R, int TT, typename W>
MIND4_TARGET_AVX2 void tile_avx2(const float* x, int64_t ldx, const W* w, int k, float* dots) {
  __m256 acc[R][TT];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= k; j += 8) {
    __m256 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wv[r] = load8(w + int64_t(r) * k + j);
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) {
      __m256 xv = _mm256_loadu_ps(x + t * ldx + j);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t) {
      float s = hsum8(acc[r][t]);
      for (int jj = j; jj < k; ++jj) s += load_scalar(w + int64_t(r) * k, jj) * x[t * ldx + jj];
      dots[r * kTokens + t] = s;
    }
}

// ---------------------------------------------------------------- AVX-512
MIND4_TARGET_AVX512 inline __m512 load16(const uint16_t* w) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
MIND4_TARGET_AVX512 inline __m512 load16(const float* w) { return _mm512_loadu_ps(w); }
MIND4_TARGET_AVX512 inline __m512 load16_masked(const uint16_t* w, __mmask16 m) {
  __m256i h = _mm256_maskz_loadu_epi16(m, w);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
MIND4_TARGET_AVX512 inline __m512 load16_masked(const float* w, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, w);
}

template <int R, int TT, typename W>
MIND4_TARGET_AVX512 void tile_avx512(const float* x, int64_t ldx, const W* w, int k,
                                     float* dots) {
  __m512 acc[R][TT];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm512_setzero_ps();
  int j = 0;
  for (; j + 16 <= k; j += 16) {
    __m512 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wv[r] = load16(w + int64_t(r) * k + j);
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) {
      __m512 xv = _mm512_loadu_ps(x + t * ldx + j);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  if (j < k) {  // partial tile: masked loads read nothing past the row
    __mmask16 m = __mmask16((1u << (k - j)) - 1);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load16_masked(w + int64_t(r) * k + j, m);
    for (int t = 0; t < TT; ++t) {
      __m512 xv = _mm512_maskz_loadu_ps(m, x + t * ldx + j);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t) dots[r * kTokens + t] = _mm512_reduce_add_ps(acc[r][t]);
}

// ---------------------------------------------------------------- tiling driver
using TileFn = void (*)(const float*, int64_t, const void*, int, float*);

template <int R, int TT, typename W, bool kAvx512>
void tile_entry(const float* x, int64_t ldx, const void* w, int k, float* dots) {
  if constexpr (kAvx512)
    tile_avx512<R, TT>(x, ldx, static_cast<const W*>(w), k, dots);
  else
    tile_avx2<R, TT>(x, ldx, static_cast<const W*>(w), k, dots);
}

template <typename W, bool kAvx512>
void matmul_tiled(const float* x, int64_t ldx, int tokens, const W* w, int k, const float* bias,
                  float* out, int64_t ldo, int n_begin, int n_end) {
  // [rows == kRows ? 0 : 1][tokens in tile - 1]
  static constexpr TileFn kTiles[2][kTokens] = {
      {tile_entry<kRows, 1, W, kAvx512>, tile_entry<kRows, 2, W, kAvx512>,
       tile_entry<kRows, 3, W, kAvx512>, tile_entry<kRows, 4, W, kAvx512>},
      {tile_entry<1, 1, W, kAvx512>, tile_entry<1, 2, W, kAvx512>, tile_entry<1, 3, W, kAvx512>,
       tile_entry<1, 4, W, kAvx512>}};
  float dots[kRows * kTokens];
  for (int n = n_begin; n < n_end;) {
    int rows = n_end - n >= kRows ? kRows : 1;
    const W* wr = w + int64_t(n) * k;
    for (int t = 0; t < tokens; t += kTokens) {
      int tt = std::min(kTokens, tokens - t);
      kTiles[rows == kRows ? 0 : 1][tt - 1](x + t * ldx, ldx, wr, k, dots);
      for (int r = 0; r < rows; ++r) {
        float b = bias ? bias[n + r] : 0.0f;
        for (int i = 0; i < tt; ++i) out[(t + i) * ldo + n + r] = dots[r * kTokens + i] + b;
      }
    }
    n += rows;
  }
}

template <typename W>
void matmul_dispatch(const float* x, int64_t ldx, int tokens, const W* w, int k,
                     const float* bias, float* out, int64_t ldo, int n_begin, int n_end) {
  switch (active_isa()) {
    case Isa::kAvx512:
      return matmul_tiled<W, true>(x, ldx, tokens, w, k, bias, out, ldo, n_begin, n_end);
    case Isa::kAvx2:
      return matmul_tiled<W, false>(x, ldx, tokens, w, k, bias, out, ldo, n_begin, n_end);
    case Isa::kScalar:
      return matmul_scalar(x, ldx, tokens, w, k, bias, out, ldo, n_begin, n_end);
  }
}

}  // namespace

void f32_bf16w_matmul(const float* x, int64_t ldx, int tokens, const uint16_t* w, int k,
                      const float* bias, float* out, int64_t ldo, int n_begin, int n_end) {
  matmul_dispatch(x, ldx, tokens, w, k, bias, out, ldo, n_begin, n_end);
}

void f32_f32w_matmul(const float* x, int64_t ldx, int tokens, const float* w, int k,
                     const float* bias, float* out, int64_t ldo, int n_begin, int n_end) {
  matmul_dispatch(x, ldx, tokens, w, k, bias, out, ldo, n_begin, n_end);
}

}  // namespace mind4::cpu
