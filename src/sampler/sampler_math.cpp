#include "sampler/sampler_math.h"

#include <cstring>
#include <limits>

namespace mind4::sampler_math {
namespace {

typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

inline f32x4 load(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, f32x4 v) {
  std::memcpy(p, &v, sizeof v);
}
inline f32x4 splat(float x) {
  return f32x4{x, x, x, x};
}

// The vector twin of exp_nonpositive: the same operations in the same order.
inline f32x4 exp_nonpositive4(f32x4 x) {
  const i32x4 ok = x >= splat(kExpLowest);
  x = ok ? x : splat(kExpLowest);
  f32x4 t = x * kLog2e + kShifter;
  f32x4 n = t - kShifter;
  f32x4 r = x - n * kLn2High;
  r = r - n * kLn2Low;
  f32x4 p = splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  i32x4 bits = (__builtin_convertvector(n, i32x4) + 127) << 23;
  f32x4 y = p * (f32x4)bits;  // a vector cast reinterprets the bits
  return ok ? y : splat(0.0f);
}

}  // namespace

double exp_shifted(const float* values, float* out, int n, float max, float scale) {
  const f32x4 vmax = splat(max), vscale = splat(scale);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    store(out + i, exp_nonpositive4((load(values + i) - vmax) * vscale));
    store(out + i + 4, exp_nonpositive4((load(values + i + 4) - vmax) * vscale));
  }
  for (; i < n; ++i) out[i] = exp_nonpositive((values[i] - max) * scale);
  // Summed in double with eight independent partial sums: a fixed order, so the same bits on
  // any machine, and no loss from adding 200k small floats to a large one.
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += out[i + j];
  for (; i < n; ++i) s[0] += out[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

float copy_max(const float* in, float* out, int n, bool* bad) {
  const float inf = std::numeric_limits<float>::infinity();
  f32x4 m0 = splat(-inf), m1 = m0;
  i32x4 flag = {0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    f32x4 a = load(in + i), b = load(in + i + 4);
    store(out + i, a);
    store(out + i + 4, b);
    // NaN and +inf both fail "x < +inf".
    flag |= ~(a < splat(inf)) | ~(b < splat(inf));
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  float m = -inf;
  bool any_bad = false;
  for (int j = 0; j < 4; ++j) {
    m = m0[j] > m ? m0[j] : m;
    m = m1[j] > m ? m1[j] : m;
    any_bad |= flag[j] != 0;
  }
  for (; i < n; ++i) {
    float x = in[i];
    out[i] = x;
    any_bad |= !(x < inf);
    m = x > m ? x : m;
  }
  *bad = any_bad;
  return m;
}

float max_of(const float* x, int n) {
  const float inf = std::numeric_limits<float>::infinity();
  f32x4 m0 = splat(-inf), m1 = m0;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    f32x4 a = load(x + i), b = load(x + i + 4);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  float m = -inf;
  for (int j = 0; j < 4; ++j) {
    m = m0[j] > m ? m0[j] : m;
    m = m1[j] > m ? m1[j] : m;
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

int find_cumulative(const float* w, int n, double target) {
  // Whole blocks are skipped on their sum (four independent chains) instead of one long chain
  // of dependent additions; the block holding the target is walked token by token.
  constexpr int kBlock = 64;
  double cum = 0.0;
  int i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    double s[4] = {0, 0, 0, 0};
    for (int j = 0; j < kBlock; j += 4)
      for (int q = 0; q < 4; ++q) s[q] += w[i + j + q];
    double block = (s[0] + s[1]) + (s[2] + s[3]);
    if (target < cum + block) break;
    cum += block;
  }
  int last = -1;
  for (; i < n; ++i) {
    if (w[i] <= 0.0f) continue;
    cum += w[i];
    last = i;
    if (target < cum) return i;
  }
  if (last >= 0) return last;
  // The target was beyond the total: the last token with weight, searching backwards.
  for (int j = n - 1; j >= 0; --j)
    if (w[j] > 0.0f) return j;
  return -1;
}

int indices_at_least(const float* w, int n, float threshold, int* out) {
  // Usually few values pass (the filters keep the head of a peaked distribution): a vector test
  // skips eight values at a time when none pass; a block with a match is written branch-free
  // (unconditional store, count advances on a match), so a dense match costs no mispredictions.
  const f32x4 t = splat(threshold);
  int count = 0;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    i32x4 hit = (load(w + i) >= t) | (load(w + i + 4) >= t);
    if ((hit[0] | hit[1] | hit[2] | hit[3]) == 0) continue;
    for (int j = i; j < i + 8; ++j) {
      out[count] = j;
      count += w[j] >= threshold ? 1 : 0;
    }
  }
  for (; i < n; ++i) {
    out[count] = i;
    count += w[i] >= threshold ? 1 : 0;
  }
  return count;
}

}  // namespace mind4::sampler_math
