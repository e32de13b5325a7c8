// Training cross-entropy over the vocabulary (loss and its gradient in one pass over each row's
// logits) and the embedding's backward scatter-add.
#include "cuda/train_kernels.h"
#include "cuda/train_util.cuh"
#include "cuda/train_vec.cuh"

namespace mind4::cuda {
namespace {

constexpr int kTrainCeThreads = 512;
// The wide kernel keeps each thread's share of its row in registers, at most this many 16-byte
// words (32 registers), so that the row is read from memory once instead of three times.
constexpr int kTrainCeMaxWords = 8;

// A block per row, the row held in registers: thread t holds the 16-byte words t + k kThreads,
// k < kWords. The max, the sum of exponentials and the gradient come from the registers; the
// math is that of train_cross_entropy_kernel below (which serves rows that do not fit). Two
// blocks per multiprocessor at 512 x 8 words: one reduces while the other loads.
template <typename T, int kThreads, int kWords>
__global__ void __launch_bounds__(kThreads, kThreads* kWords <= 4096 ? 2 : 1)
    train_cross_entropy_wide_kernel(const T* __restrict__ logits, const int* __restrict__ targets,
                                    int V, float scale, float* __restrict__ row_loss,
                                    T* __restrict__ dlogits) {
  constexpr int kPer = 16 / int(sizeof(T));
  const int64_t r = blockIdx.x;
  const int words = V / kPer;
  const uint4* lr = reinterpret_cast<const uint4*>(logits + r * V);
  uint4 w[kWords];
#pragma unroll
  for (int k = 0; k < kWords; ++k) {
    const int at = threadIdx.x + k * kThreads;
    w[k] = at < words ? lr[at] : make_uint4(0, 0, 0, 0);
  }
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < kWords; ++k) {
    if (threadIdx.x + k * kThreads >= words) continue;
    float x[kPer];
    train_unpack16<T>(w[k], x);
#pragma unroll
    for (int i = 0; i < kPer; ++i) m = fmaxf(m, x[i]);
  }
  m = train_block_max(m);
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kWords; ++k) {
    if (threadIdx.x + k * kThreads >= words) continue;
    float x[kPer];
    train_unpack16<T>(w[k], x);
#pragma unroll
    for (int i = 0; i < kPer; ++i) sum += __expf(x[i] - m);
  }
  sum = train_block_sum(sum);
  const float lse = m + logf(sum);
  const int target = targets[r];
  if (threadIdx.x == 0) row_loss[r] = lse - to_f32(logits[r * V + target]);
  if (!dlogits) return;
  uint4* dr = reinterpret_cast<uint4*>(dlogits + r * V);
#pragma unroll
  for (int k = 0; k < kWords; ++k) {
    const int at = threadIdx.x + k * kThreads;
    if (at >= words) continue;
    float x[kPer];
    train_unpack16<T>(w[k], x);
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      x[i] = __expf(x[i] - lse) * scale - (at * kPer + i == target ? scale : 0.0f);
    dr[at] = train_pack16<T>(x);
  }
}

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
  const bool aligned = train_aligned16(logits) && (!dlogits || train_aligned16(dlogits));
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    const auto* lg = static_cast<const T*>(logits);
    T* dl = static_cast<T*>(dlogits);
    // Rows of whole 16-byte words that fit the registers go to the wide kernel, with the fewest
    // words per thread that cover the row.
    constexpr int kPer = 16 / int(sizeof(T));
    const int words = V / kPer;
    auto wide = [&](auto kernel, int threads) {
      kernel<<<NT, threads, 0, stream>>>(lg, targets, V, scale, row_loss, dl);
    };
    if (!aligned || V % kPer != 0 || words > 1024 * kTrainCeMaxWords)
      train_cross_entropy_kernel<T>
          <<<NT, kTrainCeThreads, 0, stream>>>(lg, targets, V, scale, row_loss, dl);
    else if (words <= 512)
      wide(train_cross_entropy_wide_kernel<T, 512, 1>, 512);
    else if (words <= 512 * 2)
      wide(train_cross_entropy_wide_kernel<T, 512, 2>, 512);
    else if (words <= 512 * 4)
      wide(train_cross_entropy_wide_kernel<T, 512, 4>, 512);
    else if (words <= 512 * kTrainCeMaxWords)
      wide(train_cross_entropy_wide_kernel<T, 512, kTrainCeMaxWords>, 512);
    else
      wide(train_cross_entropy_wide_kernel<T, 1024, kTrainCeMaxWords>, 1024);
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
