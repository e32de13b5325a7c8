// The expert bias gradients summed by the kernels that write their rows: the SwiGLU backward
// (dh, the mlp1 bias) and the combine backward (dy, the mlp2 bias) also leave, per chunk of
// grouped rows, the column sums of what they stored, and a finishing pass adds each expert's
// chunks in a fixed order. Without this, train_colsum_segments read dh (140 MB at issue 5's shape)
// and dy (53 MB) again right after they were written.
//
// A chunk is a run of chunk_rows grouped rows (32 to 256) starting on a multiple of it. Every
// expert's segment starts on a multiple of the chunk (the trainer's segments start on multiples of
// 256 rows), so every chunk lies in one segment and its partial sums belong to one expert.
#include <algorithm>
#include <numeric>

#include "cuda/train_kernels.h"
#include "cuda/train_swiglu.cuh"
#include "cuda/train_util.cuh"
#include "cuda/train_vec.cuh"

namespace mind4::cuda {
namespace {

// SwiGLU: a block is 32 column groups of kBiasSwigluPairs (gate, linear) pairs (8 elements of dh,
// 16 bytes in bf16) by 8 rows at a time; a chunk of 64 rows is 8 rows per thread.
constexpr int kBiasSwigluPairs = 4;
constexpr int kBiasRowsAtOnce = 8;
constexpr int kBiasSwigluCols = 32 * 2 * kBiasSwigluPairs;  // dh columns of a block
// Combine: a warp per grouped row, kBiasCombineWidth elements per lane and step (16 bytes of bf16).
constexpr int kBiasCombineWidth = 8;
constexpr int kBiasCombineMaxWarps = 8;
// The warps' column sums: under the 48 KB a block may take without opting in.
constexpr int kBiasCombineSharedBytes = 40 * 1024;
// Chunks: at least 64 rows for the SwiGLU (8 per thread), 32 for the combine (4 per warp: a
// chunk is a block there, and short blocks keep the last partial wave short), at most 256.
constexpr int kBiasSwigluChunkRows = 64, kBiasCombineChunkRows = 32, kBiasChunkRowsMax = 256;

// The value a store of v as T leaves in memory, as float (the bf16 rounding; f32 unchanged): the
// sums add what train_colsum_segments would read back.
template <typename T>
__device__ __forceinline__ float bias_stored(float v) {
  return to_f32(from_f32<T>(v));
}

// Block (column block, chunk), threads (32 column groups, 8 rows): dh for the chunk's rows r with
// r % 8 == threadIdx.y, and each thread's sums of its 8 columns over those rows; then the 8 rows'
// sums of each column added in order (the same bits every run) into partial [chunk, 2I].
template <typename T>
__global__ void __launch_bounds__(32 * kBiasRowsAtOnce)
    train_swiglu_bwd_bias_kernel(const T* __restrict__ h, const T* __restrict__ dact, int A, int I,
                                 float limit, int chunk_rows, T* __restrict__ dh,
                                 float* __restrict__ partial) {
  constexpr int P = kBiasSwigluPairs;
  __shared__ float sums[kBiasRowsAtOnce][kBiasSwigluCols];
  const int c = blockIdx.x * 32 + threadIdx.x;  // column group: pairs c * P .. c * P + P - 1
  const int64_t r0 = int64_t(blockIdx.y) * chunk_rows;
  const int64_t r1 = min(int64_t(A), r0 + chunk_rows);
  float s[2 * P];
#pragma unroll
  for (int k = 0; k < 2 * P; ++k) s[k] = 0.0f;
  if (c < I / P) {
    const int i = c * P;
#pragma unroll 4
    for (int64_t a = r0 + threadIdx.y; a < r1; a += kBiasRowsAtOnce) {
      float hv[2 * P], dv[P];
      train_load<2 * P, true>(h + a * 2 * I + 2 * i, hv);
      train_load<P, true>(dact + a * I + i, dv);
#pragma unroll
      for (int p = 0; p < P; ++p)
        train_swiglu_pair_bwd(hv[2 * p], hv[2 * p + 1], dv[p], limit, hv[2 * p], hv[2 * p + 1]);
#pragma unroll
      for (int k = 0; k < 2 * P; ++k) {
        hv[k] = bias_stored<T>(hv[k]);
        s[k] += hv[k];
      }
      train_store<2 * P, true>(dh + a * 2 * I + 2 * i, hv);
    }
  }
#pragma unroll
  for (int k = 0; k < 2 * P; ++k) sums[threadIdx.y][threadIdx.x * 2 * P + k] = s[k];
  __syncthreads();
  const int tid = threadIdx.y * 32 + threadIdx.x;
  const int j = blockIdx.x * kBiasSwigluCols + tid;
  if (tid < kBiasSwigluCols && j < 2 * I) {
    float t = 0.0f;
#pragma unroll
    for (int y = 0; y < kBiasRowsAtOnce; ++y) t += sums[y][tid];
    partial[int64_t(blockIdx.y) * 2 * I + j] = t;
  }
}

// Block = a chunk, warp w its rows r0 + w, r0 + w + warps, ... (a warp per grouped row). A row of
// expert e's segment holding an assignment (the first count_e rows): the token row r =
// group_row[at] and its slot s with experts[r, s] = e (a row's experts are distinct); dy[at] =
// weights[r, s] dx[r], dweights[r, s] = dx[r] . (y[at] + bias[e]) (the same lanes and order as
// train_moe_combine_bwd_kernel: the same bits). A gap row: dy[at] = 0. Each warp adds its rows'
// stored dy into its own row of shared sums (a lane owns its columns, so no other lane touches
// them), then the warps' sums of each column are added in order into partial [chunk, H].
template <typename T>
__global__ void __launch_bounds__(32 * kBiasCombineMaxWarps, 5) train_moe_combine_bwd_bias_kernel(
    const float* __restrict__ dx, const T* __restrict__ y, const float* __restrict__ bias,
    const int* __restrict__ experts, const float* __restrict__ weights,
    const int* __restrict__ offsets, const int* __restrict__ group_row, const int* __restrict__ seg,
    int segments, int A, int K, int H, int chunk_rows, float* __restrict__ dweights,
    T* __restrict__ dy, float* __restrict__ partial) {
  constexpr int W = kBiasCombineWidth;
  extern __shared__ float warp_sums[];  // [warps, H]
  __shared__ int seg_expert;
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r0 = blockIdx.x * chunk_rows, r1 = min(A, r0 + chunk_rows);
  if (threadIdx.x == 0) {
    // The chunk's expert: the last segment starting at or before r0 (empty segments before it
    // start where it does).
    int lo = 0, hi = segments - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (seg[mid] <= r0)
        lo = mid;
      else
        hi = mid - 1;
    }
    seg_expert = lo;
  }
  float* col_sums = warp_sums + warp * H;
  for (int j = lane * W; j < H; j += 32 * W)
#pragma unroll
    for (int k = 0; k < W; ++k) col_sums[j + k] = 0.0f;
  __syncthreads();
  const int e = seg_expert;
  const int assigned_end = seg[e] + offsets[e + 1] - offsets[e];
  const float* br = bias + int64_t(e) * H;
  // The warp's rows in batches of 32: lane l looks up row base + l * warps (its token row, slot
  // and weight; slot -1: a gap row), so that the index loads of 32 rows wait once, not in turn.
  for (int base = r0 + warp; base < r1; base += 32 * warps) {
    const int mine_at = base + lane * warps;
    int mine_r = 0, mine_w = -1;
    float mine_wt = 0.0f;
    if (mine_at < min(r1, assigned_end)) {
      mine_r = group_row[mine_at];
      int s = 0;
      while (s < K - 1 && experts[int64_t(mine_r) * K + s] != e) ++s;
      mine_w = mine_r * K + s;
      mine_wt = weights[mine_w];
    }
    const int n = min(32, (r1 - base + warps - 1) / warps);
    for (int v = 0; v < n; ++v) {
      const int at = base + v * warps;
      const int r = __shfl_sync(0xffffffffu, mine_r, v);
      const int w = __shfl_sync(0xffffffffu, mine_w, v);
      const float wt = __shfl_sync(0xffffffffu, mine_wt, v);
      T* dyr = dy + int64_t(at) * H;
      const T* yr = y + int64_t(at) * H;
      const float* dxr = dx + int64_t(r) * H;
      if (w < 0) {
        float z[W];
#pragma unroll
        for (int k = 0; k < W; ++k) z[k] = 0.0f;
        for (int j = lane * W; j < H; j += 32 * W) train_store<W, true>(dyr + j, z);
        continue;
      }
      float dot = 0.0f;
      for (int j = lane * W; j < H; j += 32 * W) {
        float g[W], yv[W], bv[W];
        train_load<W, true>(dxr + j, g);
        train_load<W, true>(yr + j, yv);
        train_load<W, true>(br + j, bv);
#pragma unroll
        for (int k = 0; k < W; ++k) {
          dot += g[k] * (yv[k] + bv[k]);
          g[k] = bias_stored<T>(wt * g[k]);
          col_sums[j + k] += g[k];
        }
        train_store<W, true>(dyr + j, g);
      }
      dot = warp_sum(dot);
      if (lane == 0) dweights[w] = dot;
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < H; j += blockDim.x) {
    float t = 0.0f;
    for (int v = 0; v < warps; ++v) t += warp_sums[v * H + j];
    partial[int64_t(blockIdx.x) * H + j] = t;
  }
}

// Block (32 columns, segment e), 8 warps: warp v adds the chunks first + v, first + v + 8, ... of
// e's segment [seg[e], seg[e + 1]), then warp 0 adds the 8 warps' sums in order into out[e, N]
// (+=). The last segment may end inside a chunk (the rows end there).
__global__ void __launch_bounds__(256)
    train_bias_sums_finish_kernel(const float* __restrict__ partial, const int* __restrict__ seg,
                                  int chunk_rows, int N, float* __restrict__ out) {
  __shared__ float sums[8][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = blockIdx.x * 32 + lane, e = blockIdx.y;
  // An empty segment has no chunks (it may start off the chunk grid: after the last rows).
  const int first = seg[e] / chunk_rows;
  const int end = seg[e + 1] > seg[e] ? (seg[e + 1] + chunk_rows - 1) / chunk_rows : first;
  float s = 0.0f;
  if (j < N)
    for (int c = first + warp; c < end; c += 8) s += partial[int64_t(c) * N + j];
  sums[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && j < N) {
    float t = 0.0f;
    for (int v = 0; v < 8; ++v) t += sums[v][lane];
    out[int64_t(e) * N + j] += t;
  }
}

struct BiasSegments {
  int rows;        // A = host_seg[segments]
  int largest;     // the largest segment
  int chunk_rows;  // the fused path's chunk, 0 where it cannot run
};

// The smallest chunk (more blocks) from min_rows to 256 rows that every non-empty segment starts
// on a multiple of and whose partial sums fit train_colsum_scratch_floats(N, segments), or 0.
BiasSegments bias_segments(const int* host_seg, int segments, int N, int min_rows,
                           const char* launcher) {
  MIND4_CUDA_ARG(host_seg[0] == 0, launcher, "segments start at row ", host_seg[0]);
  BiasSegments b{host_seg[segments], 0, 0};
  int starts = 0;  // the gcd of the non-empty segments' starts
  for (int e = 0; e < segments; ++e) {
    const int rows = host_seg[e + 1] - host_seg[e];
    MIND4_CUDA_ARG(rows >= 0, launcher, "segment ", e, " ends before it starts");
    b.largest = std::max(b.largest, rows);
    if (rows > 0) starts = std::gcd(starts, host_seg[e]);
  }
  const int64_t capacity = train_colsum_scratch_floats(N, segments);
  for (int rows = min_rows; rows <= kBiasChunkRowsMax; rows *= 2)
    if (starts % rows == 0 && (int64_t(b.rows) + rows - 1) / rows * N <= capacity) {
      b.chunk_rows = rows;
      break;
    }
  return b;
}

void bias_sums_finish(const float* partial, const int* seg, int segments, int chunk_rows, int N,
                      float* dbias, cudaStream_t stream) {
  train_bias_sums_finish_kernel<<<dim3((N + 31) / 32, segments), 256, 0, stream>>>(
      partial, seg, chunk_rows, N, dbias);
  check_launch("train_bias_sums_finish");
}

}  // namespace

bool train_swiglu_bwd_bias_fused(const void* h_saved, const void* dact, int I, const int* host_seg,
                                 int segments, const void* dh) {
  return I % kBiasSwigluPairs == 0 && train_aligned16(h_saved) && train_aligned16(dact) &&
         train_aligned16(dh) &&
         bias_segments(host_seg, segments, 2 * I, kBiasSwigluChunkRows, "train_swiglu_bwd_bias")
                 .chunk_rows > 0;
}

void train_swiglu_bwd_bias(ActType t, const void* h_saved, const void* dact, int I, float limit,
                           const int* seg, const int* host_seg, int segments, void* dh,
                           float* partial, float* dbias, cudaStream_t stream) {
  MIND4_CUDA_ARG(h_saved && dact && seg && host_seg && dh && partial && dbias,
                 "train_swiglu_bwd_bias", "null pointer");
  MIND4_CUDA_ARG(I > 0 && limit > 0 && segments > 0, "train_swiglu_bwd_bias", "I = ", I,
                 ", segments = ", segments);
  const BiasSegments b =
      bias_segments(host_seg, segments, 2 * I, kBiasSwigluChunkRows, "train_swiglu_bwd_bias");
  if (b.rows == 0) return;
  if (!train_swiglu_bwd_bias_fused(h_saved, dact, I, host_seg, segments, dh)) {
    train_swiglu_bwd(t, h_saved, dact, b.rows, I, limit, dh, stream);
    train_colsum_segments(t, dh, 2 * I, seg, segments, b.largest, 2 * I, partial, dbias, stream);
    return;
  }
  const int chunks = (b.rows + b.chunk_rows - 1) / b.chunk_rows;
  const dim3 grid((I / kBiasSwigluPairs + 31) / 32, chunks);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_swiglu_bwd_bias_kernel<T><<<grid, dim3(32, kBiasRowsAtOnce), 0, stream>>>(
        static_cast<const T*>(h_saved), static_cast<const T*>(dact), b.rows, I, limit, b.chunk_rows,
        static_cast<T*>(dh), partial);
  });
  check_launch(t == ActType::kF32 ? "train_swiglu_bwd_bias_f32" : "train_swiglu_bwd_bias_bf16");
  bias_sums_finish(partial, seg, segments, b.chunk_rows, 2 * I, dbias, stream);
}

bool train_moe_combine_bwd_bias_fused(const float* dx, const void* y, const float* bias, int H,
                                      const int* host_seg, int segments, const void* dy) {
  return H % kBiasCombineWidth == 0 && int64_t(H) * 4 <= kBiasCombineSharedBytes &&
         train_aligned16(dx) && train_aligned16(y) && train_aligned16(bias) &&
         train_aligned16(dy) &&
         bias_segments(host_seg, segments, H, kBiasCombineChunkRows, "train_moe_combine_bwd_bias")
                 .chunk_rows > 0;
}

void train_moe_combine_bwd_bias(ActType t, const float* dx, const void* y, const float* bias,
                                const int* experts, const int* assign_at, const float* weights,
                                const int* offsets, const int* group_row, int NT, int K, int H,
                                const int* seg, const int* host_seg, int segments, float* dweights,
                                void* dy, float* partial, float* dbias, cudaStream_t stream) {
  MIND4_CUDA_ARG(dx && y && bias && experts && assign_at && weights && offsets && group_row &&
                     seg && host_seg && dweights && dy && partial && dbias,
                 "train_moe_combine_bwd_bias", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && K > 0 && H > 0 && segments > 0, "train_moe_combine_bwd_bias",
                 "NT = ", NT, ", K = ", K, ", H = ", H, ", segments = ", segments);
  const BiasSegments b =
      bias_segments(host_seg, segments, H, kBiasCombineChunkRows, "train_moe_combine_bwd_bias");
  MIND4_CUDA_ARG(b.rows >= int64_t(NT) * K, "train_moe_combine_bwd_bias", b.rows,
                 " grouped rows for ", NT, " x ", K, " assignments");
  if (b.rows == 0) return;
  if (!train_moe_combine_bwd_bias_fused(dx, y, bias, H, host_seg, segments, dy)) {
    check(cudaMemsetAsync(dy, 0, size_t(b.rows) * H * act_size(t), stream),
          "train_moe_combine_bwd_bias: zero the gap rows");
    train_moe_combine_bwd(t, dx, y, bias, experts, assign_at, weights, NT, K, H, dweights, dy,
                          stream);
    train_colsum_segments(t, dy, H, seg, segments, b.largest, H, partial, dbias, stream);
    return;
  }
  const int warps = int(std::min<int64_t>(kBiasCombineMaxWarps, kBiasCombineSharedBytes / (4 * H)));
  const int chunks = (b.rows + b.chunk_rows - 1) / b.chunk_rows;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_moe_combine_bwd_bias_kernel<T><<<chunks, 32 * warps, size_t(warps) * H * 4, stream>>>(
        dx, static_cast<const T*>(y), bias, experts, weights, offsets, group_row, seg, segments,
        b.rows, K, H, b.chunk_rows, dweights, static_cast<T*>(dy), partial);
  });
  check_launch(t == ActType::kF32 ? "train_moe_combine_bwd_bias_f32"
                                  : "train_moe_combine_bwd_bias_bf16");
  bias_sums_finish(partial, seg, segments, b.chunk_rows, H, dbias, stream);
}

}  // namespace mind4::cuda
