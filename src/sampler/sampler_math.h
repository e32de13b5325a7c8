// Numeric kernels of the sampler, written so that every build gives the same bits: no libm, no
// table, and the same operations in the scalar and the vector form (GCC/Clang vector extensions:
// SSE on baseline x86-64, NEON on ARM, no intrinsics). One caveat: a build for a target with FMA
// (-march=native) lets GCC fuse a * b + c unless -ffp-contract=off is given; the
// VectorAndScalarExpGiveTheSameBits test catches a divergence between the two forms. exp has relative error <= 3e-7 against exp in double (tested); results
// below exp(-87) are flushed to 0, which changes a probability by < 1e-37 relative to the most
// likely token.
#pragma once

#include <bit>
#include <cstdint>

namespace mind4::sampler_math {

inline constexpr float kExpLowest = -87.0f;
inline constexpr float kLog2e = 1.44269504f;
inline constexpr float kShifter = 12582912.0f;   // 1.5 * 2^23: adding it rounds to an integer
inline constexpr float kLn2High = 0.693145752f;  // 16 significant bits: n * kLn2High is exact
inline constexpr float kLn2Low = 1.42860677e-6f;

// exp(x) for x <= 0 (x = -inf gives 0).
inline float exp_nonpositive(float x) {
  const bool underflow = !(x >= kExpLowest);
  x = underflow ? kExpLowest : x;
  // n = round(x / ln 2); r = x - n ln 2 in two parts (Cody-Waite) so that r keeps full precision.
  float t = x * kLog2e + kShifter;
  float n = t - kShifter;
  float r = x - n * kLn2High;
  r = r - n * kLn2Low;
  // Taylor polynomial of degree 7 on |r| <= ln2 / 2: truncation error < 6e-9 relative.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n for n in [-126, 0] built in the exponent field.
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float y = p * std::bit_cast<float>(bits);
  return underflow ? 0.0f : y;
}

// exp(-d) for d >= 0 (d = +inf gives 0).
inline float exp_neg(float d) {
  return exp_nonpositive(-d);
}

// out[i] = exp((values[i] - max) * scale) for i < n, bit-identical to exp_nonpositive; returns
// the sum in double.
double exp_shifted(const float* values, float* out, int n, float max, float scale);

// Copies n floats and returns their maximum (-inf when all are -inf); *bad is set when any value
// is NaN or +inf.
float copy_max(const float* in, float* out, int n, bool* bad);

// The maximum of n floats (-inf for n = 0); NaN-free input.
float max_of(const float* x, int n);

// The first i with target < w[0] + ... + w[i] (partial sums in double, by blocks), or the last
// index with w > 0 when rounding leaves the target beyond the total; -1 when all are 0.
int find_cumulative(const float* w, int n, double target);

// Writes the indices i < n with w[i] >= threshold to out, in order; returns how many.
int indices_at_least(const float* w, int n, float threshold, int* out);

}  // namespace mind4::sampler_math
