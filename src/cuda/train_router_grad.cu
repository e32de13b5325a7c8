// The router's weight and bias gradients (train_kernels.h) in one pass over the normed rows t.
// With E = 8 the weight gradient is a product of M = 8, N = H, K = NT rows: far too thin for the
// tensor cores, and the split-K kernel cuBLAS picks for it took 45-50 us a layer at 16384 x 768
// (ncu, H100) for 25 MB to read, 9 us at bandwidth. Here each block sums a chunk of rows for 256
// columns and a group of 8 experts: a thread keeps 8 columns x 8 experts of f32 accumulators and
// reads its 8 columns of a row as one 16-byte word (bf16; two in f32), while the chunk's logit
// gradients sit in shared memory as float and are read as broadcasts. The bias gradient (the
// column sums of the logit gradients) comes out of the same staging. Partial sums per chunk, then
// train_colsum_finish adds the chunks in a fixed order.
#include <algorithm>

#include "cuda/train_kernels.h"
#include "cuda/train_vec.cuh"

namespace mind4::cuda {
namespace {

constexpr int kRgExperts = 8;   // experts a thread accumulates (a group; more groups beyond 8)
constexpr int kRgColumns = 8;   // columns a thread accumulates
constexpr int kRgColLanes = 8;  // lanes of a warp along a row: 64 columns a warp
constexpr int kRgRowLanes = 4;  // lanes along the rows: a warp reads 4 rows at once
constexpr int kRgWarps = 4;
constexpr int kRgThreads = kRgWarps * 32;
constexpr int kRgWarpColumns = kRgColLanes * kRgColumns;
constexpr int kRgBlockColumns = kRgWarps * kRgWarpColumns;  // 256
constexpr int kRgStageRows = 128;  // logit-gradient rows staged in shared memory at a time
// Rows a thread loads before it adds them: 128 bytes in flight a thread (8 bf16 rows, 4 f32).
template <typename T>
constexpr int kRgBatch = 128 / (kRgColumns * int(sizeof(T)));
static_assert(kRgColLanes * kRgRowLanes == 32, "a warp is column lanes x row lanes");
static_assert(kRgThreads % kRgExperts == 0, "each thread stages the same expert of every row");
static_assert(kRgStageRows * kRgExperts >= kRgThreads, "the bias reduction reuses the stage");
// About 3 blocks a multiprocessor on 132 (the occupancy of at most 168 registers), one wave. The
// plan is fixed by the shape, not by the card, so that the order of the sums (their bits) is too.
// At least 64 rows a chunk, so that the partial sums (E x H floats a chunk) stay small next to
// the rows they sum.
constexpr int kRgTargetBlocks = 3 * 132;
constexpr int kRgMinRows = 64;

struct RouterGradPlan {
  int groups, col_blocks, chunks, rows;
};

RouterGradPlan router_grad_plan(int NT, int E, int H) {
  RouterGradPlan p{};
  p.groups = (E + kRgExperts - 1) / kRgExperts;
  p.col_blocks = (H + kRgBlockColumns - 1) / kRgBlockColumns;
  const int want = std::max(1, kRgTargetBlocks / (p.groups * p.col_blocks));
  p.rows = std::max(kRgMinRows, int((int64_t(NT) + want - 1) / want));
  p.chunks = std::max(1, int((int64_t(NT) + p.rows - 1) / p.rows));
  return p;
}

// Block (x: column block * groups + expert group, so that the groups of a column block run side by
// side and read its rows of t from L2 once; y: chunk of rows). Lane = column lane + 8 x row lane.
// kWide: a thread's columns are 8 consecutive ones, read as 16-byte words (H a multiple of 8, t on
// the 16-byte grid); otherwise column k of a thread is base + 8k, so that the 8 lanes of a row read
// 8 consecutive elements. Writes the chunk's sums: partial_w [E, chunks, H], and partial_b
// [E, chunks] from the first column block.
template <typename T, bool kWide>
__global__ void __launch_bounds__(kRgThreads, 3)
    train_router_grad_partial_kernel(const T* __restrict__ dlog, const T* __restrict__ x, int NT,
                                     int E, int H, int groups, int rows,
                                     float* __restrict__ partial_w, float* __restrict__ partial_b) {
  __shared__ float4 stage[kRgStageRows][kRgExperts / 4];
  float* staged = reinterpret_cast<float*>(stage);
  const int g = blockIdx.x % groups, cb = blockIdx.x / groups, c = blockIdx.y;
  const int chunks = gridDim.y, e0 = g * kRgExperts;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int cl = lane % kRgColLanes, rl = lane / kRgColLanes;
  const int base = cb * kRgBlockColumns + warp * kRgWarpColumns + (kWide ? cl * kRgColumns : cl);
  auto column = [&](int k) { return kWide ? base + k : base + k * kRgColLanes; };
  const int r_begin = c * rows, r_end = min(NT, r_begin + rows);

  float acc[kRgExperts][kRgColumns];
#pragma unroll
  for (int e = 0; e < kRgExperts; ++e)
#pragma unroll
    for (int k = 0; k < kRgColumns; ++k) acc[e][k] = 0.0f;
  float bias = 0.0f;  // expert e0 + threadIdx.x % 8 over the rows this thread staged

  for (int s0 = r_begin; s0 < r_end; s0 += kRgStageRows) {
    const int n = min(kRgStageRows, r_end - s0);
    __syncthreads();  // every thread is done with the previous stage
    for (int i = threadIdx.x; i < kRgStageRows * kRgExperts; i += kRgThreads) {
      const int r = i / kRgExperts, e = e0 + i % kRgExperts;
      const float v = r < n && e < E ? to_f32(dlog[int64_t(s0 + r) * E + e]) : 0.0f;
      staged[i] = v;
      bias += v;
    }
    __syncthreads();
    for (int r = rl; r < n; r += kRgRowLanes * kRgBatch<T>) {
      // Rows at or past n add nothing: their t is taken as 0 (not read), and their staged
      // gradients are 0 (rows past the stage clamp to its last row, times that 0).
      float v[kRgBatch<T>][kRgColumns];
#pragma unroll
      for (int b = 0; b < kRgBatch<T>; ++b) {
        const int rr = r + b * kRgRowLanes;
        const T* row = x + int64_t(s0 + rr) * H;
        if constexpr (kWide) {
          if (rr < n && base < H) {
            train_load<kRgColumns, true>(row + base, v[b]);
          } else {
#pragma unroll
            for (int k = 0; k < kRgColumns; ++k) v[b][k] = 0.0f;
          }
        } else {
#pragma unroll
          for (int k = 0; k < kRgColumns; ++k)
            v[b][k] = rr < n && column(k) < H ? to_f32(row[column(k)]) : 0.0f;
        }
      }
#pragma unroll
      for (int b = 0; b < kRgBatch<T>; ++b) {
        const int rr = min(r + b * kRgRowLanes, kRgStageRows - 1);
        const float4 lo = stage[rr][0], hi = stage[rr][1];
        const float d[kRgExperts] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
        for (int e = 0; e < kRgExperts; ++e)
#pragma unroll
          for (int k = 0; k < kRgColumns; ++k) acc[e][k] = fmaf(d[e], v[b][k], acc[e][k]);
      }
    }
  }

  // The 4 row lanes' sums: a butterfly, so that all four hold the same bits (a + b == b + a).
#pragma unroll
  for (int e = 0; e < kRgExperts; ++e)
#pragma unroll
    for (int k = 0; k < kRgColumns; ++k) {
      acc[e][k] += __shfl_xor_sync(0xffffffffu, acc[e][k], kRgColLanes);
      acc[e][k] += __shfl_xor_sync(0xffffffffu, acc[e][k], 2 * kRgColLanes);
    }
    // Row lane rl writes experts rl and rl + 4 (compile-time indices into acc).
#pragma unroll
  for (int e = 0; e < kRgExperts; ++e) {
    if (e % kRgRowLanes != rl || e0 + e >= E) continue;
    float* out = partial_w + (int64_t(e0 + e) * chunks + c) * H;
#pragma unroll
    for (int k = 0; k < kRgColumns; ++k)
      if (column(k) < H) out[column(k)] = acc[e][k];
  }

  if (cb != 0) return;  // the whole block: no __syncthreads below is skipped by only some
  __syncthreads();      // the stage is read no more
  staged[threadIdx.x] = bias;
  __syncthreads();
  if (threadIdx.x < kRgExperts && e0 + int(threadIdx.x) < E) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < kRgThreads; i += kRgExperts) s += staged[i];
    partial_b[int64_t(e0 + threadIdx.x) * chunks + c] = s;
  }
}

}  // namespace

int64_t train_router_grad_scratch_floats(int NT, int E, int H) {
  if (NT <= 0 || E <= 0 || H <= 0) return 0;
  return int64_t(router_grad_plan(NT, E, H).chunks) * E * (int64_t(H) + 1);
}

void train_router_grad(ActType t, const void* dlogits, const void* t_rows, int NT, int E, int H,
                       float* partial, float* out_w, float* out_b, cudaStream_t stream) {
  MIND4_CUDA_ARG(dlogits && t_rows && partial && out_w && out_b, "train_router_grad",
                 "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && H > 0 && E >= 1 && E <= train_router_grad_max_experts,
                 "train_router_grad", "NT = ", NT, ", E = ", E, ", H = ", H, " (E from 1 to ",
                 train_router_grad_max_experts, ")");
  if (NT == 0) return;
  const RouterGradPlan plan = router_grad_plan(NT, E, H);
  const dim3 grid(plan.col_blocks * plan.groups, plan.chunks);
  const bool wide = H % kRgColumns == 0 && train_aligned16(t_rows);
  float* partial_b = partial + int64_t(plan.chunks) * E * H;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    auto* kernel = wide ? train_router_grad_partial_kernel<T, true>
                        : train_router_grad_partial_kernel<T, false>;
    kernel<<<grid, kRgThreads, 0, stream>>>(static_cast<const T*>(dlogits),
                                            static_cast<const T*>(t_rows), NT, E, H, plan.groups,
                                            plan.rows, partial, partial_b);
  });
  check_launch(t == ActType::kF32 ? "train_router_grad_partial_f32"
                                  : "train_router_grad_partial_bf16");
  train_colsum_finish(partial, plan.chunks, H, E, H, out_w, stream);
  train_colsum_finish(partial_b, plan.chunks, 1, E, 1, out_b, stream);
}

}  // namespace mind4::cuda
