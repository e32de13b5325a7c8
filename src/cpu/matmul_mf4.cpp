// MXFP4-weight matrix products (see matmul.h). The packed nibbles are decoded in registers: the
// 16 bytes of a block widen to 16 int32 lanes, the low nibbles index a 16-entry e2m1 table with
// one permute (AVX-512) or an 8-entry magnitude table plus a sign xor (AVX2), the high nibbles
// likewise, and the block's 2^(s-127) comes from exponent bits. Because the low nibbles are the
// even elements, the activations are pre-arranged per block as [evens, odds] (mf4_deinterleave),
// which costs one pass over K floats instead of a shuffle per weight block.
#include <immintrin.h>

// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 reduce/zero
// intrinsics (a known false positive of the headers, not of this code).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>

#include "core/dtype.h"
#include "cpu/isa.h"
#include "cpu/matmul.h"

namespace mind4::cpu {
namespace {

constexpr int kRows = 4;
constexpr int kTokens = 4;

// ---------------------------------------------------------------- scalar
void mf4_matmul_scalar(const float* x, int64_t ldx, int tokens, const uint8_t* blocks,
                       const uint8_t* scales, int k, const float* bias, float* out, int64_t ldo,
                       int n_begin, int n_end) {
  const int nb = k / 32;
  for (int n = n_begin; n < n_end; ++n) {
    const uint8_t* rb = blocks + int64_t(n) * nb * 16;
    const uint8_t* rs = scales + int64_t(n) * nb;
    for (int t = 0; t < tokens; ++t) {
      const float* xt = x + t * ldx;
      float acc = 0.0f;
      for (int b = 0; b < nb; ++b) {
        float part = 0.0f;
        for (int i = 0; i < 16; ++i) {
          uint8_t byte = rb[b * 16 + i];
          part += kE2M1Values[byte & 15] * xt[b * 32 + i];
          part += kE2M1Values[byte >> 4] * xt[b * 32 + 16 + i];
        }
        acc += part * e8m0_scale(rs[b]);
      }
      out[t * ldo + n] = acc + (bias ? bias[n] : 0.0f);
    }
  }
}

// ---------------------------------------------------------------- AVX2
MIND4_TARGET_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 8 nibbles (in int32 lanes) -> their e2m1 values: magnitude from a table, sign bit from bit 3.
MIND4_TARGET_AVX2 inline __m256 e2m1_avx2(__m256i nib, __m256 magnitudes) {
  __m256 mag = _mm256_permutevar8x32_ps(magnitudes, nib);  // uses the low 3 bits only
  __m256i sign = _mm256_slli_epi32(_mm256_and_si256(nib, _mm256_set1_epi32(8)), 28);
  return _mm256_xor_ps(mag, _mm256_castsi256_ps(sign));
}

template <int R, int TT>
MIND4_TARGET_AVX2 void mf4_tile_avx2(const float* x, int64_t ldx, const uint8_t* blocks,
                                     const uint8_t* scales, int nb, float* dots) {
  const __m256 magnitudes = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
  const __m256i low_mask = _mm256_set1_epi32(15);
  __m256 acc[R][TT];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm256_setzero_ps();
  for (int b = 0; b < nb; ++b) {
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {  // bytes 0-7 then 8-15 of the block
      __m256 we[R], wo[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const uint8_t* p = blocks + (int64_t(r) * nb + b) * 16 + half * 8;
        __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        __m256 s = _mm256_set1_ps(e8m0_scale(scales[int64_t(r) * nb + b]));
        we[r] = _mm256_mul_ps(e2m1_avx2(_mm256_and_si256(bytes, low_mask), magnitudes), s);
        wo[r] = _mm256_mul_ps(e2m1_avx2(_mm256_srli_epi32(bytes, 4), magnitudes), s);
      }
#pragma GCC unroll 4
      for (int t = 0; t < TT; ++t) {
        const float* xb = x + t * ldx + b * 32 + half * 8;
        __m256 xe = _mm256_loadu_ps(xb), xo = _mm256_loadu_ps(xb + 16);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          acc[r][t] = _mm256_fmadd_ps(we[r], xe, acc[r][t]);
          acc[r][t] = _mm256_fmadd_ps(wo[r], xo, acc[r][t]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t) dots[r * kTokens + t] = hsum8(acc[r][t]);
}

// ---------------------------------------------------------------- AVX-512
template <int R, int TT>
MIND4_TARGET_AVX512 void mf4_tile_avx512(const float* x, int64_t ldx, const uint8_t* blocks,
                                         const uint8_t* scales, int nb, float* dots) {
  const __m512 table = _mm512_loadu_ps(kE2M1Values);
  const __m512i low_mask = _mm512_set1_epi32(15);
  __m512 acc[R][TT];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m512 we[R], wo[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = blocks + (int64_t(r) * nb + b) * 16;
      __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      __m512 s = _mm512_set1_ps(e8m0_scale(scales[int64_t(r) * nb + b]));
      we[r] = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(bytes, low_mask), table), s);
      wo[r] = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table), s);
    }
#pragma GCC unroll 4
    for (int t = 0; t < TT; ++t) {
      const float* xb = x + t * ldx + b * 32;
      __m512 xe = _mm512_loadu_ps(xb), xo = _mm512_loadu_ps(xb + 16);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        acc[r][t] = _mm512_fmadd_ps(we[r], xe, acc[r][t]);
        acc[r][t] = _mm512_fmadd_ps(wo[r], xo, acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < TT; ++t) dots[r * kTokens + t] = _mm512_reduce_add_ps(acc[r][t]);
}

MIND4_TARGET_AVX512 void mf4_to_f32_avx512(const uint8_t* blocks, const uint8_t* scales,
                                           int64_t nblocks, float* out) {
  const __m512 table = _mm512_loadu_ps(kE2M1Values);
  const __m512i low_mask = _mm512_set1_epi32(15);
  // Interleave evens and odds back into element order.
  const __m512i idx_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i idx_hi =
      _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int64_t b = 0; b < nblocks; ++b) {
    __m512i bytes =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + b * 16)));
    __m512 s = _mm512_set1_ps(e8m0_scale(scales[b]));
    __m512 ev = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(bytes, low_mask), table), s);
    __m512 od = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table), s);
    _mm512_storeu_ps(out + b * 32, _mm512_permutex2var_ps(ev, idx_lo, od));
    _mm512_storeu_ps(out + b * 32 + 16, _mm512_permutex2var_ps(ev, idx_hi, od));
  }
}

MIND4_TARGET_AVX2 void mf4_to_f32_avx2(const uint8_t* blocks, const uint8_t* scales,
                                       int64_t nblocks, float* out) {
  const __m256 magnitudes = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
  for (int64_t b = 0; b < nblocks; ++b) {
    __m256 s = _mm256_set1_ps(e8m0_scale(scales[b]));
    for (int half = 0; half < 2; ++half) {
      __m256i bytes = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blocks + b * 16 + half * 8)));
      __m256 ev = _mm256_mul_ps(
          e2m1_avx2(_mm256_and_si256(bytes, _mm256_set1_epi32(15)), magnitudes), s);
      __m256 od = _mm256_mul_ps(e2m1_avx2(_mm256_srli_epi32(bytes, 4), magnitudes), s);
      // (e0 o0 e1 o1 | e4 o4 ...) per 128-bit lane, then put the lanes in order.
      __m256 a = _mm256_unpacklo_ps(ev, od), c = _mm256_unpackhi_ps(ev, od);
      _mm256_storeu_ps(out + b * 32 + half * 16, _mm256_permute2f128_ps(a, c, 0x20));
      _mm256_storeu_ps(out + b * 32 + half * 16 + 8, _mm256_permute2f128_ps(a, c, 0x31));
    }
  }
}

// ---------------------------------------------------------------- tiling driver
using TileFn = void (*)(const float*, int64_t, const uint8_t*, const uint8_t*, int, float*);

template <bool kAvx512>
void mf4_matmul_tiled(const float* x, int64_t ldx, int tokens, const uint8_t* blocks,
                      const uint8_t* scales, int k, const float* bias, float* out, int64_t ldo,
                      int n_begin, int n_end) {
  static constexpr TileFn kTiles[2][kTokens] = {
      {kAvx512 ? mf4_tile_avx512<kRows, 1> : mf4_tile_avx2<kRows, 1>,
       kAvx512 ? mf4_tile_avx512<kRows, 2> : mf4_tile_avx2<kRows, 2>,
       kAvx512 ? mf4_tile_avx512<kRows, 3> : mf4_tile_avx2<kRows, 3>,
       kAvx512 ? mf4_tile_avx512<kRows, 4> : mf4_tile_avx2<kRows, 4>},
      {kAvx512 ? mf4_tile_avx512<1, 1> : mf4_tile_avx2<1, 1>,
       kAvx512 ? mf4_tile_avx512<1, 2> : mf4_tile_avx2<1, 2>,
       kAvx512 ? mf4_tile_avx512<1, 3> : mf4_tile_avx2<1, 3>,
       kAvx512 ? mf4_tile_avx512<1, 4> : mf4_tile_avx2<1, 4>}};
  const int nb = k / 32;
  float dots[kRows * kTokens];
  for (int n = n_begin; n < n_end;) {
    int rows = n_end - n >= kRows ? kRows : 1;
    const uint8_t* rb = blocks + int64_t(n) * nb * 16;
    const uint8_t* rs = scales + int64_t(n) * nb;
    for (int t = 0; t < tokens; t += kTokens) {
      int tt = std::min(kTokens, tokens - t);
      kTiles[rows == kRows ? 0 : 1][tt - 1](x + t * ldx, ldx, rb, rs, nb, dots);
      for (int r = 0; r < rows; ++r) {
        float b = bias ? bias[n + r] : 0.0f;
        for (int i = 0; i < tt; ++i) out[(t + i) * ldo + n + r] = dots[r * kTokens + i] + b;
      }
    }
    n += rows;
  }
}

}  // namespace

void f32_mf4w_matmul(const float* x_deint, int64_t ldx, int tokens, const uint8_t* blocks,
                     const uint8_t* scales, int k, const float* bias, float* out, int64_t ldo,
                     int n_begin, int n_end) {
  switch (active_isa()) {
    case Isa::kAvx512:
      return mf4_matmul_tiled<true>(x_deint, ldx, tokens, blocks, scales, k, bias, out, ldo,
                                    n_begin, n_end);
    case Isa::kAvx2:
      return mf4_matmul_tiled<false>(x_deint, ldx, tokens, blocks, scales, k, bias, out, ldo,
                                     n_begin, n_end);
    case Isa::kScalar:
      return mf4_matmul_scalar(x_deint, ldx, tokens, blocks, scales, k, bias, out, ldo, n_begin,
                               n_end);
  }
}

void mf4_deinterleave(const float* x, int k, float* out) {
  for (int b = 0; b < k; b += 32)
    for (int i = 0; i < 16; ++i) {
      out[b + i] = x[b + 2 * i];
      out[b + 16 + i] = x[b + 2 * i + 1];
    }
}

void mf4_to_f32(const uint8_t* blocks, const uint8_t* scales, int64_t nblocks, float* out) {
  switch (active_isa()) {
    case Isa::kAvx512: return mf4_to_f32_avx512(blocks, scales, nblocks, out);
    case Isa::kAvx2: return mf4_to_f32_avx2(blocks, scales, nblocks, out);
    case Isa::kScalar:
      for (int64_t b = 0; b < nblocks; ++b) {
        float s = e8m0_scale(scales[b]);
        for (int i = 0; i < 16; ++i) {
          out[b * 32 + 2 * i] = kE2M1Values[blocks[b * 16 + i] & 15] * s;
          out[b * 32 + 2 * i + 1] = kE2M1Values[blocks[b * 16 + i] >> 4] * s;
        }
      }
      return;
  }
}

}  // namespace mind4::cpu
