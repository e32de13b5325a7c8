// Embedding gather: one block per row copies the token's row of the table into the f32 residual.
#include "cuda/device_util.cuh"

namespace mind4::cuda {
namespace {

template <typename T>
__global__ void embedding_gather_kernel(const T* __restrict__ table, const int* __restrict__ tokens,
                                        int H, float* __restrict__ x) {
  const int r = blockIdx.x;
  const T* src = table + int64_t(tokens[r]) * H;
  for (int j = threadIdx.x; j < H; j += blockDim.x) x[int64_t(r) * H + j] = to_f32(src[j]);
}

}  // namespace

void embedding_gather(ActType t, const void* table, const int* tokens, int B, int H, float* x,
                      cudaStream_t stream) {
  MIND4_CUDA_ARG(table && tokens && x, "embedding_gather", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && H > 0, "embedding_gather", "B = ", B, ", H = ", H);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    embedding_gather_kernel<T><<<B, 256, 0, stream>>>(static_cast<const T*>(table), tokens, H, x);
  });
  check_launch(t == ActType::kF32 ? "embedding_gather_f32w_f32" : "embedding_gather_bf16w_f32");
}

}  // namespace mind4::cuda
