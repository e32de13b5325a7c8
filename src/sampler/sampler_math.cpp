#include "sampler/sampler_math.h"

namespace mind4::sampler_math {

double exp_shifted(const float* values, float* out, int n, float max, float scale) {
  // Two loops on purpose: the first has no reduction, so it vectorises without -ffast-math; the
  // second sums in double with independent partial sums (a fixed order: the same bits on any
  // machine).
  for (int i = 0; i < n; ++i) out[i] = exp_nonpositive((values[i] - max) * scale);
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += out[i + j];
  for (; i < n; ++i) s[0] += out[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

}  // namespace mind4::sampler_math
