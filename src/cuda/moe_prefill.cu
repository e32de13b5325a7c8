// The tensor-core route of the expert products for large steps (prefill). CUDA cores cannot keep
// up with 2048 rows x 4 experts x 50 MFLOP per layer; cuBLAS can, given bf16 matrices. So each
// active expert's packed matrix is expanded once per step into a scratch buffer (33 MB for mlp1
// of gpt-oss-20b, written at memory speed) and multiplied by all of its rows at once; the clamped
// SwiGLU and the biases are applied by the small kernels here. Decode never takes this route: it
// reads the packed weights directly (moe_mf4.cu).
#include "cuda/device_util.cuh"

namespace mind4::cuda {
namespace {

__constant__ float kExpandE2M1[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                      -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// One thread per 32-weight block: 16 bytes in, 32 values out (in element order), written as
// 16-byte stores of values packed in registers.
__device__ __forceinline__ uint32_t expand_pack2(float lo, float hi, __nv_bfloat16) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&p);
}

template <typename T>
__global__ void mf4_expand_kernel(const uint8_t* __restrict__ blocks,
                                  const uint8_t* __restrict__ scales, int64_t nblocks,
                                  T* __restrict__ out) {
  // The table in shared memory: lanes index it with different nibbles, which __constant__
  // memory serves one address at a time (16 distinct floats sit in 16 distinct banks here).
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = kExpandE2M1[threadIdx.x];
  __syncthreads();
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= nblocks) return;
  const uint4 w = *reinterpret_cast<const uint4*>(blocks + i * 16);
  const uint8_t s = scales[i];
  const float scale = __uint_as_float(s ? uint32_t(s) << 23 : 0x00400000u);
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  uint4* dst = reinterpret_cast<uint4*>(out + i * 32);
  if constexpr (sizeof(T) == 2) {
    // 8 bytes of weights (16 values) per pair of 16-byte stores.
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      uint32_t packed[4];
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const uint32_t byte = (words[q] >> (8 * b)) & 0xffu;
        packed[b] = expand_pack2(lut[byte & 15u] * scale, lut[byte >> 4] * scale, T{});
      }
      dst[q] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    }
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t b0 = (words[q] >> (16 * h)) & 0xffu, b1 = (words[q] >> (16 * h + 8)) & 0xffu;
        reinterpret_cast<float4*>(dst)[2 * q + h] =
            make_float4(lut[b0 & 15u] * scale, lut[b0 >> 4] * scale, lut[b1 & 15u] * scale,
                        lut[b1 >> 4] * scale);
      }
  }
}

template <typename T>
__global__ void moe_bias_swiglu_kernel(const float* __restrict__ h, const float* __restrict__ bias,
                                       const int* __restrict__ group_expert, int I, float limit,
                                       T* __restrict__ act) {
  const int64_t a = blockIdx.x;
  const float* b = bias + int64_t(group_expert[a]) * 2 * I;
  for (int p = threadIdx.x; p < I; p += blockDim.x) {
    act[a * I + p] = from_f32<T>(moe_swiglu(h[a * 2 * I + 2 * p] + b[2 * p],
                                            h[a * 2 * I + 2 * p + 1] + b[2 * p + 1], limit));
  }
}

__global__ void moe_bias_add_kernel(float* __restrict__ y, const float* __restrict__ bias,
                                    const int* __restrict__ group_expert, int H) {
  const int64_t a = blockIdx.x;
  const float* b = bias + int64_t(group_expert[a]) * H;
  for (int j = threadIdx.x; j < H; j += blockDim.x) y[a * H + j] += b[j];
}

}  // namespace

void mf4_expand(ActType t, const uint8_t* blocks, const uint8_t* scales, int rows, int cols,
                void* out, cudaStream_t stream) {
  MIND4_CUDA_ARG(blocks && scales && out, "mf4_expand", "null pointer");
  MIND4_CUDA_ARG(rows > 0 && cols > 0 && cols % 32 == 0, "mf4_expand", "rows = ", rows,
                 ", cols = ", cols, " (a multiple of 32)");
  MIND4_CUDA_ARG(
      reinterpret_cast<uintptr_t>(blocks) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0,
      "mf4_expand", "blocks and out must be 16-byte aligned");
  const int64_t nblocks = int64_t(rows) * (cols / 32);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    mf4_expand_kernel<T><<<unsigned((nblocks + 255) / 256), 256, 0, stream>>>(
        blocks, scales, nblocks, static_cast<T*>(out));
  });
  check_launch(t == ActType::kF32 ? "mf4_expand_mf4_f32" : "mf4_expand_mf4_bf16");
}

void moe_bias_swiglu(ActType t, const float* h, const float* bias, const int* group_expert, int A,
                     int I, float limit, void* act_out, cudaStream_t stream) {
  MIND4_CUDA_ARG(h && bias && group_expert && act_out, "moe_bias_swiglu", "null pointer");
  MIND4_CUDA_ARG(A >= 0 && I > 0, "moe_bias_swiglu", "A = ", A, ", I = ", I);
  if (A == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    moe_bias_swiglu_kernel<T>
        <<<A, 256, 0, stream>>>(h, bias, group_expert, I, limit, static_cast<T*>(act_out));
  });
  check_launch(t == ActType::kF32 ? "moe_bias_swiglu_f32" : "moe_bias_swiglu_bf16");
}

void moe_bias_add(float* y, const float* bias, const int* group_expert, int A, int H,
                  cudaStream_t stream) {
  MIND4_CUDA_ARG(y && bias && group_expert, "moe_bias_add", "null pointer");
  MIND4_CUDA_ARG(A >= 0 && H > 0, "moe_bias_add", "A = ", A, ", H = ", H);
  if (A == 0) return;
  moe_bias_add_kernel<<<A, 256, 0, stream>>>(y, bias, group_expert, H);
  check_launch("moe_bias_add_f32");
}

}  // namespace mind4::cuda
