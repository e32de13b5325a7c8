// Training RMSNorm forward/backward (a warp per row: rows are a few thousand values at most;
// 16-byte accesses where the rows allow) and the fixed-order column sums behind every bias and
// norm-scale gradient.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/kernels.h"
#include "cuda/train_kernels.h"
#include "cuda/train_util.cuh"
#include "cuda/train_vec.cuh"

namespace mind4::cuda {
namespace {

constexpr int kTrainNormWarps = 8;
// Column sums: each partial block sums a chunk of rows for 128 columns. The chunk length is chosen
// per call so that a call has about this many partial blocks whatever its shape (fixed 32-row
// chunks gave 16384-row sums 512 partial rows per column for one thread of the finishing pass to
// add; fixed 256-row chunks left most SMs idle on the expert segments), within these bounds.
constexpr int kColsumTargetBlocks = 1024;
constexpr int kColsumMinRows = 32;
constexpr int kColsumMaxChunks = 256;  // per segment: the finishing pass adds this many at most
constexpr int kColsumColumns = 128;

struct ColsumPlan {
  int chunks, rows;  // per segment
};

ColsumPlan colsum_plan(int max_rows, int N, int segments) {
  const int col_blocks = (N + kColsumColumns - 1) / kColsumColumns;
  const int want = std::clamp(kColsumTargetBlocks / (col_blocks * segments), 1, kColsumMaxChunks);
  const int rows = std::max(kColsumMinRows, (max_rows + want - 1) / want);
  return {std::max(1, (max_rows + rows - 1) / rows), rows};
}

// Four consecutive floats of a row the kernel also writes (plain accesses: __ldg is for data
// that is read-only for the kernel's lifetime).
template <bool kWide>
__device__ __forceinline__ void norm_load_rw(const float* p, float* v) {
  if constexpr (kWide) {
    const float4 w = *reinterpret_cast<const float4*>(p);
    v[0] = w.x, v[1] = w.y, v[2] = w.z, v[3] = w.w;
  } else {
    v[0] = *p;
  }
}
template <bool kWide>
__device__ __forceinline__ void norm_store_rw(float* p, const float* v) {
  if constexpr (kWide)
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  else
    *p = v[0];
}

// A warp per row. kWide: each lane moves 4 consecutive floats per access (16 bytes; H a multiple
// of 4, every row on the 16-byte grid), else one. The second pass reads the row again, from L1.
template <typename T, bool kWide>
__global__ void __launch_bounds__(kTrainNormWarps * 32)
    train_rmsnorm_fwd_kernel(float* __restrict__ x, const float* __restrict__ add,
                             const float* __restrict__ g, int NT, int H, float eps,
                             T* __restrict__ y, float* __restrict__ rstd) {
  constexpr int V = kWide ? 4 : 1;
  const int64_t r = int64_t(blockIdx.x) * kTrainNormWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= NT) return;
  float* xr = x + r * H;
  float ss = 0.0f;
  for (int j = lane * V; j < H; j += 32 * V) {
    float v[V];
    norm_load_rw<kWide>(xr + j, v);
    if (add) {
      float a[V];
      train_load<V, kWide>(add + j, a);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] += a[k];
      norm_store_rw<kWide>(xr + j, v);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) ss += v[k] * v[k];
  }
  ss = warp_sum(ss);
  const float rs = 1.0f / sqrtf(ss / H + eps);
  if (lane == 0) rstd[r] = rs;
  for (int j = lane * V; j < H; j += 32 * V) {
    float v[V], gg[V];
    norm_load_rw<kWide>(xr + j, v);
    train_load<V, kWide>(g + j, gg);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = v[k] * rs * gg[k];
    train_store<V, kWide>(y + r * H + j, v);
  }
}

template <bool kWide>
__global__ void __launch_bounds__(kTrainNormWarps * 32)
    train_rmsnorm_bwd_kernel(const float* __restrict__ x, const float* __restrict__ g,
                             const float* __restrict__ rstd, const float* __restrict__ dy, int NT,
                             int H, bool accumulate, float* __restrict__ dx) {
  constexpr int V = kWide ? 4 : 1;
  const int64_t r = int64_t(blockIdx.x) * kTrainNormWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= NT) return;
  const float* xr = x + r * H;
  const float* dr = dy + r * H;
  float dot = 0.0f;
  for (int j = lane * V; j < H; j += 32 * V) {
    float d[V], gg[V], xx[V];
    train_load<V, kWide>(dr + j, d);
    train_load<V, kWide>(g + j, gg);
    train_load<V, kWide>(xr + j, xx);
#pragma unroll
    for (int k = 0; k < V; ++k) dot += d[k] * gg[k] * xx[k];
  }
  dot = warp_sum(dot);
  const float rs = rstd[r];
  const float c = dot * rs * rs * rs / H;
  for (int j = lane * V; j < H; j += 32 * V) {
    float d[V], gg[V], xx[V], v[V];
    train_load<V, kWide>(dr + j, d);
    train_load<V, kWide>(g + j, gg);
    train_load<V, kWide>(xr + j, xx);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = rs * d[k] * gg[k] - xx[k] * c;
    if (accumulate) {
      float old[V];
      norm_load_rw<kWide>(dx + r * H + j, old);
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] += old[k];
    }
    norm_store_rw<kWide>(dx + r * H + j, v);
  }
}

// The backward above with the column sums that read the same rows, in one pass (the trainer's
// shapes: H a multiple of 128 up to kNormSumsMaxH, 16-byte rows). A block takes `rows` rows, a
// warp every 8th of them; each lane keeps the sums of its columns (4 consecutive per 128) in
// registers across its rows, and the block adds its 8 warps in order into one partial row per sum:
// partial [blocks, H] of dy * x * rstd (the norm scale's gradient) and, when dx_sum is wanted,
// partial [blocks, H] after it of the new dx (the bias gradient of the product that fed the
// residual). dx_act, when given, gets the new dx rounded to T (the next product's operand).
constexpr int kNormSumsMaxH = 1024;
constexpr int kNormSumsSteps = kNormSumsMaxH / 128;
constexpr int kNormSumsBlocks = kColsumTargetBlocks / 2;
template <typename T>
__global__ void __launch_bounds__(kTrainNormWarps * 32, 2)
    train_rmsnorm_bwd_sums_kernel(const float* __restrict__ x, const float* __restrict__ g,
                                  const float* __restrict__ rstd, const float* __restrict__ dy,
                                  int NT, int H, int rows, bool accumulate, float* __restrict__ dx,
                                  T* __restrict__ dx_act, bool want_dx_sum,
                                  float* __restrict__ partial) {
  __shared__ float warp_sums[kTrainNormWarps][kNormSumsMaxH];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, steps = H / 128;
  const int r0 = blockIdx.x * rows, r1 = min(NT, r0 + rows);
  float scale_sum[kNormSumsSteps][4] = {}, dx_sum[kNormSumsSteps][4] = {};
  for (int r = r0 + warp; r < r1; r += kTrainNormWarps) {
    const float* xr = x + int64_t(r) * H;
    const float* dr = dy + int64_t(r) * H;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kNormSumsSteps; ++i) {
      if (i >= steps) break;
      const int j = i * 128 + lane * 4;
      float d[4], gg[4], xx[4];
      train_load<4, true>(dr + j, d);
      train_load<4, true>(g + j, gg);
      train_load<4, true>(xr + j, xx);
#pragma unroll
      for (int k = 0; k < 4; ++k) dot += d[k] * gg[k] * xx[k];
    }
    dot = warp_sum(dot);
    const float rs = rstd[r];
    const float c = dot * rs * rs * rs / H;
#pragma unroll
    for (int i = 0; i < kNormSumsSteps; ++i) {
      if (i >= steps) break;
      const int j = i * 128 + lane * 4;
      float d[4], gg[4], xx[4], v[4];
      train_load<4, true>(dr + j, d);
      train_load<4, true>(g + j, gg);
      train_load<4, true>(xr + j, xx);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        v[k] = rs * d[k] * gg[k] - xx[k] * c;
        scale_sum[i][k] += d[k] * (xx[k] * rs);
      }
      float* out = dx + int64_t(r) * H + j;
      if (accumulate) {
        float old[4];
        norm_load_rw<true>(out, old);
#pragma unroll
        for (int k = 0; k < 4; ++k) v[k] += old[k];
      }
      norm_store_rw<true>(out, v);
      if (dx_act) train_store<4, true>(dx_act + int64_t(r) * H + j, v);
#pragma unroll
      for (int k = 0; k < 4; ++k) dx_sum[i][k] += v[k];
    }
  }
  // The block's partial rows: its warps added in order (the same bits every run).
  auto write_partial = [&](const float(&sums)[kNormSumsSteps][4], float* out) {
#pragma unroll
    for (int i = 0; i < kNormSumsSteps; ++i) {
      if (i >= steps) break;
#pragma unroll
      for (int k = 0; k < 4; ++k) warp_sums[warp][i * 128 + lane * 4 + k] = sums[i][k];
    }
    __syncthreads();
    for (int j = threadIdx.x; j < H; j += kTrainNormWarps * 32) {
      float t = 0.0f;
      for (int w = 0; w < kTrainNormWarps; ++w) t += warp_sums[w][j];
      out[int64_t(blockIdx.x) * H + j] = t;
    }
    __syncthreads();
  };
  write_partial(scale_sum, partial);
  if (want_dx_sum) write_partial(dx_sum, partial + int64_t(gridDim.x) * H);
}

// Block (column block, chunk, segment): the chunk's rows of the segment (seg[e] <= r < seg[e + 1],
// or r < R without segments), one column a thread. Empty chunks write zeros.
template <typename T>
__global__ void train_colsum_partial_kernel(const T* __restrict__ a, int64_t lda, int R,
                                            const int* __restrict__ seg, int rows, int N,
                                            const float* __restrict__ x,
                                            const float* __restrict__ rstd,
                                            float* __restrict__ partial) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= N) return;
  const int e = blockIdx.z;
  const int begin = seg ? seg[e] : 0, end = seg ? seg[e + 1] : R;
  const int r0 = begin + blockIdx.y * rows, r1 = min(end, r0 + rows);
  float s = 0.0f;
#pragma unroll 4
  for (int r = r0; r < r1; ++r) {
    float v = to_f32(a[int64_t(r) * lda + j]);
    if (x) v *= x[int64_t(r) * N + j] * rstd[r];
    s += v;
  }
  partial[(int64_t(e) * gridDim.y + blockIdx.y) * N + j] = s;
}

// Block (32 columns, segment), 8 warps: warp w adds chunks w, w + 8, ... of its lane's column,
// then warp 0 adds the 8 warps' sums in order (fixed order: the same bits every run).
__global__ void __launch_bounds__(256)
    train_colsum_finish_kernel(const float* __restrict__ partial, int chunks, int N,
                               int64_t out_stride, float* __restrict__ out) {
  __shared__ float sums[8][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = blockIdx.x * 32 + lane, e = blockIdx.y;
  float s = 0.0f;
  if (j < N)
    for (int c = warp; c < chunks; c += 8) s += partial[(int64_t(e) * chunks + c) * N + j];
  sums[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && j < N) {
    float t = 0.0f;
    for (int w = 0; w < 8; ++w) t += sums[w][lane];
    out[e * out_stride + j] += t;
  }
}

void colsum_launch(ActType t, const void* a, int64_t lda, int R, const int* seg, int segments,
                   int max_rows, int N, const float* x, const float* rstd, float* partial,
                   float* out, int64_t out_stride, cudaStream_t stream) {
  const ColsumPlan plan = colsum_plan(max_rows, N, segments);
  const dim3 grid((N + kColsumColumns - 1) / kColsumColumns, plan.chunks, segments);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_colsum_partial_kernel<T><<<grid, kColsumColumns, 0, stream>>>(
        static_cast<const T*>(a), lda, R, seg, plan.rows, N, x, rstd, partial);
  });
  check_launch(t == ActType::kF32 ? "train_colsum_partial_f32" : "train_colsum_partial_bf16");
  train_colsum_finish_kernel<<<dim3((N + 31) / 32, segments), 256, 0, stream>>>(
      partial, plan.chunks, N, out_stride, out);
  check_launch("train_colsum_finish");
}

}  // namespace

void train_rmsnorm_fwd(ActType t, float* x, const float* add, const float* g, int NT, int H,
                       float eps, void* y, float* rstd, cudaStream_t stream) {
  MIND4_CUDA_ARG(x && g && y && rstd, "train_rmsnorm_fwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && H > 0 && eps > 0, "train_rmsnorm_fwd", "NT = ", NT, ", H = ", H);
  if (NT == 0) return;
  const int blocks = (NT + kTrainNormWarps - 1) / kTrainNormWarps;
  const bool wide = H % 4 == 0 && train_aligned16(x) && (!add || train_aligned16(add)) &&
                    train_aligned16(g) && train_aligned16(y);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    auto* kernel = wide ? train_rmsnorm_fwd_kernel<T, true> : train_rmsnorm_fwd_kernel<T, false>;
    kernel<<<blocks, kTrainNormWarps * 32, 0, stream>>>(x, add, g, NT, H, eps, static_cast<T*>(y),
                                                        rstd);
  });
  check_launch(t == ActType::kF32 ? "train_rmsnorm_fwd_f32" : "train_rmsnorm_fwd_bf16");
}

void train_rmsnorm_bwd(const float* x, const float* g, const float* rstd, const float* dy, int NT,
                       int H, bool accumulate, float* dx, cudaStream_t stream) {
  MIND4_CUDA_ARG(x && g && rstd && dy && dx, "train_rmsnorm_bwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && H > 0, "train_rmsnorm_bwd", "NT = ", NT, ", H = ", H);
  if (NT == 0) return;
  const int blocks = (NT + kTrainNormWarps - 1) / kTrainNormWarps;
  const bool wide = H % 4 == 0 && train_aligned16(x) && train_aligned16(g) && train_aligned16(dy) &&
                    train_aligned16(dx);
  auto* kernel = wide ? train_rmsnorm_bwd_kernel<true> : train_rmsnorm_bwd_kernel<false>;
  kernel<<<blocks, kTrainNormWarps * 32, 0, stream>>>(x, g, rstd, dy, NT, H, accumulate, dx);
  check_launch("train_rmsnorm_bwd");
}

void train_rmsnorm_bwd_sums(ActType t, const float* x, const float* g, const float* rstd,
                            const float* dy, int NT, int H, bool accumulate, float* dx,
                            float* scale_grad, float* dx_sum, void* dx_act, float* partial,
                            cudaStream_t stream) {
  MIND4_CUDA_ARG(x && g && rstd && dy && dx && scale_grad && partial, "train_rmsnorm_bwd_sums",
                 "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && H > 0, "train_rmsnorm_bwd_sums", "NT = ", NT, ", H = ", H);
  if (NT == 0) return;
  // MIND4_CUDA_TRAIN_NORM_SUMS=0 takes the separate kernels everywhere (for comparisons).
  static const bool separate = [] {
    const char* v = std::getenv("MIND4_CUDA_TRAIN_NORM_SUMS");
    return v && std::strcmp(v, "0") == 0;
  }();
  const bool fused = !separate && H % 128 == 0 && H <= kNormSumsMaxH && train_aligned16(x) &&
                     train_aligned16(g) && train_aligned16(dy) && train_aligned16(dx) &&
                     (!dx_act || train_aligned16(dx_act));
  if (!fused) {  // the same results from the separate passes
    train_rmsnorm_bwd(x, g, rstd, dy, NT, H, accumulate, dx, stream);
    train_colsum(ActType::kF32, dy, H, NT, H, x, rstd, partial, scale_grad, stream);
    if (dx_act) convert_to_act(t, dx, false, int64_t(NT) * H, dx_act, stream);
    if (dx_sum)
      train_colsum(ActType::kF32, dx, H, NT, H, nullptr, nullptr, partial, dx_sum, stream);
    return;
  }
  // About kNormSumsBlocks blocks (two partial rows each fit the colsum scratch), at least a row
  // per warp.
  const int rows = std::max(kTrainNormWarps, (NT + kNormSumsBlocks - 1) / kNormSumsBlocks);
  const int blocks = (NT + rows - 1) / rows;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_rmsnorm_bwd_sums_kernel<T><<<blocks, kTrainNormWarps * 32, 0, stream>>>(
        x, g, rstd, dy, NT, H, rows, accumulate, dx, static_cast<T*>(dx_act), dx_sum != nullptr,
        partial);
  });
  check_launch(t == ActType::kF32 ? "train_rmsnorm_bwd_sums_f32" : "train_rmsnorm_bwd_sums_bf16");
  const dim3 finish_grid((H + 31) / 32, 1);
  train_colsum_finish_kernel<<<finish_grid, 256, 0, stream>>>(partial, blocks, H, 0, scale_grad);
  if (dx_sum)
    train_colsum_finish_kernel<<<finish_grid, 256, 0, stream>>>(partial + int64_t(blocks) * H,
                                                                blocks, H, 0, dx_sum);
  check_launch("train_colsum_finish (rmsnorm_bwd_sums)");
}

int64_t train_colsum_scratch_floats(int N, int segments) {
  // colsum_plan keeps chunks * segments <= max(segments, target / column blocks + segments).
  return int64_t(kColsumTargetBlocks + segments) * N;
}

void train_colsum(ActType t, const void* a, int64_t lda, int R, int N, const float* x,
                  const float* rstd, float* partial, float* out, cudaStream_t stream) {
  MIND4_CUDA_ARG(a && partial && out && (!x || rstd), "train_colsum", "null pointer");
  MIND4_CUDA_ARG(R >= 0 && N > 0 && lda >= N, "train_colsum", "R = ", R, ", N = ", N,
                 ", lda = ", lda);
  if (R == 0) return;
  colsum_launch(t, a, lda, R, nullptr, 1, R, N, x, rstd, partial, out, 0, stream);
}

void train_colsum_segments(ActType t, const void* a, int64_t lda, const int* seg, int segments,
                           int max_rows, int N, float* partial, float* out, cudaStream_t stream) {
  MIND4_CUDA_ARG(a && seg && partial && out, "train_colsum_segments", "null pointer");
  MIND4_CUDA_ARG(segments > 0 && max_rows >= 0 && N > 0 && lda >= N, "train_colsum_segments",
                 "segments = ", segments, ", max_rows = ", max_rows, ", N = ", N, ", lda = ", lda);
  if (max_rows == 0) return;
  colsum_launch(t, a, lda, 0, seg, segments, max_rows, N, nullptr, nullptr, partial, out, N,
                stream);
}

}  // namespace mind4::cuda
