// Training attention around cuBLAS's products (the engine runs Q K^T, P V and the backward's
// products as strided batches over (sequence, head), one query tile at a time over only the keys
// the tile can see): QKV bias + RoPE into head-major tensors (k and v repeated for each query head
// of their group) and its transpose, the masked softmax of a tile with the sink in the
// denominator (causal, sliding window) and its backward, and the sink gradient.
#include "cuda/train_kernels.h"
#include "cuda/train_util.cuh"

namespace mind4::cuda {
namespace {

constexpr int kTrainSoftmaxWarps = 8;

template <typename T>
__global__ void train_qkv_rope_fwd_kernel(const float* __restrict__ qkv,
                                          const float* __restrict__ bias,
                                          const float* __restrict__ cos_t,
                                          const float* __restrict__ sin_t, int S, int NH, int NKV,
                                          int D, T* __restrict__ q, T* __restrict__ k,
                                          T* __restrict__ v) {
  const int64_t r = blockIdx.x;  // row b*S + s
  const int b = int(r / S), s = int(r % S), h2 = D / 2, heads = NH + 2 * NKV;
  const float* src = qkv + r * int64_t(heads) * D;
  for (int p = threadIdx.x; p < heads * h2; p += blockDim.x) {
    const int hh = p / h2, i = p % h2;
    const float x1 = src[hh * D + i] + bias[hh * D + i];
    const float x2 = src[hh * D + i + h2] + bias[hh * D + i + h2];
    float y1 = x1, y2 = x2;
    if (hh < NH + NKV) {
      const float c = cos_t[s * h2 + i], sn = sin_t[s * h2 + i];
      y1 = x1 * c - x2 * sn;
      y2 = x2 * c + x1 * sn;
    }
    if (hh < NH) {
      T* dst = q + ((int64_t(b) * NH + hh) * S + s) * D;
      dst[i] = from_f32<T>(y1);
      dst[i + h2] = from_f32<T>(y2);
    } else {
      // k or v of KV head kvh, written for each of the G query heads that read it.
      const bool is_k = hh < NH + NKV;
      const int kvh = is_k ? hh - NH : hh - NH - NKV, G = NH / NKV;
      T* base = is_k ? k : v;
      for (int g = 0; g < G; ++g) {
        T* dst = base + ((int64_t(b) * NH + kvh * G + g) * S + s) * D;
        dst[i] = from_f32<T>(y1);
        dst[i + h2] = from_f32<T>(y2);
      }
    }
  }
}

template <typename T>
__global__ void train_rope_bwd_kernel(const float* __restrict__ dq, const float* __restrict__ dk,
                                      const float* __restrict__ dv, const float* __restrict__ cos_t,
                                      const float* __restrict__ sin_t, int S, int NH, int NKV,
                                      int D, T* __restrict__ dqkv) {
  const int64_t r = blockIdx.x;
  const int b = int(r / S), s = int(r % S), h2 = D / 2, heads = NH + 2 * NKV;
  T* dst = dqkv + r * int64_t(heads) * D;
  for (int p = threadIdx.x; p < heads * h2; p += blockDim.x) {
    const int hh = p / h2, i = p % h2;
    float d1 = 0.0f, d2 = 0.0f;
    if (hh < NH) {
      const float* src = dq + ((int64_t(b) * NH + hh) * S + s) * D;
      d1 = src[i], d2 = src[i + h2];
    } else {
      // The KV head's gradient is the sum over the query heads of its group.
      const bool is_k = hh < NH + NKV;
      const int kvh = is_k ? hh - NH : hh - NH - NKV, G = NH / NKV;
      const float* base = is_k ? dk : dv;
      for (int g = 0; g < G; ++g) {
        const float* src = base + ((int64_t(b) * NH + kvh * G + g) * S + s) * D;
        d1 += src[i], d2 += src[i + h2];
      }
    }
    train_rope_bwd_pair(d1, d2, hh, NH + NKV, cos_t, sin_t, s, i, D, dst);
  }
}

__device__ __forceinline__ int train_first_key(int s, int window) {
  return window > 0 ? max(0, s - window + 1) : 0;
}

// A warp per query row of the tile (rows are at most a few thousand keys; a block per row spent
// its time in block-wide reductions: v4 measured the attention core barely moved when tiles
// halved its work). Row (bh, qi) is query s = q0 + qi of sequence-head bh, its columns keys
// k0 .. k0 + nk - 1.
template <typename T>
__global__ void __launch_bounds__(kTrainSoftmaxWarps * 32)
    train_attn_softmax_fwd_kernel(const T* __restrict__ scores, const float* __restrict__ sinks,
                                  int64_t rows, int NH, int S, int q0, int nq, int k0, int nk,
                                  int window, float scale, T* __restrict__ P,
                                  float* __restrict__ lse) {
  const int64_t row = int64_t(blockIdx.x) * kTrainSoftmaxWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t bh = row / nq;
  const int s = q0 + int(row % nq), h = int(bh % NH);
  const int j0 = max(train_first_key(s, window) - k0, 0), j1 = min(s - k0, nk - 1);
  const T* sr = scores + row * nk;
  const float sink = sinks[h];
  float m = sink;
  for (int j = j0 + lane; j <= j1; j += 32) m = fmaxf(m, to_f32(sr[j]) * scale);
  m = warp_max(m);
  float sum = 0.0f;
  for (int j = j0 + lane; j <= j1; j += 32) sum += __expf(to_f32(sr[j]) * scale - m);
  sum = warp_sum(sum) + __expf(sink - m);
  const float inv = 1.0f / sum;
  T* pr = P + row * nk;
  for (int j = lane; j < nk; j += 32)
    pr[j] = from_f32<T>(j >= j0 && j <= j1 ? __expf(to_f32(sr[j]) * scale - m) * inv : 0.0f);
  if (lane == 0) lse[bh * S + s] = m + logf(sum);
}

template <typename T>
__global__ void train_heads_to_rows_kernel(const T* __restrict__ o, int NH, int S, int D,
                                           T* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const int b = int(r / S), s = int(r % S);
  for (int p = threadIdx.x; p < NH * D; p += blockDim.x) {
    const int h = p / D, d = p % D;
    out[r * NH * D + p] = o[((int64_t(b) * NH + h) * S + s) * D + d];
  }
}

// A warp per (row, head).
template <typename T>
__global__ void train_attn_bwd_prep_kernel(const float* __restrict__ dout,
                                           const T* __restrict__ out,
                                           const float* __restrict__ sinks,
                                           const float* __restrict__ lse, int NT, int NH, int S,
                                           int D, T* __restrict__ dO, float* __restrict__ delta,
                                           float* __restrict__ sink_terms) {
  const int64_t w = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (w >= int64_t(NT) * NH) return;
  const int64_t r = w / NH;
  const int h = int(w % NH), b = int(r / S), s = int(r % S);
  const int64_t hm = (int64_t(b) * NH + h) * S + s;
  const float* dr = dout + r * NH * D + h * D;
  const T* orow = out + r * NH * D + h * D;
  float dot = 0.0f;
  for (int d = lane; d < D; d += 32) {
    const float g = dr[d];
    dot += g * to_f32(orow[d]);
    dO[hm * D + d] = from_f32<T>(g);
  }
  dot = warp_sum(dot);
  if (lane == 0) {
    delta[hm] = dot;
    sink_terms[hm] = __expf(sinks[h] - lse[hm]) * dot;
  }
}

template <typename T>
__global__ void __launch_bounds__(kTrainSoftmaxWarps * 32)
    train_attn_softmax_bwd_kernel(const T* __restrict__ scores, const T* __restrict__ dP,
                                  const float* __restrict__ lse, const float* __restrict__ delta,
                                  int64_t rows, int S, int q0, int nq, int k0, int nk, int window,
                                  float scale, T* __restrict__ P, T* __restrict__ dS) {
  const int64_t row = int64_t(blockIdx.x) * kTrainSoftmaxWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t bh = row / nq;
  const int s = q0 + int(row % nq);
  const int j0 = max(train_first_key(s, window) - k0, 0), j1 = min(s - k0, nk - 1);
  const float L = lse[bh * S + s], dl = delta[bh * S + s];
  const T* sr = scores + row * nk;
  const T* dr = dP + row * nk;
  for (int j = lane; j < nk; j += 32) {
    float p = 0.0f, ds = 0.0f;
    if (j >= j0 && j <= j1) {
      p = __expf(to_f32(sr[j]) * scale - L);
      ds = p * (to_f32(dr[j]) - dl) * scale;
    }
    P[row * nk + j] = from_f32<T>(p);
    dS[row * nk + j] = from_f32<T>(ds);
  }
}

// dS from the forward's kept P (0 outside each row's keys, so dS is too).
template <typename T>
__global__ void __launch_bounds__(kTrainSoftmaxWarps * 32)
    train_attn_dsoftmax_kernel(const T* __restrict__ P, const T* __restrict__ dP,
                               const float* __restrict__ delta, int64_t rows, int S, int q0, int nq,
                               int nk, float scale, T* __restrict__ dS) {
  const int64_t row = int64_t(blockIdx.x) * kTrainSoftmaxWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t bh = row / nq;
  const float dl = delta[bh * S + q0 + int(row % nq)];
  for (int j = lane; j < nk; j += 32) {
    const float p = to_f32(P[row * nk + j]);
    dS[row * nk + j] = from_f32<T>(p * (to_f32(dP[row * nk + j]) - dl) * scale);
  }
}

__global__ void train_sink_grad_kernel(const float* __restrict__ terms, int B, int NH, int S,
                                       float* __restrict__ dsinks) {
  const int h = blockIdx.x;
  float sum = 0.0f;
  for (int b = 0; b < B; ++b)
    for (int s = threadIdx.x; s < S; s += blockDim.x) sum += terms[(int64_t(b) * NH + h) * S + s];
  sum = train_block_sum(sum);
  if (threadIdx.x == 0) dsinks[h] -= sum;
}

const char* train_attn_name(ActType t, const char* f32, const char* bf16) {
  return t == ActType::kF32 ? f32 : bf16;
}

}  // namespace

void train_qkv_rope_fwd(ActType t, const float* qkv, const float* bias, const float* cos_table,
                        const float* sin_table, int B, int S, int NH, int NKV, int D, void* q,
                        void* k, void* v, cudaStream_t stream) {
  MIND4_CUDA_ARG(qkv && bias && cos_table && sin_table && q && k && v, "train_qkv_rope_fwd",
                 "null pointer");
  MIND4_CUDA_ARG(B >= 0 && S > 0 && NH > 0 && NKV > 0 && D > 0 && D % 2 == 0, "train_qkv_rope_fwd",
                 "B = ", B, ", S = ", S, ", NH = ", NH, ", NKV = ", NKV, ", D = ", D);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_qkv_rope_fwd_kernel<T><<<B * S, 256, 0, stream>>>(qkv, bias, cos_table, sin_table, S, NH,
                                                            NKV, D, static_cast<T*>(q),
                                                            static_cast<T*>(k), static_cast<T*>(v));
  });
  check_launch(train_attn_name(t, "train_qkv_rope_fwd_f32", "train_qkv_rope_fwd_bf16"));
}

void train_rope_bwd(ActType t, const float* dq, const float* dk, const float* dv,
                    const float* cos_table, const float* sin_table, int B, int S, int NH, int NKV,
                    int D, void* dqkv, cudaStream_t stream) {
  MIND4_CUDA_ARG(dq && dk && dv && cos_table && sin_table && dqkv, "train_rope_bwd",
                 "null pointer");
  MIND4_CUDA_ARG(B >= 0 && S > 0 && NH > 0 && NKV > 0 && D > 0 && D % 2 == 0, "train_rope_bwd",
                 "B = ", B, ", S = ", S, ", NH = ", NH, ", NKV = ", NKV, ", D = ", D);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_rope_bwd_kernel<T><<<B * S, 256, 0, stream>>>(dq, dk, dv, cos_table, sin_table, S, NH,
                                                        NKV, D, static_cast<T*>(dqkv));
  });
  check_launch(train_attn_name(t, "train_rope_bwd_f32", "train_rope_bwd_bf16"));
}

void train_attn_softmax_fwd(ActType t, const void* scores, const float* sinks, int B, int NH, int S,
                            AttnTile tile, int window, float scale, void* P, float* lse,
                            cudaStream_t stream) {
  MIND4_CUDA_ARG(scores && sinks && P && lse, "train_attn_softmax_fwd", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && NH > 0 && S > 0 && window >= 0 && tile.valid(S),
                 "train_attn_softmax_fwd", "B = ", B, ", NH = ", NH, ", S = ", S,
                 ", tile q0 = ", tile.q0, " nq = ", tile.nq, " k0 = ", tile.k0, " nk = ", tile.nk);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = int64_t(B) * NH * tile.nq;
    train_attn_softmax_fwd_kernel<T>
        <<<int((rows + kTrainSoftmaxWarps - 1) / kTrainSoftmaxWarps), kTrainSoftmaxWarps * 32, 0,
           stream>>>(static_cast<const T*>(scores), sinks, rows, NH, S, tile.q0, tile.nq, tile.k0,
                     tile.nk, window, scale, static_cast<T*>(P), lse);
  });
  check_launch(train_attn_name(t, "train_attn_softmax_fwd_f32", "train_attn_softmax_fwd_bf16"));
}

void train_heads_to_rows(ActType t, const void* o, int B, int NH, int S, int D, void* out,
                         cudaStream_t stream) {
  MIND4_CUDA_ARG(o && out, "train_heads_to_rows", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && NH > 0 && S > 0 && D > 0, "train_heads_to_rows", "B = ", B);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_heads_to_rows_kernel<T>
        <<<B * S, 256, 0, stream>>>(static_cast<const T*>(o), NH, S, D, static_cast<T*>(out));
  });
  check_launch(train_attn_name(t, "train_heads_to_rows_f32", "train_heads_to_rows_bf16"));
}

void train_attn_bwd_prep(ActType t, const float* dout, const void* out, const float* sinks,
                         const float* lse, int B, int NH, int S, int D, void* dO, float* delta,
                         float* sink_terms, cudaStream_t stream) {
  MIND4_CUDA_ARG(dout && out && sinks && lse && dO && delta && sink_terms, "train_attn_bwd_prep",
                 "null pointer");
  MIND4_CUDA_ARG(B >= 0 && NH > 0 && S > 0 && D > 0, "train_attn_bwd_prep", "B = ", B);
  if (B == 0) return;
  const int64_t warps = int64_t(B) * S * NH;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_attn_bwd_prep_kernel<T><<<int((warps + 7) / 8), 256, 0, stream>>>(
        dout, static_cast<const T*>(out), sinks, lse, B * S, NH, S, D, static_cast<T*>(dO), delta,
        sink_terms);
  });
  check_launch(train_attn_name(t, "train_attn_bwd_prep_f32", "train_attn_bwd_prep_bf16"));
}

void train_attn_softmax_bwd(ActType t, const void* scores, const void* dP, const float* lse,
                            const float* delta, int B, int NH, int S, AttnTile tile, int window,
                            float scale, void* P, void* dS, cudaStream_t stream) {
  MIND4_CUDA_ARG(scores && dP && lse && delta && P && dS, "train_attn_softmax_bwd", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && NH > 0 && S > 0 && window >= 0 && tile.valid(S),
                 "train_attn_softmax_bwd", "B = ", B, ", S = ", S, ", tile q0 = ", tile.q0,
                 " nq = ", tile.nq, " k0 = ", tile.k0, " nk = ", tile.nk);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = int64_t(B) * NH * tile.nq;
    train_attn_softmax_bwd_kernel<T><<<int((rows + kTrainSoftmaxWarps - 1) / kTrainSoftmaxWarps),
                                       kTrainSoftmaxWarps * 32, 0, stream>>>(
        static_cast<const T*>(scores), static_cast<const T*>(dP), lse, delta, rows, S, tile.q0,
        tile.nq, tile.k0, tile.nk, window, scale, static_cast<T*>(P), static_cast<T*>(dS));
  });
  check_launch(train_attn_name(t, "train_attn_softmax_bwd_f32", "train_attn_softmax_bwd_bf16"));
}

void train_attn_dsoftmax(ActType t, const void* P, const void* dP, const float* delta, int B,
                         int NH, int S, AttnTile tile, float scale, void* dS, cudaStream_t stream) {
  MIND4_CUDA_ARG(P && dP && delta && dS, "train_attn_dsoftmax", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && NH > 0 && S > 0 && tile.valid(S), "train_attn_dsoftmax", "B = ", B,
                 ", S = ", S, ", tile q0 = ", tile.q0, " nq = ", tile.nq, " k0 = ", tile.k0,
                 " nk = ", tile.nk);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    const int64_t rows = int64_t(B) * NH * tile.nq;
    train_attn_dsoftmax_kernel<T>
        <<<int((rows + kTrainSoftmaxWarps - 1) / kTrainSoftmaxWarps), kTrainSoftmaxWarps * 32, 0,
           stream>>>(static_cast<const T*>(P), static_cast<const T*>(dP), delta, rows, S, tile.q0,
                     tile.nq, tile.nk, scale, static_cast<T*>(dS));
  });
  check_launch(train_attn_name(t, "train_attn_dsoftmax_f32", "train_attn_dsoftmax_bf16"));
}

void train_sink_grad(const float* sink_terms, int B, int NH, int S, float* dsinks,
                     cudaStream_t stream) {
  MIND4_CUDA_ARG(sink_terms && dsinks, "train_sink_grad", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && NH > 0 && S > 0, "train_sink_grad", "B = ", B);
  if (B == 0) return;
  train_sink_grad_kernel<<<NH, 256, 0, stream>>>(sink_terms, B, NH, S, dsinks);
  check_launch("train_sink_grad");
}

}  // namespace mind4::cuda
