// Training RMSNorm forward/backward (a warp per row: rows are a few thousand values at most) and
// the fixed-order column sums behind every bias and norm-scale gradient.
#include "cuda/train_kernels.h"
#include "cuda/train_util.cuh"

namespace mind4::cuda {
namespace {

constexpr int kTrainNormWarps = 8;
// 32-row chunks: enough blocks to fill the GPU for the expert segments (a few thousand rows, a
// few hundred columns), where 256-row chunks left most SMs idle.
constexpr int kTrainColsumRows = 32;

template <typename T>
__global__ void __launch_bounds__(kTrainNormWarps * 32)
    train_rmsnorm_fwd_kernel(float* __restrict__ x, const float* __restrict__ add,
                             const float* __restrict__ g, int NT, int H, float eps,
                             T* __restrict__ y, float* __restrict__ rstd) {
  const int64_t r = int64_t(blockIdx.x) * kTrainNormWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= NT) return;
  float* xr = x + r * H;
  float ss = 0.0f;
  for (int j = lane; j < H; j += 32) {
    float v = xr[j];
    if (add) xr[j] = v = v + add[j];
    ss += v * v;
  }
  ss = warp_sum(ss);
  const float rs = 1.0f / sqrtf(ss / H + eps);
  if (lane == 0) rstd[r] = rs;
  for (int j = lane; j < H; j += 32) y[r * H + j] = from_f32<T>(xr[j] * rs * g[j]);
}

__global__ void __launch_bounds__(kTrainNormWarps * 32)
    train_rmsnorm_bwd_kernel(const float* __restrict__ x, const float* __restrict__ g,
                             const float* __restrict__ rstd, const float* __restrict__ dy, int NT,
                             int H, bool accumulate, float* __restrict__ dx) {
  const int64_t r = int64_t(blockIdx.x) * kTrainNormWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= NT) return;
  const float* xr = x + r * H;
  const float* dr = dy + r * H;
  float dot = 0.0f;
  for (int j = lane; j < H; j += 32) dot += dr[j] * g[j] * xr[j];
  dot = warp_sum(dot);
  const float rs = rstd[r];
  const float c = dot * rs * rs * rs / H;
  for (int j = lane; j < H; j += 32) {
    const float v = rs * dr[j] * g[j] - xr[j] * c;
    dx[r * H + j] = accumulate ? dx[r * H + j] + v : v;
  }
}

template <typename T>
__global__ void train_colsum_partial_kernel(const T* __restrict__ a, int64_t lda, int R, int N,
                                            const float* __restrict__ x,
                                            const float* __restrict__ rstd,
                                            float* __restrict__ partial) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= N) return;
  const int r0 = blockIdx.y * kTrainColsumRows, r1 = min(R, r0 + kTrainColsumRows);
  float s = 0.0f;
  for (int r = r0; r < r1; ++r) {
    float v = to_f32(a[int64_t(r) * lda + j]);
    if (x) v *= x[int64_t(r) * N + j] * rstd[r];
    s += v;
  }
  partial[int64_t(blockIdx.y) * N + j] = s;
}

__global__ void train_colsum_finish_kernel(const float* __restrict__ partial, int chunks, int N,
                                           float* __restrict__ out) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= N) return;
  float s = 0.0f;
  for (int c = 0; c < chunks; ++c) s += partial[int64_t(c) * N + j];
  out[j] += s;
}

}  // namespace

void train_rmsnorm_fwd(ActType t, float* x, const float* add, const float* g, int NT, int H,
                       float eps, void* y, float* rstd, cudaStream_t stream) {
  MIND4_CUDA_ARG(x && g && y && rstd, "train_rmsnorm_fwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && H > 0 && eps > 0, "train_rmsnorm_fwd", "NT = ", NT, ", H = ", H);
  if (NT == 0) return;
  const int blocks = (NT + kTrainNormWarps - 1) / kTrainNormWarps;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_rmsnorm_fwd_kernel<T><<<blocks, kTrainNormWarps * 32, 0, stream>>>(
        x, add, g, NT, H, eps, static_cast<T*>(y), rstd);
  });
  check_launch(t == ActType::kF32 ? "train_rmsnorm_fwd_f32" : "train_rmsnorm_fwd_bf16");
}

void train_rmsnorm_bwd(const float* x, const float* g, const float* rstd, const float* dy, int NT,
                       int H, bool accumulate, float* dx, cudaStream_t stream) {
  MIND4_CUDA_ARG(x && g && rstd && dy && dx, "train_rmsnorm_bwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && H > 0, "train_rmsnorm_bwd", "NT = ", NT, ", H = ", H);
  if (NT == 0) return;
  const int blocks = (NT + kTrainNormWarps - 1) / kTrainNormWarps;
  train_rmsnorm_bwd_kernel<<<blocks, kTrainNormWarps * 32, 0, stream>>>(x, g, rstd, dy, NT, H,
                                                                        accumulate, dx);
  check_launch("train_rmsnorm_bwd");
}

int64_t train_colsum_partial_size(int R, int N) {
  return int64_t(std::max(1, (R + kTrainColsumRows - 1) / kTrainColsumRows)) * N;
}

void train_colsum(ActType t, const void* a, int64_t lda, int R, int N, const float* x,
                  const float* rstd, float* partial, float* out, cudaStream_t stream) {
  MIND4_CUDA_ARG(a && partial && out && (!x || rstd), "train_colsum", "null pointer");
  MIND4_CUDA_ARG(R >= 0 && N > 0 && lda >= N, "train_colsum", "R = ", R, ", N = ", N,
                 ", lda = ", lda);
  if (R == 0) return;
  const int chunks = (R + kTrainColsumRows - 1) / kTrainColsumRows;
  const dim3 grid((N + 127) / 128, chunks);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_colsum_partial_kernel<T>
        <<<grid, 128, 0, stream>>>(static_cast<const T*>(a), lda, R, N, x, rstd, partial);
  });
  check_launch(t == ActType::kF32 ? "train_colsum_partial_f32" : "train_colsum_partial_bf16");
  train_colsum_finish_kernel<<<(N + 127) / 128, 128, 0, stream>>>(partial, chunks, N, out);
  check_launch("train_colsum_finish");
}

}  // namespace mind4::cuda
