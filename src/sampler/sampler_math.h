// exp() for the sampler's weights, exp(x) with x <= 0, written so that the compiler vectorises
// the loop over a vocabulary (libm's expf is a call per element) and so that every build gives
// the same bits: no libm, no table, no fused multiply-add it could choose differently. Relative
// error <= 3e-7 against exp in double (tested); results below exp(-87) are flushed to 0, which
// changes a probability by < 1e-37 relative to the most likely token.
#pragma once

#include <bit>
#include <cstdint>

namespace mind4::sampler_math {

inline float exp_nonpositive(float x) {
  // x in [-87, 0]; NaN-free inputs (x = -inf from masked tokens becomes 0 via the clamp flag).
  const bool underflow = !(x >= -87.0f);
  x = underflow ? -87.0f : x;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (round-to-nearest of the FPU), r = x - n ln 2 in
  // two parts (Cody-Waite) so that r keeps full precision.
  const float shifter = 12582912.0f;
  float t = x * 1.44269504f + shifter;
  float n = t - shifter;
  float r = x - n * 0.693145752f;  // ln2 high part: exact product for |n| <= 2^9
  r = r - n * 1.42860677e-6f;      // ln2 low part
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
  float scale = std::bit_cast<float>(bits);
  float y = p * scale;
  return underflow ? 0.0f : y;
}

// exp(-d) for d >= 0 (d = +inf gives 0).
inline float exp_neg(float d) {
  return exp_nonpositive(-d);
}

// out[i] = exp((values[i] - max) * scale) for i < n; returns the sum in double.
double exp_shifted(const float* values, float* out, int n, float max, float scale);

}  // namespace mind4::sampler_math
