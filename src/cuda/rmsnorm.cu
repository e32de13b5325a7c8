// RMSNorm fused with the residual add that precedes it. One block per row: the row's update and
// its sum of squares in one pass over x, the normed row written in the activation dtype. The
// residual stream stays f32 whatever the activation dtype, so that bf16 rounding does not
// accumulate over layers.
#include <algorithm>
#include <cstdint>

#include "cuda/device_util.cuh"
#include "cuda/pdl.cuh"

namespace mind4::cuda {
namespace {

// A step of one row (decode) is one block: it must be wide, or the row's latency chain (load,
// reduce, write) is walked by a few hundred threads and a 2880-wide norm takes 12+ us.
constexpr int kNormThreads = 1024;

__device__ float cuda_block_sum(float v) {
  __shared__ float partial[kNormThreads / 32];
  __shared__ float total;
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < kNormThreads / 32 ? partial[threadIdx.x] : 0.0f;
    s = warp_sum(s);
    if (threadIdx.x == 0) total = s;
  }
  __syncthreads();
  return total;
}

template <typename T>
__device__ void cuda_norm_row(const float* xr, const float* scale, int H, float eps, float ss,
                              T* out, float* out32) {
  const float r = rsqrtf(cuda_block_sum(ss) / H + eps);
  for (int j = threadIdx.x; j < H; j += blockDim.x) {
    const float v = xr[j] * r * scale[j];
    out[j] = from_f32<T>(v);
    if (out32) out32[j] = v;
  }
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    residual_rmsnorm_kernel(float* __restrict__ x, const T* __restrict__ delta,
                            const float* __restrict__ bias, const float* __restrict__ scale, int H,
                            float eps, T* __restrict__ out, float* __restrict__ out32) {
  pdl_wait();
  const int64_t r = blockIdx.x;
  float* xr = x + r * H;
  float ss = 0.0f;
  for (int j = threadIdx.x; j < H; j += blockDim.x) {
    float v = xr[j];
    if (delta) v += to_f32(delta[r * H + j]) + (bias ? bias[j] : 0.0f);
    xr[j] = v;
    ss += v * v;
  }
  cuda_norm_row(xr, scale, H, eps, ss, out + r * H, out32 ? out32 + r * H : nullptr);
}

template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    moe_combine_rmsnorm_kernel(float* __restrict__ x, const float* __restrict__ y,
                               const int* __restrict__ assign_at, const float* __restrict__ w,
                               int K, const float* __restrict__ scale, int H, float eps,
                               T* __restrict__ out, float* __restrict__ out32) {
  pdl_wait();
  const int64_t r = blockIdx.x;
  float* xr = x + r * H;
  float ss = 0.0f;
  for (int j = threadIdx.x; j < H; j += blockDim.x) {
    // Sum over slots in order, then add: the CPU line's order, so results agree bit-closely.
    float m = 0.0f;
    for (int s = 0; s < K; ++s) m += w[r * K + s] * y[int64_t(assign_at[r * K + s]) * H + j];
    const float v = xr[j] + m;
    xr[j] = v;
    ss += v * v;
  }
  cuda_norm_row(xr, scale, H, eps, ss, out + r * H, out32 ? out32 + r * H : nullptr);
}

// A copy, no conversion: rows of `words` Words (16-byte words where the rows allow it, else
// elements), a row per threadIdx.y, so that short rows still fill the block and every thread
// moves 16 bytes per load.
template <typename Word>
__global__ void gather_rows_kernel(const Word* __restrict__ src, const int* __restrict__ rows,
                                   int L, int words, Word* __restrict__ dst) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; i < L;
       i += int64_t(gridDim.x) * blockDim.y) {
    const Word* from = src + int64_t(rows[i]) * words;
    for (int j = threadIdx.x; j < words; j += blockDim.x) dst[i * words + j] = from[j];
  }
}

// 256 threads: x the smallest power of two from 32 to 256 that covers a row, y over rows.
void launch_gather_rows(const void* src, const int* rows, int L, int64_t row_bytes, void* dst,
                        cudaStream_t stream) {
  auto launch = [&](auto word) {
    using Word = decltype(word);
    const int words = int(row_bytes / int64_t(sizeof(Word)));
    int tx = 32;
    while (tx < words && tx < 256) tx *= 2;
    const dim3 block(tx, 256 / tx);
    const int64_t grid = std::min<int64_t>((L + block.y - 1) / block.y, int64_t(1) << 24);
    gather_rows_kernel<Word><<<int(grid), block, 0, stream>>>(static_cast<const Word*>(src), rows,
                                                              L, words, static_cast<Word*>(dst));
  };
  const bool aligned =
      reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (aligned && row_bytes % 16 == 0)
    launch(uint4{});
  else if (row_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 4 == 0 &&
           reinterpret_cast<uintptr_t>(dst) % 4 == 0)
    launch(uint32_t{});
  else
    launch(uint16_t{});
}

}  // namespace

void residual_rmsnorm(ActType t, float* x, const void* delta, const float* delta_bias,
                      const float* scale, int B, int H, float eps, void* out, float* out32,
                      cudaStream_t stream) {
  MIND4_CUDA_ARG(x && scale && out, "residual_rmsnorm", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && H > 0 && eps > 0, "residual_rmsnorm", "B = ", B, ", H = ", H,
                 ", eps = ", eps);
  MIND4_CUDA_ARG(delta || !delta_bias, "residual_rmsnorm", "a bias without a delta");
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(t == ActType::kF32 ? "residual_rmsnorm_f32" : "residual_rmsnorm_f32_bf16out",
               residual_rmsnorm_kernel<T>, dim3(B), dim3(kNormThreads), 0, stream, x,
               static_cast<const T*>(delta), delta_bias, scale, H, eps, static_cast<T*>(out),
               out32);
  });
}

void moe_combine_rmsnorm(ActType t, float* x, const float* y, const int* assign_at,
                         const float* weights, int K, const float* scale, int B, int H, float eps,
                         void* out, float* out32, cudaStream_t stream) {
  MIND4_CUDA_ARG(x && y && assign_at && weights && scale && out, "moe_combine_rmsnorm",
                 "null pointer");
  MIND4_CUDA_ARG(B >= 0 && H > 0 && K > 0 && eps > 0, "moe_combine_rmsnorm", "B = ", B, ", H = ", H,
                 ", K = ", K);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(t == ActType::kF32 ? "moe_combine_rmsnorm_f32" : "moe_combine_rmsnorm_f32_bf16out",
               moe_combine_rmsnorm_kernel<T>, dim3(B), dim3(kNormThreads), 0, stream, x, y,
               assign_at, weights, K, scale, H, eps, static_cast<T*>(out), out32);
  });
}

void gather_rows(ActType t, const void* src, const int* rows, int L, int H, void* dst,
                 cudaStream_t stream) {
  MIND4_CUDA_ARG(src && rows && dst, "gather_rows", "null pointer");
  MIND4_CUDA_ARG(L >= 0 && H > 0, "gather_rows", "L = ", L, ", H = ", H);
  if (L == 0) return;
  launch_gather_rows(src, rows, L, int64_t(H) * act_size(t), dst, stream);
  check_launch(t == ActType::kF32 ? "gather_rows_f32" : "gather_rows_bf16");
}

}  // namespace mind4::cuda
