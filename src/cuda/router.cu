// Router epilogue: bias, top-k and the softmax over the k, one warp per row. Each lane holds up
// to 8 of the E <= 256 logits; k rounds of a warp-wide arg-max pick the experts (ties go to the
// lower index, as on the CPU line). For small steps (decode) router_group does the router's
// product, this epilogue and the grouping by expert in one launch.
#include <cmath>

#include "cuda/moe_group.cuh"
#include "cuda/pdl.cuh"

namespace mind4::cuda {
namespace {

constexpr int kRouterMaxPerLane = 8;

// One warp: bias + the K largest of a row of E logits + the softmax over them (largest first).
// Logits are read through L2 (__ldcg): in the fused router they were written by other blocks.
__device__ __forceinline__ void router_topk_row(const float* __restrict__ row,
                                                const float* __restrict__ bias, int E, int K,
                                                int* __restrict__ experts,
                                                float* __restrict__ weights) {
  const int lane = threadIdx.x & 31;
  float v[kRouterMaxPerLane];
#pragma unroll
  for (int i = 0; i < kRouterMaxPerLane; ++i) {
    const int e = i * 32 + lane;
    v[i] = e < E ? __ldcg(row + e) + bias[e] : -INFINITY;
  }
  float top = 0.0f, sum = 0.0f, mine = 0.0f;  // lane s keeps slot s's logit
  for (int s = 0; s < K; ++s) {
    float best = -INFINITY;
    int best_e = INT32_MAX;
#pragma unroll
    for (int i = 0; i < kRouterMaxPerLane; ++i) {
      const int e = i * 32 + lane;
      if (e < E && (v[i] > best || (v[i] == best && e < best_e))) best = v[i], best_e = e;
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (ob > best || (ob == best && oe < best_e)) best = ob, best_e = oe;
    }
    // Remove the winner from its lane's set (-inf never wins against a real logit again; E >= K).
#pragma unroll
    for (int i = 0; i < kRouterMaxPerLane; ++i)
      if (i * 32 + lane == best_e) v[i] = -INFINITY;
    if (s == 0) top = best;
    if (lane == s) mine = best;
    if (lane == 0) experts[s] = best_e;
    sum += expf(best - top);
  }
  if (lane < K) weights[lane] = expf(mine - top) / sum;
}

__global__ void router_topk_softmax_kernel(const float* __restrict__ logits,
                                           const float* __restrict__ bias, int B, int E, int K,
                                           int* __restrict__ experts, float* __restrict__ weights) {
  const int r = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (r >= B) return;
  router_topk_row(logits + int64_t(r) * E, bias, E, K, experts + int64_t(r) * K,
                  weights + int64_t(r) * K);
}

// The whole router of a small step in one launch: block (e, r) computes logit (r, e) = x[r] .
// w[e] in f32 (threads over H, weights loaded before the PDL wait); the block that finishes last
// (a counter in global memory, reset by that block for the next step) takes the top-k of every
// row and groups the assignments by expert.
constexpr int kRgThreads = 128;
constexpr int kRgPre = 8;  // float4 weight loads per thread issued before the wait

__global__ void __launch_bounds__(kRgThreads)
    router_group_kernel(const float* __restrict__ x, const float* __restrict__ w,
                        const float* __restrict__ bias, int B, int H, int E, int K,
                        float* __restrict__ logits, unsigned* __restrict__ done,
                        int* __restrict__ experts, float* __restrict__ weights, MoeGroups g) {
  __shared__ float partial[kRgThreads / 32];
  __shared__ int count[32 * kRouterMaxPerLane];
  __shared__ bool last;
  pdl_trigger();
  const int e = blockIdx.x, r = blockIdx.y, H4 = H / 4;
  const float4* wr = reinterpret_cast<const float4*>(w + int64_t(e) * H);
  float4 pre[kRgPre];
#pragma unroll
  for (int i = 0; i < kRgPre; ++i) {
    const int c = threadIdx.x + i * kRgThreads;
    pre[i] = c < H4 ? __ldg(wr + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  pdl_wait();
  const float4* xr = reinterpret_cast<const float4*>(x + int64_t(r) * H);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kRgPre; ++i) {
    const int c = threadIdx.x + i * kRgThreads;
    if (c < H4) {
      const float4 a = xr[c];
      s += pre[i].x * a.x + pre[i].y * a.y + pre[i].z * a.z + pre[i].w * a.w;
    }
  }
  for (int c = threadIdx.x + kRgPre * kRgThreads; c < H4; c += kRgThreads) {
    const float4 b = __ldg(wr + c), a = xr[c];
    s += b.x * a.x + b.y * a.y + b.z * a.z + b.w * a.w;
  }
  s = warp_sum(s);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.0f;
    for (int i = 0; i < kRgThreads / 32; ++i) t += partial[i];
    logits[int64_t(r) * E + e] = t;
    __threadfence();  // the logit is visible before the counter says so
    last = atomicAdd(done, 1u) == gridDim.x * gridDim.y - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int rr = threadIdx.x >> 5; rr < B; rr += kRgThreads / 32)
    router_topk_row(logits + int64_t(rr) * E, bias, E, K, experts + int64_t(rr) * K,
                    weights + int64_t(rr) * K);
  __syncthreads();  // the experts are written (global memory, this block)
  moe_group_block(experts, B * K, K, E, count, g);
  if (threadIdx.x == 0) *done = 0u;
}

}  // namespace

void router_topk_softmax(const float* logits, const float* bias, int B, int E, int K, int* experts,
                         float* weights, cudaStream_t stream) {
  MIND4_CUDA_ARG(logits && bias && experts && weights, "router_topk_softmax", "null pointer");
  MIND4_CUDA_ARG(E > 0 && E <= 32 * kRouterMaxPerLane && K > 0 && K <= E && K <= 32 && B >= 0,
                 "router_topk_softmax", "E = ", E, " (at most ", 32 * kRouterMaxPerLane,
                 "), K = ", K, " (at most E and 32), B = ", B);
  if (B == 0) return;
  const int rows_per_block = 4;
  router_topk_softmax_kernel<<<(B + rows_per_block - 1) / rows_per_block, rows_per_block * 32, 0,
                               stream>>>(logits, bias, B, E, K, experts, weights);
  check_launch("router_topk_softmax_f32");
}

void router_group(const float* x, const float* w, const float* bias, int B, int H, int E, int K,
                  float* logits, unsigned* done, int* experts, float* weights, MoeGroups g,
                  cudaStream_t stream) {
  MIND4_CUDA_ARG(x && w && bias && logits && done && experts && weights && g.offsets && g.active &&
                     g.group_row && g.group_expert && g.assign_at,
                 "router_group", "null pointer");
  MIND4_CUDA_ARG(E > 0 && E <= 32 * kRouterMaxPerLane && K > 0 && K <= E && K <= 32 && B >= 1 &&
                     B <= 65535 && H > 0 && H % 4 == 0,
                 "router_group", "E = ", E, " (at most ", 32 * kRouterMaxPerLane, "), K = ", K,
                 " (at most E and 32), B = ", B, ", H = ", H, " (a multiple of 4)");
  MIND4_CUDA_ARG(
      reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0,
      "router_group", "x and w must be 16-byte aligned");
  launch_pdl("router_group_f32", router_group_kernel, dim3(E, B), dim3(kRgThreads), 0, stream, x, w,
             bias, B, H, E, K, logits, done, experts, weights, g);
}

}  // namespace mind4::cuda
