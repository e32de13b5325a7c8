// Training mixture of experts around the per-expert cuBLAS products: the router (top-k, its
// softmax, the full softmax of the load-balancing loss) and its backward, the clamped SwiGLU and
// its backward, and the weighted combine into the residual stream and its backward.
#include "cuda/train_kernels.h"
#include "cuda/train_swiglu.cuh"
#include "cuda/train_util.cuh"
#include "cuda/train_vec.cuh"

namespace mind4::cuda {
namespace {

constexpr int kTrainRouterMaxExperts = 256;
// (gate, linear) pairs per thread and step of the wide SwiGLU kernels: 8 elements of h, 16 bytes
// in bf16.
constexpr int kTrainSwigluPairs = 4;
// Elements per thread and step of the wide row kernels (router backward, combine): 16 bytes of
// bf16, 32 of f32.
constexpr int kTrainMoeWidth = 8;
// The router backward adds the router product's input gradient for up to this many experts.
constexpr int kRouterFoldMaxExperts = train_router_fold_max_experts;

// A thread per row: E is small (gpt-oss: 32 or 128).
__global__ void train_router_fwd_kernel(const float* __restrict__ logits,
                                        const float* __restrict__ bias, int NT, int E, int K,
                                        int* __restrict__ experts, float* __restrict__ weights,
                                        float* __restrict__ probs) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= NT) return;
  const float* lr = logits + r * E;
  uint32_t taken[kTrainRouterMaxExperts / 32] = {};
  int* er = experts + r * K;
  for (int s = 0; s < K; ++s) {
    int best = -1;
    float bv = 0.0f;
    for (int e = 0; e < E; ++e) {
      if (taken[e >> 5] >> (e & 31) & 1u) continue;
      const float v = lr[e] + bias[e];
      if (best < 0 || v > bv) best = e, bv = v;
    }
    taken[best >> 5] |= 1u << (best & 31);
    er[s] = best;
  }
  const float m = lr[er[0]] + bias[er[0]];
  float sum = 0.0f;
  for (int s = 0; s < K; ++s) sum += weights[r * K + s] = expf(lr[er[s]] + bias[er[s]] - m);
  for (int s = 0; s < K; ++s) weights[r * K + s] /= sum;
  float mx = lr[0] + bias[0];
  for (int e = 1; e < E; ++e) mx = fmaxf(mx, lr[e] + bias[e]);
  float total = 0.0f;
  for (int e = 0; e < E; ++e) total += probs[r * E + e] = expf(lr[e] + bias[e] - mx);
  for (int e = 0; e < E; ++e) probs[r * E + e] /= total;
}

// A row of h (one assignment) per threadIdx.y, kPairs (gate, linear) pairs per thread and step:
// 4 pairs read and write 8 elements of h in one or two 16-byte words. The launch bound takes bf16
// from 44 registers to 40: 6 blocks of 256 threads per SM instead of 5, more loads in flight (f32
// keeps 5: at 40 it spills).
template <typename T, int kPairs>
__global__ void __launch_bounds__(256, sizeof(T) == 2 ? 6 : 5)
    train_swiglu_fwd_kernel(const T* __restrict__ h, const float* __restrict__ bias,
                            const int* __restrict__ group_expert, int A, int I, float limit,
                            T* __restrict__ h_saved, T* __restrict__ act) {
  constexpr bool kWide = kPairs > 1;
  const int steps = I / kPairs;
  for (int64_t a = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; a < A;
       a += int64_t(gridDim.x) * blockDim.y) {
    const float* br = bias + int64_t(group_expert[a]) * 2 * I;
    for (int c = threadIdx.x; c < steps; c += blockDim.x) {
      const int i = c * kPairs;
      float hv[2 * kPairs], bv[2 * kPairs], out[kPairs];
      train_load<2 * kPairs, kWide>(h + a * 2 * I + 2 * i, hv);
      train_load<2 * kPairs, kWide>(br + 2 * i, bv);
#pragma unroll
      for (int p = 0; p < kPairs; ++p) {
        const float hg = hv[2 * p] + bv[2 * p], hl = hv[2 * p + 1] + bv[2 * p + 1];
        hv[2 * p] = hg, hv[2 * p + 1] = hl;
        const float g = fminf(hg, limit), l = fminf(fmaxf(hl, -limit), limit);
        out[p] = g / (1.0f + expf(-kTrainSwigluAlpha * g)) * (l + 1.0f);
      }
      train_store<2 * kPairs, kWide>(h_saved + a * 2 * I + 2 * i, hv);
      train_store<kPairs, kWide>(act + a * I + i, out);
    }
  }
}

template <typename T, int kPairs>
__global__ void train_swiglu_bwd_kernel(const T* __restrict__ h, const T* __restrict__ dact, int A,
                                        int I, float limit, T* __restrict__ dh) {
  constexpr bool kWide = kPairs > 1;
  const int steps = I / kPairs;
  for (int64_t a = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; a < A;
       a += int64_t(gridDim.x) * blockDim.y) {
    for (int c = threadIdx.x; c < steps; c += blockDim.x) {
      const int i = c * kPairs;
      float hv[2 * kPairs], dv[kPairs];
      train_load<2 * kPairs, kWide>(h + a * 2 * I + 2 * i, hv);
      train_load<kPairs, kWide>(dact + a * I + i, dv);
#pragma unroll
      for (int p = 0; p < kPairs; ++p) {
        train_swiglu_pair_bwd(hv[2 * p], hv[2 * p + 1], dv[p], limit, hv[2 * p], hv[2 * p + 1]);
      }
      train_store<2 * kPairs, kWide>(dh + a * 2 * I + 2 * i, hv);
    }
  }
}

// A row per threadIdx.y, W elements of it per thread and step (W > 1: wide loads and stores).
template <typename T, int W>
__global__ void train_moe_combine_fwd_kernel(
    const float* __restrict__ xmid, const T* __restrict__ y, const float* __restrict__ bias,
    const int* __restrict__ experts, const int* __restrict__ assign_at,
    const float* __restrict__ weights, int NT, int K, int H, float* __restrict__ xout) {
  constexpr bool kWide = W > 1;
  const int steps = H / W;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; r < NT;
       r += int64_t(gridDim.x) * blockDim.y) {
    for (int c = threadIdx.x; c < steps; c += blockDim.x) {
      const int j = c * W;
      float v[W];
      train_load<W, kWide>(xmid + r * H + j, v);
#pragma unroll 2
      for (int s = 0; s < K; ++s) {
        const int64_t at = assign_at[r * K + s];
        const float wt = weights[r * K + s];
        float yv[W], bv[W];
        train_load<W, kWide>(y + at * H + j, yv);
        train_load<W, kWide>(bias + int64_t(experts[r * K + s]) * H + j, bv);
#pragma unroll
        for (int k = 0; k < W; ++k) v[k] += wt * (yv[k] + bv[k]);
      }
      train_store<W, kWide>(xout + r * H + j, v);
    }
  }
}

// A warp per (row, slot), W elements per lane and step.
template <typename T, int W>
__global__ void train_moe_combine_bwd_kernel(const float* __restrict__ dx, const T* __restrict__ y,
                                             const float* __restrict__ bias,
                                             const int* __restrict__ experts,
                                             const int* __restrict__ assign_at,
                                             const float* __restrict__ weights, int NT, int K,
                                             int H, float* __restrict__ dweights,
                                             T* __restrict__ dy) {
  constexpr bool kWide = W > 1;
  const int64_t w = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (w >= int64_t(NT) * K) return;
  const int64_t r = w / K, at = assign_at[w];
  const float* br = bias + int64_t(experts[w]) * H;
  const float wt = weights[w];
  float dot = 0.0f;
  for (int j = lane * W; j < H; j += 32 * W) {
    float g[W], yv[W], bv[W];
    train_load<W, kWide>(dx + r * H + j, g);
    train_load<W, kWide>(y + at * H + j, yv);
    train_load<W, kWide>(br + j, bv);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      dot += g[k] * (yv[k] + bv[k]);
      g[k] = wt * g[k];
    }
    train_store<W, kWide>(dy + at * H + j, g);
  }
  dot = warp_sum(dot);
  if (lane == 0) dweights[w] = dot;
}

// Row r's router logit gradient for expert e: the top-k softmax's backward from the combine
// weights' gradient, plus (aux_scale > 0) the load-balancing term through the probabilities.
__device__ __forceinline__ float train_router_logit_grad(const int* er, const float* wr,
                                                         const float* dwr, const float* pr,
                                                         const int* offsets, float aux_scale,
                                                         int NT, int E, int K, int e) {
  float dot = 0.0f;
  for (int s = 0; s < K; ++s) dot += wr[s] * dwr[s];
  float g = 0.0f;
  for (int s = 0; s < K; ++s)
    if (er[s] == e) g += wr[s] * (dwr[s] - dot);
  if (aux_scale > 0.0f) {
    // aux_g[e] = aux_scale * count_e / NT; softmax backward: p_e (aux_g_e - p . aux_g).
    float pdot = 0.0f;
    for (int f = 0; f < E; ++f) pdot += pr[f] * aux_scale * float(offsets[f + 1] - offsets[f]) / NT;
    g += pr[e] * (aux_scale * float(offsets[e + 1] - offsets[e]) / NT - pdot);
  }
  return g;
}

// A row per threadIdx.y: the router logits' gradient over threadIdx.x < E, dt over the row in
// steps of W elements. With gate_w [E, H] (E <= kRouterFoldMaxExperts), dt also gets the router
// product's input gradient, sum_e dlogits[r, e] gate_w[e, :], from the logit gradients as stored
// (rounded to T, as the product read them), through shared memory: dt is written once instead of
// being written, read and written again by a product of inner dimension E. The rows advance in
// step across the block, so that the barriers are reached by every thread.
template <typename T, int W>
__global__ void train_router_bwd_kernel(
    const int* __restrict__ experts, const float* __restrict__ weights,
    const float* __restrict__ dweights, const float* __restrict__ probs,
    const int* __restrict__ offsets, float aux_scale, const T* __restrict__ dxe,
    const int* __restrict__ assign_at, int NT, int E, int K, int H, const T* __restrict__ gate_w,
    T* __restrict__ dlogits, float* __restrict__ dt) {
  constexpr bool kWide = W > 1;
  __shared__ float row_dlogits[256 / 32][kRouterFoldMaxExperts];  // blockDim.y <= 8
  const int steps = H / W;
  for (int64_t base = int64_t(blockIdx.x) * blockDim.y; base < NT;
       base += int64_t(gridDim.x) * blockDim.y) {
    const int64_t r = base + threadIdx.y;
    const bool row = r < NT;
    if (row)
      for (int e = threadIdx.x; e < E; e += blockDim.x) {
        const float g = train_router_logit_grad(experts + r * K, weights + r * K, dweights + r * K,
                                                probs + r * E, offsets, aux_scale, NT, E, K, e);
        dlogits[r * E + e] = from_f32<T>(g);
        if (gate_w) row_dlogits[threadIdx.y][e] = to_f32(from_f32<T>(g));
      }
    if (gate_w) __syncthreads();
    if (row)
      for (int c = threadIdx.x; c < steps; c += blockDim.x) {
        const int j = c * W;
        float v[W];
#pragma unroll
        for (int k = 0; k < W; ++k) v[k] = 0.0f;
#pragma unroll 2
        for (int s = 0; s < K; ++s) {
          float x[W];
          train_load<W, kWide>(dxe + int64_t(assign_at[r * K + s]) * H + j, x);
#pragma unroll
          for (int k = 0; k < W; ++k) v[k] += x[k];
        }
        if (gate_w)
          for (int e = 0; e < E; ++e) {
            const float g = row_dlogits[threadIdx.y][e];
            float w[W];
            train_load<W, kWide>(gate_w + int64_t(e) * H + j, w);
#pragma unroll
            for (int k = 0; k < W; ++k) v[k] += g * w[k];
          }
        train_store<W, kWide>(dt + r * H + j, v);
      }
    if (gate_w) __syncthreads();  // row_dlogits is written again for the next rows
  }
}

__global__ void train_pad_groups_kernel(const int* __restrict__ experts,
                                        const int* __restrict__ offsets,
                                        const int* __restrict__ poffsets, int A, int K,
                                        int* __restrict__ assign_at, int* __restrict__ group_row,
                                        int* __restrict__ group_expert) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= A) return;
  const int e = experts[i];
  const int at = assign_at[i] - offsets[e] + poffsets[e];
  assign_at[i] = at;
  group_row[at] = i / K;
  group_expert[at] = e;
}

const char* train_moe_name(ActType t, const char* f32, const char* bf16) {
  return t == ActType::kF32 ? f32 : bf16;
}

}  // namespace

void train_router_fwd(const float* logits, const float* bias, int NT, int E, int K, int* experts,
                      float* weights, float* probs, cudaStream_t stream) {
  MIND4_CUDA_ARG(logits && bias && experts && weights && probs, "train_router_fwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && E > 0 && E <= kTrainRouterMaxExperts && K > 0 && K <= E,
                 "train_router_fwd", "NT = ", NT, ", E = ", E, " (at most ", kTrainRouterMaxExperts,
                 "), K = ", K);
  if (NT == 0) return;
  train_router_fwd_kernel<<<(NT + 127) / 128, 128, 0, stream>>>(logits, bias, NT, E, K, experts,
                                                                weights, probs);
  check_launch("train_router_fwd");
}

void train_swiglu_fwd(ActType t, const void* h, const float* bias, const int* group_expert, int A,
                      int I, float limit, void* h_saved, void* act_out, cudaStream_t stream) {
  MIND4_CUDA_ARG(h && bias && group_expert && h_saved && act_out, "train_swiglu_fwd",
                 "null pointer");
  MIND4_CUDA_ARG(A >= 0 && I > 0 && limit > 0, "train_swiglu_fwd", "A = ", A, ", I = ", I);
  if (A == 0) return;
  const bool wide = I % kTrainSwigluPairs == 0 && train_aligned16(h) && train_aligned16(bias) &&
                    train_aligned16(h_saved) && train_aligned16(act_out);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel, int pairs) {
      const dim3 block = train_row_block(I / pairs);
      kernel<<<train_row_grid(A, block), block, 0, stream>>>(
          static_cast<const T*>(h), bias, group_expert, A, I, limit, static_cast<T*>(h_saved),
          static_cast<T*>(act_out));
    };
    if (wide)
      launch(train_swiglu_fwd_kernel<T, kTrainSwigluPairs>, kTrainSwigluPairs);
    else
      launch(train_swiglu_fwd_kernel<T, 1>, 1);
  });
  check_launch(train_moe_name(t, "train_swiglu_fwd_f32", "train_swiglu_fwd_bf16"));
}

void train_swiglu_bwd(ActType t, const void* h_saved, const void* dact, int A, int I, float limit,
                      void* dh, cudaStream_t stream) {
  MIND4_CUDA_ARG(h_saved && dact && dh, "train_swiglu_bwd", "null pointer");
  MIND4_CUDA_ARG(A >= 0 && I > 0 && limit > 0, "train_swiglu_bwd", "A = ", A, ", I = ", I);
  if (A == 0) return;
  const bool wide = I % kTrainSwigluPairs == 0 && train_aligned16(h_saved) &&
                    train_aligned16(dact) && train_aligned16(dh);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel, int pairs) {
      const dim3 block = train_row_block(I / pairs);
      kernel<<<train_row_grid(A, block), block, 0, stream>>>(static_cast<const T*>(h_saved),
                                                             static_cast<const T*>(dact), A, I,
                                                             limit, static_cast<T*>(dh));
    };
    if (wide)
      launch(train_swiglu_bwd_kernel<T, kTrainSwigluPairs>, kTrainSwigluPairs);
    else
      launch(train_swiglu_bwd_kernel<T, 1>, 1);
  });
  check_launch(train_moe_name(t, "train_swiglu_bwd_f32", "train_swiglu_bwd_bf16"));
}

void train_moe_combine_fwd(ActType t, const float* xmid, const void* y, const float* bias,
                           const int* experts, const int* assign_at, const float* weights, int NT,
                           int K, int H, float* xout, cudaStream_t stream) {
  MIND4_CUDA_ARG(xmid && y && bias && experts && assign_at && weights && xout,
                 "train_moe_combine_fwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && K > 0 && H > 0, "train_moe_combine_fwd", "NT = ", NT, ", K = ", K,
                 ", H = ", H);
  if (NT == 0) return;
  const bool wide = H % kTrainMoeWidth == 0 && train_aligned16(xmid) && train_aligned16(y) &&
                    train_aligned16(bias) && train_aligned16(xout);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel, int width) {
      const dim3 block = train_row_block(H / width);
      kernel<<<train_row_grid(NT, block), block, 0, stream>>>(
          xmid, static_cast<const T*>(y), bias, experts, assign_at, weights, NT, K, H, xout);
    };
    if (wide)
      launch(train_moe_combine_fwd_kernel<T, kTrainMoeWidth>, kTrainMoeWidth);
    else
      launch(train_moe_combine_fwd_kernel<T, 1>, 1);
  });
  check_launch(train_moe_name(t, "train_moe_combine_fwd_f32", "train_moe_combine_fwd_bf16"));
}

void train_moe_combine_bwd(ActType t, const float* dx, const void* y, const float* bias,
                           const int* experts, const int* assign_at, const float* weights, int NT,
                           int K, int H, float* dweights, void* dy, cudaStream_t stream) {
  MIND4_CUDA_ARG(dx && y && bias && experts && assign_at && weights && dweights && dy,
                 "train_moe_combine_bwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && K > 0 && H > 0, "train_moe_combine_bwd", "NT = ", NT, ", K = ", K,
                 ", H = ", H);
  if (NT == 0) return;
  const int64_t warps = int64_t(NT) * K;
  const bool wide = H % kTrainMoeWidth == 0 && train_aligned16(dx) && train_aligned16(y) &&
                    train_aligned16(bias) && train_aligned16(dy);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel) {
      kernel<<<int((warps + 7) / 8), 256, 0, stream>>>(dx, static_cast<const T*>(y), bias, experts,
                                                       assign_at, weights, NT, K, H, dweights,
                                                       static_cast<T*>(dy));
    };
    if (wide)
      launch(train_moe_combine_bwd_kernel<T, kTrainMoeWidth>);
    else
      launch(train_moe_combine_bwd_kernel<T, 1>);
  });
  check_launch(train_moe_name(t, "train_moe_combine_bwd_f32", "train_moe_combine_bwd_bf16"));
}

void train_pad_groups(const int* experts, const int* offsets, const int* poffsets, int A, int K,
                      int* assign_at, int* group_row, int* group_expert, cudaStream_t stream) {
  MIND4_CUDA_ARG(experts && offsets && poffsets && assign_at && group_row && group_expert,
                 "train_pad_groups", "null pointer");
  MIND4_CUDA_ARG(A >= 0 && K > 0 && A % K == 0, "train_pad_groups", "A = ", A, ", K = ", K);
  if (A == 0) return;
  train_pad_groups_kernel<<<(A + 255) / 256, 256, 0, stream>>>(experts, offsets, poffsets, A, K,
                                                               assign_at, group_row, group_expert);
  check_launch("train_pad_groups");
}

void train_router_bwd(ActType t, const int* experts, const float* weights, const float* dweights,
                      const float* probs, const int* offsets, float aux_scale, const void* dxe,
                      const int* assign_at, int NT, int E, int K, int H, const void* gate_w,
                      void* dlogits, float* dt, cudaStream_t stream) {
  MIND4_CUDA_ARG(
      experts && weights && dweights && probs && offsets && dxe && assign_at && dlogits && dt,
      "train_router_bwd", "null pointer");
  MIND4_CUDA_ARG(NT >= 0 && E > 0 && K > 0 && K <= E && H > 0 && aux_scale >= 0, "train_router_bwd",
                 "NT = ", NT, ", E = ", E, ", K = ", K, ", H = ", H);
  MIND4_CUDA_ARG(!gate_w || E <= kRouterFoldMaxExperts, "train_router_bwd", "E = ", E,
                 " with gate_w (at most ", kRouterFoldMaxExperts, " experts)");
  if (NT == 0) return;
  const bool wide = H % kTrainMoeWidth == 0 && train_aligned16(dxe) && train_aligned16(dt) &&
                    (!gate_w || train_aligned16(gate_w));
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel, int width) {
      const dim3 block = train_row_block(H / width);
      kernel<<<train_row_grid(NT, block), block, 0, stream>>>(
          experts, weights, dweights, probs, offsets, aux_scale, static_cast<const T*>(dxe),
          assign_at, NT, E, K, H, static_cast<const T*>(gate_w), static_cast<T*>(dlogits), dt);
    };
    if (wide)
      launch(train_router_bwd_kernel<T, kTrainMoeWidth>, kTrainMoeWidth);
    else
      launch(train_router_bwd_kernel<T, 1>, 1);
  });
  check_launch(train_moe_name(t, "train_router_bwd_f32", "train_router_bwd_bf16"));
}

}  // namespace mind4::cuda
