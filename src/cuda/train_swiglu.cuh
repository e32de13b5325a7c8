// The clamped SwiGLU's backward for one (gate, linear) pair, shared by the plain backward kernel
// (train_moe.cu) and the one that also sums the expert bias gradient (train_bias_sums.cu), so that
// both write the same bits.
#pragma once

#include <cuda_runtime.h>

namespace mind4::cuda {

constexpr float kTrainSwigluAlpha = 1.702f;

// From the saved pre-activations hg (gate) and hl (linear) and the output's gradient d: the
// gradients of hg and hl (0 where the clamp cut the value off).
__device__ __forceinline__ void train_swiglu_pair_bwd(float hg, float hl, float d, float limit,
                                                      float& dg, float& dl) {
  const float g = fminf(hg, limit), l = fminf(fmaxf(hl, -limit), limit);
  const float sig = 1.0f / (1.0f + expf(-kTrainSwigluAlpha * g));
  dg = hg <= limit ? d * (l + 1.0f) * sig * (1.0f + kTrainSwigluAlpha * g * (1.0f - sig)) : 0.0f;
  dl = fabsf(hl) <= limit ? d * g * sig : 0.0f;
}

}  // namespace mind4::cuda
