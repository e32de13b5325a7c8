// Router epilogue: bias, top-k and the softmax over the k, one warp per row. Each lane holds up
// to 8 of the E <= 256 logits; k rounds of a warp-wide arg-max pick the experts (ties go to the
// lower index, as on the CPU line). For small steps (decode) router_group does the router's
// product, this epilogue and the grouping by expert in one launch.
#include <atomic>
#include <cmath>

#include "cuda/moe_group.cuh"
#include "cuda/pdl.cuh"

namespace mind4::cuda {
namespace {

constexpr int kRouterMaxPerLane = 8;

// One warp: the K largest of a row of E biased logits (value(e)) + the softmax over them (largest
// first; ties go to the lower index, as on the CPU line). Returns slot `lane`'s expert in lanes
// below K, which write experts and weights.
template <typename Value>
__device__ __forceinline__ int router_topk_pick(Value value, int E, int K,
                                                int* __restrict__ experts,
                                                float* __restrict__ weights) {
  const int lane = threadIdx.x & 31;
  float top = 0.0f, sum = 0.0f, mine = 0.0f;  // lane s keeps slot s's logit and expert
  int mine_e = -1;
  if (E <= 32) {
    // One logit a lane: each lane counts the logits ranked before its own (32 independent
    // shuffles), then slot s is the lane of rank s. K rounds of a warp-wide arg-max are K chains
    // of ten dependent shuffles (about 0.6 us of a decode layer's router on an H100).
    const float v = lane < E ? value(lane) : -INFINITY;
    int rank = 0;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const float o = __shfl_sync(0xffffffffu, v, j);
      rank += o > v || (o == v && j < lane);
    }
    // Lane s < K takes the lane of rank s (K independent ballots), then the softmax's sum adds
    // the slots in order, as the arg-max rounds below do.
    int at = 0;
    for (int s = 0; s < K; ++s) {
      const unsigned m = __ballot_sync(0xffffffffu, rank == s);
      if (lane == s) at = __ffs(m) - 1;
    }
    mine = __shfl_sync(0xffffffffu, v, at);
    mine_e = lane < K ? at : -1;
    top = __shfl_sync(0xffffffffu, mine, 0);
    const float ex = expf(mine - top);
    for (int s = 0; s < K; ++s) sum += __shfl_sync(0xffffffffu, ex, s);
  } else {
    auto take = [&](int s, float best, int best_e) {  // slot s, in slot order
      if (s == 0) top = best;
      if (lane == s) mine = best, mine_e = best_e;
      sum += expf(best - top);
    };
    float v[kRouterMaxPerLane];
#pragma unroll
    for (int i = 0; i < kRouterMaxPerLane; ++i) {
      const int e = i * 32 + lane;
      v[i] = e < E ? value(e) : -INFINITY;
    }
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
      // Remove the winner from its lane's set (-inf never wins against a real logit; E >= K).
#pragma unroll
      for (int i = 0; i < kRouterMaxPerLane; ++i)
        if (i * 32 + lane == best_e) v[i] = -INFINITY;
      take(s, best, best_e);
    }
  }
  if (lane < K) experts[lane] = mine_e, weights[lane] = expf(mine - top) / sum;
  return mine_e;
}

// router_topk_pick of logits in global memory plus bias. Read through L2 (__ldcg): in the fused
// router they were written by other blocks.
__device__ __forceinline__ int router_topk_row(const float* __restrict__ row,
                                               const float* __restrict__ bias, int E, int K,
                                               int* __restrict__ experts,
                                               float* __restrict__ weights) {
  return router_topk_pick([&](int e) { return __ldcg(row + e) + bias[e]; }, E, K, experts, weights);
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

// The end of both router_group kernels: block (e, r)'s per-thread dot products s become logit
// (r, e); the block that finishes last (a counter in global memory, reset by that block for the
// next launch) takes the top-k of every row and groups the assignments by expert.
__device__ __forceinline__ void router_group_finish(float s, int r, int e,
                                                    const float* __restrict__ bias, int B, int E,
                                                    int K, float* __restrict__ logits,
                                                    unsigned* __restrict__ done,
                                                    int* __restrict__ experts,
                                                    float* __restrict__ weights, MoeGroups g) {
  __shared__ float partial[kRgThreads / 32];
  __shared__ int count[32 * kRouterMaxPerLane];
  __shared__ bool last;
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
  if (B == 1) {  // decode at one row: one warp, no block barriers (see the helper)
    if (threadIdx.x < 32) {
      moe_group_one_row(router_topk_row(logits, bias, E, K, experts, weights), K, E, g);
      if (threadIdx.x == 0) *done = 0u;
    }
    return;
  }
  for (int rr = threadIdx.x >> 5; rr < B; rr += kRgThreads / 32)
    router_topk_row(logits + int64_t(rr) * E, bias, E, K, experts + int64_t(rr) * K,
                    weights + int64_t(rr) * K);
  __syncthreads();  // the experts are written (global memory, this block)
  moe_group_block(experts, B * K, K, E, count, g);
  if (threadIdx.x == 0) *done = 0u;
}

__global__ void __launch_bounds__(kRgThreads)
    router_group_kernel(const float* __restrict__ x, const float* __restrict__ w,
                        const float* __restrict__ bias, int B, int H, int E, int K,
                        float* __restrict__ logits, unsigned* __restrict__ done,
                        int* __restrict__ experts, float* __restrict__ weights, MoeGroups g) {
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
  router_group_finish(s, r, e, bias, B, E, K, logits, done, experts, weights, g);
}

// router_group with the norm before it folded in (decode at one row): block (e, r) recomputes the
// RMSNorm of residual row r itself (H <= kRnMaxH floats, held in registers in the float4 layout of
// its weight row: the row is only a few KB and read from L2 by E blocks), writes its share of the
// normed row as bf16 and as int16 blocks (rn_write_q16: the experts' input), then computes logit
// (r, e) from the f32 normed values and finishes as router_group does. It replaces
// residual_rmsnorm + quantize_q8_32 + router_group: two one-block launches fewer per layer.
constexpr int kRnMaxH = kRgPre * kRgThreads * 4;

// The block's sum of v (every thread gets the same value: the partials are added in one order).
__device__ __forceinline__ float rn_block_sum(float v, float* partial) {
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int i = 0; i < kRgThreads / 32; ++i) total += partial[i];
  __syncthreads();  // partial is reused by the caller
  return total;
}

// Four consecutive bf16 values packed as they lie in memory (element 0 in the low half).
__device__ __forceinline__ uint2 rn_pack_bf16x4(const __nv_bfloat16 (&b)[4]) {
  auto bits = [](__nv_bfloat16 v) { return uint32_t(__bfloat16_as_ushort(v)); };
  return make_uint2(bits(b[0]) | bits(b[1]) << 16, bits(b[2]) | bits(b[3]) << 16);
}

// Normed values 4c .. 4c + 3 of row r (n, f32) as bf16 into t_out and as int16 blocks of 32
// (q16_scale of the bf16 values) into q_out and d_out: mlp1's input. Called by a whole warp for 128
// consecutive values (chunk c / 32 of the row; 8 lanes a block); lanes past the row (c >= H / 4)
// write nothing. H % 32 == 0, so a block lies wholly inside or wholly past the row.
__device__ __forceinline__ void rn_write_q16(const float (&n)[4], int c, int r, int H,
                                             __nv_bfloat16* __restrict__ t_out,
                                             int16_t* __restrict__ q_out,
                                             float* __restrict__ d_out) {
  __nv_bfloat16 b[4];
  float amax = 0.0f;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    b[k] = __float2bfloat16_rn(n[k]);
    amax = fmaxf(amax, fabsf(__bfloat162float(b[k])));
  }
#pragma unroll
  for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (c >= H / 4) return;
  const float d = q16_scale(amax);
  uint32_t q[2] = {0, 0};
#pragma unroll
  for (int k = 0; k < 4; ++k)
    q[k / 2] |= uint32_t(uint16_t(int16_t(q8_round(__bfloat162float(b[k]), d)))) << (16 * (k % 2));
  const int64_t at = int64_t(r) * H + 4 * int64_t(c);
  *reinterpret_cast<uint2*>(t_out + at) = rn_pack_bf16x4(b);
  *reinterpret_cast<uint2*>(q_out + at) = make_uint2(q[0], q[1]);
  if ((threadIdx.x & 7) == 0) d_out[int64_t(r) * (H / 32) + c / 8] = d;
}

__global__ void __launch_bounds__(kRgThreads)
    router_norm_group_kernel(const float* __restrict__ x, const float* __restrict__ norm_scale,
                             float eps, const float* __restrict__ w, const float* __restrict__ bias,
                             int B, int H, int E, int K, float* __restrict__ logits,
                             unsigned* __restrict__ done, int* __restrict__ experts,
                             float* __restrict__ weights, MoeGroups g,
                             __nv_bfloat16* __restrict__ t_out, int16_t* __restrict__ q_out,
                             float* __restrict__ d_out) {
  __shared__ float partial[kRgThreads / 32];
  const int e = blockIdx.x, r = blockIdx.y, H4 = H / 4, warp = threadIdx.x >> 5;
  const float4* wr = reinterpret_cast<const float4*>(w + int64_t(e) * H);
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const float4* sc4 = reinterpret_cast<const float4*>(norm_scale);
  // The weights and the norm's scale (neither written by the kernel before) before the wait.
  float4 wv[kRgPre], scv[kRgPre];
#pragma unroll
  for (int i = 0; i < kRgPre; ++i) {
    const int c = threadIdx.x + i * kRgThreads;
    wv[i] = c < H4 ? __ldg(wr + c) : zero;
    scv[i] = c < H4 ? __ldg(sc4 + c) : zero;
  }
  pdl_wait();
  const float4* xr = reinterpret_cast<const float4*>(x + int64_t(r) * H);
  float4 xv[kRgPre];
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < kRgPre; ++i) {
    const int c = threadIdx.x + i * kRgThreads;
    xv[i] = c < H4 ? xr[c] : zero;
    ss += xv[i].x * xv[i].x + xv[i].y * xv[i].y + xv[i].z * xv[i].z + xv[i].w * xv[i].w;
  }
  const float rstd = rsqrtf(rn_block_sum(ss, partial) / H + eps);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kRgPre; ++i) {
    const int c = threadIdx.x + i * kRgThreads;
    const float4 sc = scv[i];
    // The normed value as residual_rmsnorm computes it: (x * rstd) * scale.
    const float n[4] = {xv[i].x * rstd * sc.x, xv[i].y * rstd * sc.y, xv[i].z * rstd * sc.z,
                        xv[i].w * rstd * sc.w};
    s += wv[i].x * n[0] + wv[i].y * n[1] + wv[i].z * n[2] + wv[i].w * n[3];
    // Chunk (i, warp) is 128 consecutive values, four int16 blocks of 8 lanes each; block e writes
    // the chunks ch with ch % E == e (a warp-uniform test; H % 32 == 0, so a block lies
    // wholly inside or wholly past the row).
    const int ch = i * (kRgThreads / 32) + warp;
    if (ch % E == e) rn_write_q16(n, c, r, H, t_out, q_out, d_out);
  }
  router_group_finish(s, r, e, bias, B, E, K, logits, done, experts, weights, g);
}

// The folded router of one row as a cluster of kBlocks blocks (decode at batch 1): block c
// holds experts c, c + kBlocks, ... (at most kExperts; weights and the norm's scale in
// registers, loaded before the PDL wait), norms the row itself and stores its logits (plus bias)
// into block 0's shared memory with st.async, counted by an mbarrier there; the other blocks then
// write the chunks of the normed row as router_norm_group_kernel does, while block 0 waits on its
// mbarrier and takes the top-k and the grouping. No fence, atomic or read back through L2 as in
// the 32-block kernel's last-block handover, and no release barrier (it waited for the block's
// earlier stores): the router's step 6.2 -> 3.4 us a layer on an H100 (docs/perf-notes.md,
// S12.2-S12.3). A logit is rstd * sum(w * x * scale) here, the E-block kernel's
// sum(w * (x * rstd * scale)) rounded in another order. Two shapes: up to 32 experts, 8 blocks
// (the portable cluster size) of 4; up to 128 (gpt-oss-120b), 16 blocks of 8 on rows of at most
// 3072 (a cluster larger than 8 must be allowed and fit a GPC: router_cluster16_fits).
constexpr int kRcThreads = 256;

// The cluster routers' arguments (router_norm_group's, less B, the counter and the row's
// float4 count).
struct RouterClusterArgs {
  const float* x;
  const float* norm_scale;
  float eps;
  const float* w;
  const float* bias;
  int H, E, K;
  float* logits;
  int* experts;
  float* weights;
  MoeGroups g;
  __nv_bfloat16* t_out;
  int16_t* q_out;
  float* d_out;
};

template <int kBlocks, int kExperts, int kPre>
__device__ __forceinline__ void router_norm_group_cluster(const RouterClusterArgs& a) {
  const float* __restrict__ x = a.x;
  const float* __restrict__ norm_scale = a.norm_scale;
  const float* __restrict__ w = a.w;
  const float* __restrict__ bias = a.bias;
  const float eps = a.eps;
  const int H = a.H, E = a.E, K = a.K;
  float* __restrict__ logits = a.logits;
  float* __restrict__ weights = a.weights;
  float* __restrict__ d_out = a.d_out;
  int* __restrict__ experts = a.experts;
  const MoeGroups g = a.g;
  __nv_bfloat16* __restrict__ t_out = a.t_out;
  int16_t* __restrict__ q_out = a.q_out;
  constexpr int kWarps = kRcThreads / 32;
  __shared__ float partial[kWarps][1 + kExperts];
  __shared__ float row_logits[kBlocks * kExperts];  // block 0's: every block's, biased
  __shared__ alignas(8) uint64_t logits_in;         // block 0's: complete once E are in
  const int rank = blockIdx.x, H4 = H / 4;          // the grid is one cluster
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Block 0's barrier expects E logits (4 bytes each, stored by st.async from every block); the
  // cluster barrier (arrive now, wait before the first store) makes its initialisation visible.
  const uint32_t logits_in_at = static_cast<uint32_t>(__cvta_generic_to_shared(&logits_in));
  if (rank == 0 && threadIdx.x == 0)
    asm volatile(
        "mbarrier.init.shared::cta.b64 [%0], 1;\n"
        "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
        "fence.mbarrier_init.release.cluster;" ::"r"(logits_in_at),
        "r"(4 * E)
        : "memory");
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const float4* sc4 = reinterpret_cast<const float4*>(norm_scale);
  float4 wv[kExperts][kPre], scv[kPre];
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    const int c = threadIdx.x + i * kRcThreads;
    scv[i] = c < H4 ? __ldg(sc4 + c) : zero;
#pragma unroll
    for (int j = 0; j < kExperts; ++j) {
      const int e = rank + j * kBlocks;
      wv[j][i] =
          e < E && c < H4 ? __ldg(reinterpret_cast<const float4*>(w + int64_t(e) * H) + c) : zero;
    }
  }
  const int my_e = rank + int(threadIdx.x) * kBlocks;  // thread j < kExperts: expert j's
  const float my_bias = threadIdx.x < kExperts && my_e < E ? bias[my_e] : 0.0f;
  pdl_wait();
  const float4* xr = reinterpret_cast<const float4*>(x);
  float4 xv[kPre];
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    const int c = threadIdx.x + i * kRcThreads;
    xv[i] = c < H4 ? xr[c] : zero;
  }
  float ss = 0.0f, dot[kExperts] = {};
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    const float4 a = xv[i], sc = scv[i];
    ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
    const float4 xs = make_float4(a.x * sc.x, a.y * sc.y, a.z * sc.z, a.w * sc.w);
#pragma unroll
    for (int j = 0; j < kExperts; ++j)
      dot[j] += wv[j][i].x * xs.x + wv[j][i].y * xs.y + wv[j][i].z * xs.z + wv[j][i].w * xs.w;
  }
  ss = warp_sum(ss);
#pragma unroll
  for (int j = 0; j < kExperts; ++j) dot[j] = warp_sum(dot[j]);
  if (lane == 0) {
    partial[warp][0] = ss;
#pragma unroll
    for (int j = 0; j < kExperts; ++j) partial[warp][1 + j] = dot[j];
  }
  __syncthreads();
  float total = 0.0f;  // every thread adds the warps' partials in one order
#pragma unroll
  for (int v = 0; v < kWarps; ++v) total += partial[v][0];
  const float rstd = rsqrtf(total / H + eps);
  float my_logit = 0.0f;
  if (threadIdx.x < kExperts && my_e < E) {
    float t = 0.0f;
#pragma unroll
    for (int v = 0; v < kWarps; ++v) t += partial[v][1 + threadIdx.x];
    my_logit = rstd * t;
  }
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
  if (threadIdx.x < kExperts && my_e < E) {
    // Into block 0's row_logits[my_e], counted by its barrier: no fence, no cluster barrier
    // (a release barrier there cost about 0.8 us).
    uint32_t to = static_cast<uint32_t>(__cvta_generic_to_shared(row_logits + my_e)), bar;
    asm volatile("mapa.shared::cluster.u32 %0, %0, 0;" : "+r"(to));
    asm volatile("mapa.shared::cluster.u32 %0, %1, 0;" : "=r"(bar) : "r"(logits_in_at));
    asm volatile(
        "st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(to),
        "r"(__float_as_uint(my_logit + my_bias)), "r"(bar)
        : "memory");
    logits[my_e] = my_logit;
  }
  // The chunks of the normed row while block 0 picks the experts (chunk i * kWarps + warp belongs
  // to block 1 + chunk % (kBlocks - 1)).
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    const int c = threadIdx.x + i * kRcThreads, ch = i * kWarps + warp;
    if (rank == 0 || 1 + ch % (kBlocks - 1) != rank || (ch * 32) >= H4) continue;  // uniform
    const float4 a = xv[i], sc = scv[i];
    const float n[4] = {a.x * rstd * sc.x, a.y * rstd * sc.y, a.z * rstd * sc.z, a.w * rstd * sc.w};
    rn_write_q16(n, c, 0, H, t_out, q_out, d_out);
  }
  if (rank != 0 || warp != 0) return;  // nothing reads the other blocks' shared memory
  asm volatile(
      "{\n.reg .pred done;\nwait_logits:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
      "@!done bra wait_logits;\n}" ::"r"(logits_in_at)
      : "memory");
  moe_group_one_row(router_topk_pick([&](int e) { return row_logits[e]; }, E, K, experts, weights),
                    K, E, g);
}

// The two cluster shapes: 8 blocks of 4 experts on rows up to kRnMaxH; 16 blocks of 8 on rows up
// to 3072 (three float4 a thread; 96 registers of weights, as many as the first shape's 64 and
// the row's 32 together).
// The 8-block one keeps its cluster shape in the kernel, 16 is given at launch (see
// router_cluster16_fits). Both take their arguments in one struct. Against the single 8-block
// kernel before them, gpt-oss-20b's decode at batch 1 measured 0.2% slower with the arguments one
// by one and both shapes given at launch, and 0.9% faster as here (H100, docs/perf-notes.md,
// S18.4).
__global__ void __cluster_dims__(8, 1, 1) __launch_bounds__(kRcThreads)
    router_norm_group_cluster8_kernel(const RouterClusterArgs a) {
  router_norm_group_cluster<8, 4, 4>(a);
}
__global__ void __launch_bounds__(kRcThreads)
    router_norm_group_cluster16_kernel(const RouterClusterArgs a) {
  router_norm_group_cluster<16, 8, 3>(a);
}
static_assert(4 * kRcThreads * 4 >= kRnMaxH, "the 8-block router holds every row accepted");
constexpr int kRc16MaxH = 3 * kRcThreads * 4;

// Whether the 16-block router serves E experts on rows of H: E <= 128, H <= kRc16MaxH, and a
// cluster of 16 fits on this device (asked once a device).
bool router_cluster16_fits(int E, int H) {
  if (E > 128 || H > kRc16MaxH) return false;
  static std::atomic<int> known[64] = {};  // per device: 0 unknown, 1 fits, -1 does not
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 64) return false;
  if (known[dev] != 0) return known[dev] > 0;
  const bool fits = cluster_fits(router_norm_group_cluster16_kernel, 16, kRcThreads);
  known[dev] = fits ? 1 : -1;
  return fits;
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

namespace mind4::cuda {

bool router_norm_group_supported(int H) {
  return H > 0 && H % 32 == 0 && H <= kRnMaxH;
}

void router_norm_group(const float* x, const float* norm_scale, float eps, const float* w,
                       const float* bias, int B, int H, int E, int K, float* logits, unsigned* done,
                       int* experts, float* weights, MoeGroups g, void* t_out, int16_t* q_out,
                       float* d_out, cudaStream_t stream) {
  MIND4_CUDA_ARG(x && norm_scale && w && bias && logits && done && experts && weights &&
                     g.offsets && g.active && g.group_row && g.group_expert && g.assign_at &&
                     t_out && q_out && d_out,
                 "router_norm_group", "null pointer");
  MIND4_CUDA_ARG(E > 0 && E <= 32 * kRouterMaxPerLane && K > 0 && K <= E && K <= 32 && B >= 1 &&
                     B <= 65535 && router_norm_group_supported(H) && eps > 0,
                 "router_norm_group", "E = ", E, " (at most ", 32 * kRouterMaxPerLane, "), K = ", K,
                 " (at most E and 32), B = ", B, ", H = ", H, " (a multiple of 32, at most ",
                 kRnMaxH, "), eps = ", eps);
  auto misaligned = [](const void* p, int n) { return reinterpret_cast<uintptr_t>(p) % n != 0; };
  MIND4_CUDA_ARG(!misaligned(x, 16) && !misaligned(norm_scale, 16) && !misaligned(w, 16) &&
                     !misaligned(t_out, 8) && !misaligned(q_out, 8),
                 "router_norm_group",
                 "x, norm_scale and w must be 16-byte aligned, t_out and q_out 8-byte");
  if (B == 1 && (E <= 32 || router_cluster16_fits(E, H))) {
    auto* t16 = static_cast<__nv_bfloat16*>(t_out);
    const RouterClusterArgs args{x,      norm_scale, eps,     w, bias, H,     E,    K,
                                 logits, experts,    weights, g, t16,  q_out, d_out};
    auto go = [&](auto kernel, unsigned cluster, const char* name) {  // one cluster
      launch_pdl_clusters(name, kernel, cluster, dim3(E <= 32 ? 8 : 16), dim3(kRcThreads), 0,
                          stream, args);
    };
    if (E <= 32)
      go(router_norm_group_cluster8_kernel, 0, "router_norm_group_cluster_f32");
    else
      go(router_norm_group_cluster16_kernel, 16, "router_norm_group_cluster16_f32");
    return;
  }
  launch_pdl("router_norm_group_f32", router_norm_group_kernel, dim3(E, B), dim3(kRgThreads), 0,
             stream, x, norm_scale, eps, w, bias, B, H, E, K, logits, done, experts, weights, g,
             static_cast<__nv_bfloat16*>(t_out), q_out, d_out);
}

}  // namespace mind4::cuda
