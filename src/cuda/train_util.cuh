// Device helpers of the training kernels: block-wide sum and max (any block size that is a
// multiple of 32, up to 1024), pointer arithmetic on act buffers, and the launch grid of
// elementwise kernels.
#pragma once

#include <algorithm>

#include "cuda/device_util.cuh"

namespace mind4::cuda {

// Every thread of the block gets the total. Two calls in a row are safe (the shared array is
// read before anyone can write it again: the second __syncthreads).
template <typename F>
__device__ __forceinline__ float train_block_reduce(float v, F op, float identity) {
  __shared__ float part[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    const int nw = blockDim.x >> 5;
    float s = threadIdx.x < nw ? part[threadIdx.x] : identity;
    for (int o = 16; o > 0; o >>= 1) s = op(s, __shfl_xor_sync(0xffffffffu, s, o));
    if (threadIdx.x == 0) total = s;
  }
  __syncthreads();
  const float r = total;
  __syncthreads();
  return r;
}
__device__ __forceinline__ float train_block_sum(float v) {
  return train_block_reduce(
      v, [](float a, float b) { return a + b; }, 0.0f);
}
__device__ __forceinline__ float train_block_max(float v) {
  return train_block_reduce(
      v, [](float a, float b) { return fmaxf(a, b); }, -INFINITY);
}

// RoPE's transpose for the pair (i, i + D/2) of head hh of a packed q|k|v row at position s,
// stored as T at dst (the row): q and k heads (hh < rotated = NH + NKV) turn back by the
// position's angle, v heads pass through. The backward of both attention routes.
template <typename T>
__device__ __forceinline__ void train_rope_bwd_pair(float d1, float d2, int hh, int rotated,
                                                    const float* __restrict__ cos_t,
                                                    const float* __restrict__ sin_t, int s, int i,
                                                    int D, T* __restrict__ dst) {
  const int h2 = D / 2;
  float y1 = d1, y2 = d2;
  if (hh < rotated) {
    const float c = cos_t[s * h2 + i], sn = sin_t[s * h2 + i];
    y1 = d1 * c + d2 * sn;
    y2 = d2 * c - d1 * sn;
  }
  dst[hh * D + i] = from_f32<T>(y1);
  dst[hh * D + i + h2] = from_f32<T>(y2);
}

// Grid of an elementwise kernel over n items, 256 threads a block.
inline int train_blocks(int64_t n, int threads = 256) {
  return int(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 65535 * 8)));
}

}  // namespace mind4::cuda
