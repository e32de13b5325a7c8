// Fused router epilogue: bias, top-k and the softmax over the k, one warp per row. Each lane
// holds up to 8 of the E <= 256 logits; k rounds of a warp-wide arg-max pick the experts (ties go
// to the lower index, as on the CPU line).
#include <cmath>

#include "cuda/device_util.cuh"

namespace mind4::cuda {
namespace {

constexpr int kRouterMaxPerLane = 8;

__global__ void router_topk_softmax_kernel(const float* __restrict__ logits,
                                           const float* __restrict__ bias, int B, int E, int K,
                                           int* __restrict__ experts, float* __restrict__ weights) {
  const int r = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (r >= B) return;
  float v[kRouterMaxPerLane];
#pragma unroll
  for (int i = 0; i < kRouterMaxPerLane; ++i) {
    const int e = i * 32 + lane;
    v[i] = e < E ? logits[int64_t(r) * E + e] + bias[e] : -INFINITY;
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
    if (lane == 0) experts[int64_t(r) * K + s] = best_e;
    sum += expf(best - top);
  }
  if (lane < K) weights[int64_t(r) * K + lane] = expf(mine - top) / sum;
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

}  // namespace mind4::cuda
