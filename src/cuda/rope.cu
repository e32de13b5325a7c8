// QKV epilogue: the QKV GEMM's output gets its bias, q and k are rotated by YaRN RoPE (half-split
// pairs (i, i + D/2), tables with the attention concentration folded in, computed in double on
// the host), and k, v go into this layer's KV cache. One block per row; the rotation reads both
// halves before writing, so it works in place.
#include "cuda/device_util.cuh"

namespace mind4::cuda {
namespace {

template <typename T>
__global__ void qkv_bias_rope_kernel(T* __restrict__ qkv, const float* __restrict__ bias,
                                     const float* __restrict__ cos_table,
                                     const float* __restrict__ sin_table,
                                     const int* __restrict__ pos, const int* __restrict__ slot,
                                     int NH, int NKV, int D, T* __restrict__ k_cache,
                                     T* __restrict__ v_cache, int positions) {
  // blockIdx.y splits the row's work so that a one-row step (decode) still spreads over blocks.
  const int r = blockIdx.x;
  const int half = D / 2, QKV = (NH + 2 * NKV) * D;
  T* row = qkv + int64_t(r) * QKV;
  const int p = pos[r];
  const float* cr = cos_table + int64_t(p) * half;
  const float* sr = sin_table + int64_t(p) * half;
  const int64_t width = int64_t(NKV) * D;
  T* kc = k_cache + (int64_t(slot[r]) * positions + p) * width;
  T* vc = v_cache + (int64_t(slot[r]) * positions + p) * width;
  const int pairs = (NH + NKV) * half;
  const int i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i < pairs) {  // a rotation pair of a q or k head
    const int h = i / half, j = i % half;
    const int a = h * D + j, b = a + half;
    const float x1 = to_f32(row[a]) + bias[a], x2 = to_f32(row[b]) + bias[b];
    const float y1 = x1 * cr[j] - x2 * sr[j], y2 = x2 * cr[j] + x1 * sr[j];
    if (h < NH) {
      row[a] = from_f32<T>(y1);
      row[b] = from_f32<T>(y2);
    } else {
      const int o = (h - NH) * D + j;
      kc[o] = from_f32<T>(y1);
      kc[o + half] = from_f32<T>(y2);
    }
  } else if (i < pairs + NKV * D) {  // a value element
    const int a = (NH + NKV) * D + (i - pairs);
    vc[i - pairs] = from_f32<T>(to_f32(row[a]) + bias[a]);
  }
}

}  // namespace

void qkv_bias_rope(ActType t, void* qkv, const float* bias, const float* cos_table,
                   const float* sin_table, const int* pos, const int* slot, int B, int NH, int NKV,
                   int D, KvLayer kv, cudaStream_t stream) {
  MIND4_CUDA_ARG(qkv && bias && cos_table && sin_table && pos && slot && kv.k && kv.v,
                 "qkv_bias_rope", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && NH > 0 && NKV > 0 && D > 0 && D % 2 == 0 && kv.positions > 0,
                 "qkv_bias_rope", "B = ", B, ", NH = ", NH, ", NKV = ", NKV, ", D = ", D,
                 " (even), positions = ", kv.positions);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    const int items = (NH + NKV) * (D / 2) + NKV * D;
    qkv_bias_rope_kernel<T><<<dim3(B, (items + 255) / 256), 256, 0, stream>>>(
        static_cast<T*>(qkv), bias, cos_table, sin_table, pos, slot, NH, NKV, D,
        static_cast<T*>(kv.k), static_cast<T*>(kv.v), kv.positions);
  });
  check_launch(t == ActType::kF32 ? "qkv_bias_rope_f32" : "qkv_bias_rope_bf16");
}

}  // namespace mind4::cuda
