// Attention with sinks, sliding window and grouped-query heads, for prefill and decode alike.
// One warp per (row, query head): lanes score 32 keys at a time (each lane a whole key), an
// online softmax folds each group into the running max and sum, and lanes accumulate the value
// dimensions they own. With splits > 1 each warp takes one chunk of the row's keys (flash-
// decoding: a decode step has too few rows to fill the GPU otherwise) and a second kernel
// combines the chunks; the sink logit joins the denominator only at the end.
// This is the simple, exact version: keys and values are read from L2 by every head of a group,
// and no tensor cores are used (prefill attention on wgmma tiles is the next step).
#include <algorithm>
#include <cmath>

#include "cuda/device_util.cuh"
#include "cuda/pdl.cuh"

namespace mind4::cuda {
namespace {

constexpr int kAttnWarps = 4;

template <typename T>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const T* __restrict__ qkv, int NH, int NKV, int D, const T* __restrict__ kc,
                     const T* __restrict__ vc, int positions, const int* __restrict__ pos,
                     const int* __restrict__ slot, const float* __restrict__ sinks, int window,
                     float scale, int splits, float* __restrict__ partial, T* __restrict__ out) {
  extern __shared__ float attn_smem[];
  pdl_wait();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int head_blocks = (NH + kAttnWarps - 1) / kAttnWarps;
  const int r = blockIdx.x / head_blocks, h = (blockIdx.x % head_blocks) * kAttnWarps + warp;
  if (h >= NH) return;
  float* q = attn_smem + warp * (2 * D + 32);
  float* acc = q + D;
  float* probs = acc + D;  // this group's 32 probabilities, read by every lane
  const int QKV = (NH + 2 * NKV) * D, kvh = h / (NH / NKV);
  const T* qrow = qkv + int64_t(r) * QKV + int64_t(h) * D;
  for (int d = lane; d < D; d += 32) {
    q[d] = to_f32(qrow[d]) * scale;
    acc[d] = 0.0f;
  }
  __syncwarp();
  const int p = pos[r];
  const int first = window > 0 ? max(0, p - window + 1) : 0;
  const int n = p - first + 1, chunk = (n + splits - 1) / splits;
  const int begin = first + blockIdx.y * chunk, end = min(p + 1, begin + chunk);
  const int64_t width = int64_t(NKV) * D;
  const T* kbase = kc + int64_t(slot[r]) * positions * width + int64_t(kvh) * D;
  const T* vbase = vc + int64_t(slot[r]) * positions * width + int64_t(kvh) * D;
  float m = -INFINITY, l = 0.0f;
  for (int k0 = begin; k0 < end; k0 += 32) {
    const int key = k0 + lane;
    float s = -INFINITY;
    if (key < end) {
      const T* kr = kbase + key * width;
      float dot = 0.0f;
      for (int d = 0; d < D; d += 2) {
        const float2 kv = load2(kr + d);
        dot += q[d] * kv.x + q[d + 1] * kv.y;
      }
      s = dot;
    }
    const float m_new = fmaxf(m, warp_max(s));
    const float corr = __expf(m - m_new);  // m = -inf on the first group: 0
    const float pr = key < end ? __expf(s - m_new) : 0.0f;
    l = l * corr + warp_sum(pr);
    m = m_new;
    probs[lane] = pr;
    __syncwarp();
    const int cnt = min(32, end - k0);
    for (int d = lane; d < D; d += 32) {
      float a = acc[d] * corr;
      for (int j = 0; j < cnt; ++j) a += probs[j] * to_f32(vbase[int64_t(k0 + j) * width + d]);
      acc[d] = a;
    }
    __syncwarp();
  }
  if (splits == 1) {
    const float sink = sinks[h], M = fmaxf(m, sink);
    const float inv = 1.0f / (l * __expf(m - M) + __expf(sink - M)), f = __expf(m - M) * inv;
    T* o = out + int64_t(r) * NH * D + int64_t(h) * D;
    for (int d = lane; d < D; d += 32) o[d] = from_f32<T>(acc[d] * f);
  } else {
    float* part = partial + ((int64_t(r) * NH + h) * splits + blockIdx.y) * (D + 2);
    if (lane == 0) part[0] = m, part[1] = l;
    for (int d = lane; d < D; d += 32) part[2 + d] = acc[d];
  }
}

template <typename T>
__global__ void attention_combine_kernel(const float* __restrict__ partial, int64_t total, int NH,
                                         int D, int splits, const float* __restrict__ sinks,
                                         T* __restrict__ out) {
  pdl_wait();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t i = int64_t(blockIdx.x) * kAttnWarps + warp;  // r * NH + h
  if (i >= total) return;
  const int h = int(i % NH);
  const float* part = partial + i * splits * (D + 2);
  const float sink = sinks[h];
  float M = sink;
  for (int c = 0; c < splits; ++c) M = fmaxf(M, part[c * (D + 2)]);
  float L = __expf(sink - M);
  for (int c = 0; c < splits; ++c) L += part[c * (D + 2) + 1] * __expf(part[c * (D + 2)] - M);
  const float inv = 1.0f / L;
  for (int d = lane; d < D; d += 32) {
    float a = 0.0f;
    for (int c = 0; c < splits; ++c) a += part[c * (D + 2) + 2 + d] * __expf(part[c * (D + 2)] - M);
    out[i * D + d] = from_f32<T>(a * inv);
  }
}

constexpr int kSoftmaxThreads = 256;

// In place over one row of scores (f32, Lk entries, already scaled): keys outside [first, p] get
// probability 0, the sink joins the denominator, and the probabilities are written as T at the
// start of the same row. A T value at index j overlaps the f32 at index j*sizeof(T)/4 <= j, so
// each chunk is read completely before any thread of the block writes it.
template <typename T>
__global__ void __launch_bounds__(kSoftmaxThreads)
    attention_softmax_kernel(float* __restrict__ scores, int B, int Lk, int pos0, int window,
                             const float* __restrict__ sinks) {
  const int r = blockIdx.x, h = blockIdx.y;
  float* row = scores + (int64_t(h) * B + r) * Lk;
  T* prow = reinterpret_cast<T*>(row);
  const int p = pos0 + r, first = window > 0 ? max(0, p - window + 1) : 0;
  __shared__ float red[kSoftmaxThreads / 32];
  __shared__ float bcast;
  auto block_reduce = [&](float v, bool is_max) {
    v = is_max ? warp_max(v) : warp_sum(v);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
      float w = threadIdx.x < kSoftmaxThreads / 32 ? red[threadIdx.x] : (is_max ? -INFINITY : 0.0f);
      w = is_max ? warp_max(w) : warp_sum(w);
      if (threadIdx.x == 0) bcast = w;
    }
    __syncthreads();
    const float out = bcast;
    __syncthreads();
    return out;
  };
  const float sink = sinks[h];
  float m = sink;
  for (int j = first + threadIdx.x; j <= p; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_reduce(m, true);
  float sum = 0.0f;
  for (int j = first + threadIdx.x; j <= p; j += blockDim.x) sum += __expf(row[j] - m);
  const float inv = 1.0f / (block_reduce(sum, false) + __expf(sink - m));
  for (int j0 = 0; j0 < Lk; j0 += blockDim.x) {
    const int j = j0 + threadIdx.x;
    float v = 0.0f;
    if (j < Lk && j >= first && j <= p) v = __expf(row[j] - m) * inv;
    __syncthreads();
    if (j < Lk) prow[j] = from_f32<T>(v);
  }
}

}  // namespace

void attention_prefill(cublasHandle_t blas, ActType t, const void* qkv, int NH, int NKV, int D,
                       KvLayer kv, int slot, int pos0, const float* sinks, int B, int window,
                       float scale, float* scores, void* out, cudaStream_t stream) {
  MIND4_CUDA_ARG(blas && qkv && kv.k && kv.v && sinks && scores && out, "attention_prefill",
                 "null pointer");
  MIND4_CUDA_ARG(NH > 0 && NKV > 0 && NH % NKV == 0 && D > 0 && D % 2 == 0, "attention_prefill",
                 "NH = ", NH, ", NKV = ", NKV, ", D = ", D);
  MIND4_CUDA_ARG(B > 0 && pos0 >= 0 && slot >= 0 && pos0 + B <= kv.positions && window >= 0,
                 "attention_prefill", "B = ", B, ", pos0 = ", pos0, ", positions = ", kv.positions,
                 ", window = ", window);
  const int Lk = pos0 + B, G = NH / NKV, QKV = (NH + 2 * NKV) * D, width = NKV * D;
  const int es = act_size(t);
  const cudaDataType_t dt = t == ActType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  const char* k0 = static_cast<const char*>(kv.k) + int64_t(slot) * kv.positions * width * es;
  const char* v0 = static_cast<const char*>(kv.v) + int64_t(slot) * kv.positions * width * es;
  const float one = 1.0f, zero = 0.0f;
  for (int g = 0; g < NKV; ++g) {
    // S_h^T [Lk, B] = K_g [Lk, D] (row-major, stride width) x q_h^T, for the G heads of group g.
    check(cublasGemmStridedBatchedEx(
              blas, CUBLAS_OP_T, CUBLAS_OP_N, Lk, B, D, &scale, k0 + int64_t(g) * D * es, dt, width,
              0, static_cast<const char*>(qkv) + int64_t(g) * G * D * es, dt, QKV, D, &zero,
              scores + int64_t(g) * G * B * Lk, CUDA_R_32F, Lk, int64_t(B) * Lk, G,
              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmStridedBatchedEx (attention_prefill scores)");
  }
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    attention_softmax_kernel<T>
        <<<dim3(B, NH), kSoftmaxThreads, 0, stream>>>(scores, B, Lk, pos0, window, sinks);
  });
  check_launch(t == ActType::kF32 ? "attention_softmax_f32" : "attention_softmax_f32_bf16out");
  const int64_t ldp = int64_t(Lk) * 4 / es;  // P rows sit where the f32 score rows were
  for (int g = 0; g < NKV; ++g) {
    // out_h^T [D, B] = V_g^T [D, Lk] x P_h^T [Lk, B].
    check(cublasGemmStridedBatchedEx(
              blas, CUBLAS_OP_N, CUBLAS_OP_N, D, B, Lk, &one, v0 + int64_t(g) * D * es, dt, width,
              0, reinterpret_cast<const char*>(scores + int64_t(g) * G * B * Lk), dt, int(ldp),
              ldp * B, &zero, static_cast<char*>(out) + int64_t(g) * G * D * es, dt, NH * D, D, G,
              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmStridedBatchedEx (attention_prefill values)");
  }
}

int attention_splits(int B, int NH, int max_keys, int max_splits) {
  // Aim for about 16 warps per multiprocessor of an H100 (132 of them); chunks of 64+ keys.
  const int warps = B * NH, want = std::max(1, 132 * 16 / std::max(1, warps));
  return std::clamp(std::min(want, (max_keys + 63) / 64), 1, std::max(1, max_splits));
}

void attention(ActType t, const void* qkv, int NH, int NKV, int D, KvLayer kv, const int* pos,
               const int* slot, const float* sinks, int B, int window, float scale, int splits,
               float* partial, void* out, cudaStream_t stream) {
  MIND4_CUDA_ARG(qkv && kv.k && kv.v && pos && slot && sinks && out, "attention", "null pointer");
  MIND4_CUDA_ARG(NH > 0 && NKV > 0 && NH % NKV == 0 && D > 0 && D % 2 == 0 && D <= 1024,
                 "attention", "NH = ", NH, ", NKV = ", NKV, ", D = ", D,
                 " (NH a multiple of NKV, D even and <= 1024)");
  MIND4_CUDA_ARG(B >= 0 && window >= 0 && splits >= 1 && (splits == 1 || partial), "attention",
                 "B = ", B, ", window = ", window, ", splits = ", splits,
                 " (splits > 1 needs the partial buffer)");
  if (B == 0) return;
  const size_t smem = size_t(kAttnWarps) * (2 * D + 32) * sizeof(float);
  const dim3 grid(B * ((NH + kAttnWarps - 1) / kAttnWarps), splits);
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    if (smem > 48 * 1024)
      check(cudaFuncSetAttribute(attention_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 int(smem)),
            "cudaFuncSetAttribute(attention)");
    launch_pdl(t == ActType::kF32 ? "attention_f32" : "attention_bf16", attention_kernel<T>, grid,
               dim3(kAttnWarps * 32), smem, stream, static_cast<const T*>(qkv), NH, NKV, D,
               static_cast<const T*>(kv.k), static_cast<const T*>(kv.v), kv.positions, pos, slot,
               sinks, window, scale, splits, partial, static_cast<T*>(out));
  });
  if (splits == 1) return;
  const int64_t warps = int64_t(B) * NH;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(t == ActType::kF32 ? "attention_combine_f32" : "attention_combine_bf16",
               attention_combine_kernel<T>, dim3(unsigned((warps + kAttnWarps - 1) / kAttnWarps)),
               dim3(kAttnWarps * 32), 0, stream, static_cast<const float*>(partial), warps, NH, D,
               splits, sinks, static_cast<T*>(out));
  });
}

}  // namespace mind4::cuda
