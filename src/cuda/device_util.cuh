// Device helpers shared by the kernels: activation loads/stores as float, warp reductions, and
// the dispatch from ActType to the kernel's element type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"
#include "cuda/kernels.h"
#include "mind4/status.h"

namespace mind4::cuda {

__device__ __forceinline__ float to_f32(float v) {
  return v;
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Two consecutive elements (p must be 2-element aligned: every row length here is even).
__device__ __forceinline__ float2 load2(const float* p) {
  return *reinterpret_cast<const float2*>(p);
}
__device__ __forceinline__ float2 load2(const __nv_bfloat16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The int8 activations of the decode route (quantize_q8_32 and the kernels that quantize their own
// input): a block of 32 values has the scale d = max |v| / 127, and a value the step round(v / d)
// (0 in an all-zero block).
__device__ __forceinline__ float q8_scale(float amax) {
  return amax / 127.0f;
}
__device__ __forceinline__ int q8_round(float v, float d) {
  return d > 0.0f ? __float2int_rn(v / d) : 0;
}
// The folded decode chain's mlp1 input at one row: int16 blocks of 32 values, d = max |v| / 32767,
// each value rounded by q8_round (int8 there cost about 2% of the largest logit against HF;
// docs/perf-notes.md, S17.7).
__device__ __forceinline__ float q16_scale(float amax) {
  return amax / 32767.0f;
}

// The clamped SwiGLU of gpt-oss on a (gate, linear) pair whose biases are already added (every
// expert route's mlp1 epilogue).
__device__ __forceinline__ float moe_swiglu(float gate, float lin, float limit) {
  gate = fminf(gate, limit);
  lin = fminf(fmaxf(lin, -limit), limit);
  return gate / (1.0f + __expf(-1.702f * gate)) * (lin + 1.0f);
}

// Calls f(T{}) with T the element type of `t` (float or __nv_bfloat16).
template <typename F>
void dispatch_act(ActType t, F&& f) {
  if (t == ActType::kF32)
    f(float{});
  else
    f(__nv_bfloat16{});
}

}  // namespace mind4::cuda

// Launcher argument checks: kInvalidArgument naming the launcher.
#define MIND4_CUDA_ARG(cond, launcher, ...) \
  MIND4_CHECK(cond, ::mind4::Status::kInvalidArgument, launcher, ": ", __VA_ARGS__)
