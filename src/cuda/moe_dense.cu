// Mixture-of-experts products for experts stored as plain matrices (bf16/f32 checkpoints, such as
// the trainer writes before export), in the activation dtype. The plain version: one warp per
// (assignment, output row or SwiGLU pair), lanes striding the columns; any sizes (no 32-multiple
// needed). Published checkpoints use MXFP4 experts (moe_mf4.cu), which is where speed matters.
#include "cuda/device_util.cuh"

namespace mind4::cuda {
namespace {

constexpr int kDenseWarps = 4;

template <typename T>
__device__ float cuda_dense_dot(const T* w, const T* x, int n, int lane) {
  float s = 0.0f;
  for (int c = lane; c < n; c += 32) s += to_f32(w[c]) * to_f32(x[c]);
  return warp_sum(s);
}

template <typename T>
__global__ void moe_mlp1_swiglu_dense_kernel(const T* __restrict__ x, const T* __restrict__ w1,
                                             const float* __restrict__ bias, MoeGroups g, int H,
                                             int I, float limit, T* __restrict__ act) {
  const int a = blockIdx.y, lane = threadIdx.x & 31;
  const int p = blockIdx.x * kDenseWarps + (threadIdx.x >> 5);  // SwiGLU pair
  if (p >= I) return;
  const int e = g.group_expert[a];
  const T* xr = x + int64_t(g.group_row[a]) * H;
  const T* wg = w1 + (int64_t(e) * 2 * I + 2 * p) * H;
  const float gate = cuda_dense_dot(wg, xr, H, lane) + bias[int64_t(e) * 2 * I + 2 * p];
  const float lin = cuda_dense_dot(wg + H, xr, H, lane) + bias[int64_t(e) * 2 * I + 2 * p + 1];
  if (lane == 0) act[int64_t(a) * I + p] = from_f32<T>(moe_swiglu(gate, lin, limit));
}

template <typename T>
__global__ void moe_mlp2_dense_kernel(const T* __restrict__ act, const T* __restrict__ w2,
                                      const float* __restrict__ bias, MoeGroups g, int H, int I,
                                      float* __restrict__ y) {
  const int a = blockIdx.y, lane = threadIdx.x & 31;
  const int n = blockIdx.x * kDenseWarps + (threadIdx.x >> 5);
  if (n >= H) return;
  const int e = g.group_expert[a];
  const float v = cuda_dense_dot(w2 + (int64_t(e) * H + n) * I, act + int64_t(a) * I, I, lane);
  if (lane == 0) y[int64_t(a) * H + n] = v + bias[int64_t(e) * H + n];
}

}  // namespace

void moe_mlp1_swiglu_dense(ActType t, const void* x, const void* w1, const float* bias, MoeGroups g,
                           int A, int H, int I, float limit, void* act_out, cudaStream_t stream) {
  MIND4_CUDA_ARG(x && w1 && bias && g.group_row && g.group_expert && act_out,
                 "moe_mlp1_swiglu_dense", "null pointer");
  MIND4_CUDA_ARG(A >= 0 && A <= 65535 && H > 0 && I > 0, "moe_mlp1_swiglu_dense", "A = ", A,
                 " (at most 65535), H = ", H, ", I = ", I);
  if (A == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    moe_mlp1_swiglu_dense_kernel<T>
        <<<dim3((I + kDenseWarps - 1) / kDenseWarps, A), kDenseWarps * 32, 0, stream>>>(
            static_cast<const T*>(x), static_cast<const T*>(w1), bias, g, H, I, limit,
            static_cast<T*>(act_out));
  });
  check_launch(t == ActType::kF32 ? "moe_mlp1_swiglu_f32_f32w" : "moe_mlp1_swiglu_bf16_bf16w");
}

void moe_mlp2_dense(ActType t, const void* act, const void* w2, const float* bias, MoeGroups g,
                    int A, int H, int I, float* y, cudaStream_t stream) {
  MIND4_CUDA_ARG(act && w2 && bias && g.group_expert && y, "moe_mlp2_dense", "null pointer");
  MIND4_CUDA_ARG(A >= 0 && A <= 65535 && H > 0 && I > 0, "moe_mlp2_dense", "A = ", A,
                 " (at most 65535), H = ", H, ", I = ", I);
  if (A == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    moe_mlp2_dense_kernel<T>
        <<<dim3((H + kDenseWarps - 1) / kDenseWarps, A), kDenseWarps * 32, 0, stream>>>(
            static_cast<const T*>(act), static_cast<const T*>(w2), bias, g, H, I, y);
  });
  check_launch(t == ActType::kF32 ? "moe_mlp2_f32_f32w" : "moe_mlp2_bf16_bf16w");
}

}  // namespace mind4::cuda
