// Training cross-entropy over the vocabulary (loss and its gradient in one pass over each row's
// logits) and the embedding's backward scatter-add.
#include "cuda/train_kernels.h"
#include "cuda/train_util.cuh"

namespace mind4::cuda {
namespace {

constexpr int kTrainCeThreads = 512;

template <typename T>
__global__ void __launch_bounds__(kTrainCeThreads)
    train_cross_entropy_kernel(const T* __restrict__ logits, const int* __restrict__ targets, int V,
                               float scale, float* __restrict__ row_loss, T* __restrict__ dlogits) {
  const int64_t r = blockIdx.x;
  const T* lr = logits + r * V;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, to_f32(lr[i]));
  m = train_block_max(m);
  float sum = 0.0f;
  for (int i = threadIdx.x; i < V; i += blockDim.x) sum += __expf(to_f32(lr[i]) - m);
  sum = train_block_sum(sum);
  const float lse = m + logf(sum);
  const int target = targets[r];
  if (threadIdx.x == 0) row_loss[r] = lse - to_f32(lr[target]);
  if (!dlogits) return;
  T* dr = dlogits + r * V;
  for (int i = threadIdx.x; i < V; i += blockDim.x)
    dr[i] = from_f32<T>(__expf(to_f32(lr[i]) - lse) * scale - (i == target ? scale : 0.0f));
}

__global__ void train_embedding_bwd_kernel(const float* __restrict__ dx,
                                           const int* __restrict__ tokens, int H,
                                           float* __restrict__ grad) {
  const int64_t r = blockIdx.x;
  float* g = grad + int64_t(tokens[r]) * H;
  for (int j = threadIdx.x; j < H; j += blockDim.x) atomicAdd(g + j, dx[r * H + j]);
}

}  // namespace

void train_cross_entropy(ActType t, const void* logits, const int* targets, int NT, int V,
                         float scale, float* row_loss, void* dlogits, cudaStream_t stream) {
  MIND4_CUDA_ARG(logits && targets && row_loss, "train_cross_entropy", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && V > 0, "train_cross_entropy", "NT = ", NT, ", V = ", V);
  if (NT == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_cross_entropy_kernel<T><<<NT, kTrainCeThreads, 0, stream>>>(
        static_cast<const T*>(logits), targets, V, scale, row_loss, static_cast<T*>(dlogits));
  });
  check_launch(t == ActType::kF32 ? "train_cross_entropy_f32" : "train_cross_entropy_bf16");
}

void train_embedding_bwd(const float* dx, const int* tokens, int NT, int H, float* grad_table,
                         cudaStream_t stream) {
  MIND4_CUDA_ARG(dx && tokens && grad_table, "train_embedding_bwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && H > 0, "train_embedding_bwd", "NT = ", NT, ", H = ", H);
  if (NT == 0) return;
  train_embedding_bwd_kernel<<<NT, 256, 0, stream>>>(dx, tokens, H, grad_table);
  check_launch("train_embedding_bwd");
}

}  // namespace mind4::cuda
