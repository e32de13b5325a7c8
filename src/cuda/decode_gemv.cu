// Dense products of a decode step (1-4 rows, bf16 weights and activations), with their
// epilogues fused: the QKV projection adds its bias, rotates q and k by RoPE and stores k and v in
// the cache; the out projection adds its bias into the f32 residual stream; at one row the same
// kernel stores the unembedding's logits. cuBLAS measured 1.8-2.7 TB/s on these shapes at one row
// and needs a separate epilogue kernel; here each kernel also issues its first weight loads before
// waiting for the previous kernel (PDL), so the weight stream starts while the attention or the
// norm before it is still finishing.
//
// A warp owns two output rows and a lane 16-byte chunks (8 weights) c = lane + 32 i of both (at one
// row the linear kernel gives a row pair two warps, each every other group of 32 chunks). Each
// lane loads kDgChunk chunks of both rows before computing on them. The QKV kernel's two rows are
// a rotation pair (j, j + D/2) of one head, so the rotation happens in the warp that made them.
#include <cmath>

#include "cuda/device_util.cuh"
#include "cuda/mma.cuh"
#include "cuda/pdl.cuh"

namespace mind4::cuda {
namespace {

constexpr int kDgWarps = 4;
constexpr int kDgMaxRows = 4;  // step rows (decode batch)
// 16-byte chunks per row and lane in flight. One buffer of 6 (not two of 4): the kernel then
// fits in 80 registers, six blocks per multiprocessor, and the QKV grid (640 blocks) runs in one
// wave; at 107 registers (two buffers) it took 1.2 waves and ran at 1.8 TB/s on an H100.
constexpr int kDgChunk = 6;
constexpr int kDgMinBlocks = 6;
// At one row the linear products split each row pair's K over this many warps of a block (gpt-oss:
// out K = 4096, 8 chunks a lane instead of 16; the unembedding's 2880): with a warp a pair the out
// projection ran 360 blocks at 17% occupancy, three round trips of loads a warp (ncu on an H100).
// Two warps measured +0.8% at batch 1, four +0.3% (docs/perf-notes.md, S10.4). The folded QKV
// product keeps a warp a pair: split, its blocks (each norming the row first) took 1.6 waves and
// 25 instead of 16 us.
constexpr int kDgLinearParts = 2;

// The folded QKV product keeps its normed input row and the norm's scale in shared memory (K * 6
// bytes): up to 24 KB, which leaves each of its resident blocks its shared memory.
constexpr int kDgNormMaxK = 4096;

// Chunks c0 + step * i of both rows.
__device__ __forceinline__ void dg_load(const uint4* w0, const uint4* w1, int c0, int step, int K8,
                                        uint4 (&a)[kDgChunk], uint4 (&b)[kDgChunk]) {
#pragma unroll
  for (int i = 0; i < kDgChunk; ++i) {
    const int c = c0 + step * i;
    a[i] = c < K8 ? __ldg(w0 + c) : make_uint4(0, 0, 0, 0);
    b[i] = c < K8 ? __ldg(w1 + c) : make_uint4(0, 0, 0, 0);
  }
}

// acc += 8 bf16 weights (w) times 8 activations (x, as floats).
__device__ __forceinline__ float dg_dot8(const uint4& w, const float (&x)[8], float acc) {
  const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(__uint_as_float(ws[i] << 16), x[2 * i], acc);
    acc = fmaf(__uint_as_float(ws[i] & 0xffff0000u), x[2 * i + 1], acc);
  }
  return acc;
}

// acc[r][0/1] = rows n0, n1 of w [*, K] times rows r < B of x [B, K] (sums over the warp done),
// over part `part` of Q: the 32-chunk groups g of a row with g % Q == part (Q > 1: several warps
// share a row pair, so that each has at most kDgChunk chunks a row and lane, one round trip of
// loads; dg_sum_parts adds their sums). pdl_wait() happens after the first weight loads are
// issued; then x_source() gives x (the folded chain's QKV product norms its input there, while
// those loads are in flight).
template <int MAXB, int Q = 1, typename XSource>
__device__ __forceinline__ void dg_two_rows(const __nv_bfloat16* __restrict__ w, int n0, int n1,
                                            XSource&& x_source, int B, int K, float (&acc)[MAXB][2],
                                            int part = 0) {
  const int lane = threadIdx.x & 31, K8 = K / 8, first = lane + 32 * part, step = 32 * Q;
  const uint4* w0 = reinterpret_cast<const uint4*>(w + int64_t(n0) * K);
  const uint4* w1 = reinterpret_cast<const uint4*>(w + int64_t(n1) * K);
#pragma unroll
  for (int r = 0; r < MAXB; ++r) acc[r][0] = acc[r][1] = 0.0f;
  uint4 a[kDgChunk], b[kDgChunk];
  dg_load(w0, w1, first, step, K8, a, b);
  pdl_wait();
  const uint4* xv = reinterpret_cast<const uint4*>(x_source());
  for (int c0 = first; c0 < K8; c0 += step * kDgChunk) {
    if (c0 > first) dg_load(w0, w1, c0, step, K8, a, b);
#pragma unroll
    for (int i = 0; i < kDgChunk; ++i) {
      const int c = c0 + step * i;
      if (c >= K8) break;
#pragma unroll
      for (int r = 0; r < MAXB; ++r) {
        if (r >= B) break;
        const uint4 q = xv[int64_t(r) * K8 + c];
        const uint32_t qs[4] = {q.x, q.y, q.z, q.w};
        float xf[8];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          xf[2 * k] = __uint_as_float(qs[k] << 16);
          xf[2 * k + 1] = __uint_as_float(qs[k] & 0xffff0000u);
        }
        acc[r][0] = dg_dot8(a[i], xf, acc[r][0]);
        acc[r][1] = dg_dot8(b[i], xf, acc[r][1]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < MAXB; ++r) {
    acc[r][0] = warp_sum(acc[r][0]);
    acc[r][1] = warp_sum(acc[r][1]);
  }
}

// The Q warps w - w % Q .. that share a row pair: their sums added in part order, into every
// lane of each of them. Every warp of the block must call it (a block barrier).
template <int Q, int MAXB>
__device__ __forceinline__ void dg_sum_parts(float (&acc)[MAXB][2]) {
  if constexpr (Q > 1) {
    __shared__ float parts[kDgWarps][MAXB][2];
    const int warp = threadIdx.x >> 5, first = warp - warp % Q;
    if ((threadIdx.x & 31) == 0)
#pragma unroll
      for (int r = 0; r < MAXB; ++r) parts[warp][r][0] = acc[r][0], parts[warp][r][1] = acc[r][1];
    __syncthreads();
#pragma unroll
    for (int r = 0; r < MAXB; ++r)
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        acc[r][k] = parts[first][r][k];
#pragma unroll
        for (int q = 1; q < Q; ++q) acc[r][k] += parts[first + q][r][k];
      }
  }
}

// The QKV epilogue's inputs of warp pair (h, j) for row `lane` (lanes below B): the bias, the
// row's position and slot. Read before the products, so that only the rotation tables' round trip
// (they need the position) ends the kernel: the bias is a weight and the positions and slots are
// the step's inputs, copied in before the step's first kernel.
struct DgQkvInputs {
  float b0 = 0.0f, b1 = 0.0f;
  int pos = 0, slot = 0;
};
__device__ __forceinline__ DgQkvInputs dg_qkv_inputs(int h, int j, int B, int D,
                                                     const float* __restrict__ bias,
                                                     const int* __restrict__ pos,
                                                     const int* __restrict__ slot) {
  const int lane = threadIdx.x & 31, n0 = h * D + j;
  DgQkvInputs in;
  if (lane < B) in = {bias[n0], bias[n0 + D / 2], pos[lane], slot[lane]};
  return in;
}

// The QKV epilogue of warp pair (h, j): bias, RoPE of q and k, q into qkv, k and v into the cache.
template <int MAXB>
__device__ __forceinline__ void dg_qkv_store(
    const float (&acc)[MAXB][2], const DgQkvInputs& in, int h, int j, int B, int NH, int NKV, int D,
    const float* __restrict__ cos_table, const float* __restrict__ sin_table,
    __nv_bfloat16* __restrict__ qkv, __nv_bfloat16* __restrict__ k_cache,
    __nv_bfloat16* __restrict__ v_cache, int positions, const float* rotation = nullptr) {
  const int half = D / 2, n0 = h * D + j, n1 = n0 + half;
  const int lane = threadIdx.x & 31;
  if (lane >= B) return;
  // Lane r writes row r (the sums are in every lane after the butterfly).
  float v0 = 0.0f, v1 = 0.0f;
#pragma unroll
  for (int r = 0; r < MAXB; ++r)
    if (r == lane) v0 = acc[r][0], v1 = acc[r][1];
  v0 += in.b0;
  v1 += in.b1;
  const int r = lane, ps = in.pos;
  const int64_t width = int64_t(NKV) * D, at = (int64_t(in.slot) * positions + ps) * width;
  if (h < NH + NKV) {
    // rotation: cos and sin already fetched (shared memory; one row).
    const float c = rotation ? rotation[0] : cos_table[int64_t(ps) * half + j];
    const float s = rotation ? rotation[1] : sin_table[int64_t(ps) * half + j];
    const float y0 = v0 * c - v1 * s, y1 = v1 * c + v0 * s;
    if (h < NH) {
      __nv_bfloat16* row = qkv + int64_t(r) * (NH + 2 * NKV) * D;
      row[n0] = __float2bfloat16_rn(y0);
      row[n1] = __float2bfloat16_rn(y1);
    } else {
      const int o = (h - NH) * D + j;
      k_cache[at + o] = __float2bfloat16_rn(y0);
      k_cache[at + o + half] = __float2bfloat16_rn(y1);
    }
  } else {
    const int o = (h - NH - NKV) * D + j;
    v_cache[at + o] = __float2bfloat16_rn(v0);
    v_cache[at + o + half] = __float2bfloat16_rn(v1);
  }
}

// Warp p: pair p of the (NH + 2 NKV) heads' D/2 pairs each: rows n0 = h D + j and n1 = n0 + D/2.
// MAXB: the most rows the kernel serves (1: the decode case, sized for six blocks per
// multiprocessor; 4: a few rows).
template <int MAXB>
__global__ void __launch_bounds__(kDgWarps * 32, MAXB == 1 ? kDgMinBlocks : 1)
    decode_qkv_rope_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                           const float* __restrict__ bias, int B, int K, int NH, int NKV, int D,
                           const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                           const int* __restrict__ pos, const int* __restrict__ slot,
                           __nv_bfloat16* __restrict__ qkv, __nv_bfloat16* __restrict__ k_cache,
                           __nv_bfloat16* __restrict__ v_cache, int positions) {
  const int half = D / 2, pairs = (NH + 2 * NKV) * half;
  const int p = blockIdx.x * kDgWarps + (threadIdx.x >> 5);
  if (p >= pairs) {
    pdl_wait();
    return;
  }
  const int h = p / half, j = p % half, n0 = h * D + j, n1 = n0 + half;
  float acc[MAXB][2];
  dg_two_rows(
      w, n0, n1, [x] { return x; }, B, K, acc);
  // The inputs after the products here: read before them, the one-row kernel spilled.
  const DgQkvInputs in = dg_qkv_inputs(h, j, B, D, bias, pos, slot);
  dg_qkv_store(acc, in, h, j, B, NH, NKV, D, cos_table, sin_table, qkv, k_cache, v_cache,
               positions);
}

// Four consecutive values of the row a norm reads: the f32 residual, or at the first layer a bf16
// row of the embedding table (embedding_gather's f32 values, which the residual then holds).
struct DgRowF32 {
  const float4* x4;
  __device__ float4 operator()(int c) const { return x4[c]; }
};
struct DgRowBf16 {
  const uint2* row;
  __device__ float4 operator()(int c) const {
    const uint2 u = row[c];
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                       __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
  }
};

// RMSNorm of the row [K] that `row` reads, times scale, rounded to bf16 into out (K / 8 16-byte
// chunks, shared memory), by the whole block: residual_rmsnorm's arithmetic ((x * rstd) * scale),
// its sum of squares in another order. copy_to (when set) receives the row in f32. scale is in
// shared memory, each thread's cp.async copies of it still in flight (they complete before the
// block barrier between the two passes). Every thread of the block must call it.
template <int WARPS, typename Row>
__device__ __forceinline__ void dg_norm_row(Row row, const float* __restrict__ scale, float eps,
                                            int K, uint2* __restrict__ out, float* partial,
                                            float* __restrict__ copy_to) {
  const float4* s4 = reinterpret_cast<const float4*>(scale);
  cp_async_wait<0>();
  const int K4 = K / 4;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < K4; c += blockDim.x) {
    const float4 v = row(c);
    if (copy_to) reinterpret_cast<float4*>(copy_to)[c] = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int i = 0; i < WARPS; ++i) total += partial[i];
  const float rstd = rsqrtf(total / K + eps);
  auto bits = [](float v) { return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(v))); };
  for (int c = threadIdx.x; c < K4; c += blockDim.x) {
    const float4 v = row(c), sc = s4[c];
    out[c] = make_uint2(bits(v.x * rstd * sc.x) | bits(v.y * rstd * sc.y) << 16,
                        bits(v.z * rstd * sc.z) | bits(v.w * rstd * sc.w) << 16);
  }
  __syncthreads();
}

// Warps (row pairs) a block of the folded QKV product: every block reads the residual row (11 KB
// of f32 from L2) and norms it before its products, and with 4 warps (640 blocks) that read was
// the kernel's largest stall (ncu: 35% of the warp samples waited on it, against 16% on the
// weights). 8 warps halve the blocks (320, still one wave at 3 blocks a multiprocessor): the
// product 17.0 -> 13.9 us, decode at batch 1 +4% on an H100; 6 measured alike, 10 and 12 less
// (docs/perf-notes.md, S11.4).
constexpr int kDgNormWarps = 8;

// decode_qkv_rope_kernel at one row, the norm before it folded in: each block norms the residual
// row into shared memory (5.6 KB for gpt-oss; every block reads the 11 KB row from L2) while its
// first weight loads are in flight. Warps past the last pair take pair 0's rows (the block's
// barriers need every warp) and write nothing. EMBED (the first layer): the row is the token's
// row of the embedding table, and block 0 also writes it into the residual x, so that the step
// needs no gather launch before this one.
template <bool EMBED>
__global__ void __launch_bounds__(kDgNormWarps * 32, kDgMinBlocks* kDgWarps / kDgNormWarps)
    decode_qkv_rope_norm_kernel(float* __restrict__ x, const __nv_bfloat16* __restrict__ embedding,
                                const int* __restrict__ token, const float* __restrict__ norm_scale,
                                float eps, const __nv_bfloat16* __restrict__ w,
                                const float* __restrict__ bias, int K, int NH, int NKV, int D,
                                const float* __restrict__ cos_table,
                                const float* __restrict__ sin_table, const int* __restrict__ pos,
                                const int* __restrict__ slot, __nv_bfloat16* __restrict__ qkv,
                                __nv_bfloat16* __restrict__ k_cache,
                                __nv_bfloat16* __restrict__ v_cache, int positions) {
  // [K / 8] bf16 x8 (the normed row; 16-byte aligned for the loads), then the norm's scale [K]
  // f32, copied in before the wait (a weight: the kernel before this one does not write it).
  extern __shared__ uint4 dg_normed_row[];
  __shared__ float dg_partial[kDgNormWarps];
  __shared__ float dg_rotation[kDgNormWarps][2];  // each warp's cos and sin at the row's position
  float* scale_s = reinterpret_cast<float*>(dg_normed_row + K / 8);
  for (int c = threadIdx.x; c < K / 4; c += blockDim.x)
    cp_async16(scale_s + 4 * c, norm_scale + 4 * c, 16);
  cp_async_commit();
  const int half = D / 2, pairs = (NH + 2 * NKV) * half;
  const int p = blockIdx.x * kDgNormWarps + (threadIdx.x >> 5);
  const bool idle = p >= pairs;
  const int pp = idle ? 0 : p;
  const int h = pp / half, j = pp % half, n0 = h * D + j, n1 = n0 + half;
  const DgQkvInputs in = dg_qkv_inputs(h, j, idle ? 0 : 1, D, bias, pos, slot);
  // The token is the step's input, copied in before its first kernel.
  const int tok = EMBED ? *token : 0;
  float acc[1][2];
  dg_two_rows(
      w, n0, n1,
      [&] {
        uint2* out = reinterpret_cast<uint2*>(dg_normed_row);
        if constexpr (EMBED)
          dg_norm_row<kDgNormWarps>(
              DgRowBf16{reinterpret_cast<const uint2*>(embedding + int64_t(tok) * K)}, scale_s, eps,
              K, out, dg_partial, blockIdx.x == 0 ? x : nullptr);
        else
          dg_norm_row<kDgNormWarps>(DgRowF32{reinterpret_cast<const float4*>(x)}, scale_s, eps, K,
                                    out, dg_partial, nullptr);
        // The rotation of the warp's pair, copied in while the products run: read at the end it
        // was a round trip to L2 after the last product (the position is the step's input, held
        // since the start; into registers before the products, the kernel spilled).
        if ((threadIdx.x & 31) == 0 && !idle && h < NH + NKV) {
          const int64_t at = int64_t(in.pos) * half + j;
          cp_async4(smem_addr(&dg_rotation[threadIdx.x >> 5][0]), cos_table + at, 4);
          cp_async4(smem_addr(&dg_rotation[threadIdx.x >> 5][1]), sin_table + at, 4);
        }
        cp_async_commit();
        return reinterpret_cast<const __nv_bfloat16*>(dg_normed_row);
      },
      1, K, acc);
  if (idle) return;
  cp_async_wait<0>();  // the rotation (this lane's own copies)
  dg_qkv_store(acc, in, h, j, 1, NH, NKV, D, cos_table, sin_table, qkv, k_cache, v_cache, positions,
               dg_rotation[threadIdx.x >> 5]);
}

// Pair p of rows 2p, 2p + 1 (Q warps, parts of K): resid[r, n] += acc + bias[n] (add), or
// out[r, n] = acc + bias[n].
template <int MAXB, int Q>
__global__ void __launch_bounds__(kDgWarps * 32, MAXB == 1 ? kDgMinBlocks : 1)
    decode_linear_residual_kernel(const __nv_bfloat16* __restrict__ x,
                                  const __nv_bfloat16* __restrict__ w,
                                  const float* __restrict__ bias, int B, int K, int N,
                                  float* __restrict__ resid, bool add) {
  const int warp = threadIdx.x >> 5;
  const int p = blockIdx.x * (kDgWarps / Q) + warp / Q;
  if (2 * p >= N && (Q == 1 || 2 * blockIdx.x * (kDgWarps / Q) >= N)) {  // the block's barrier
    pdl_wait();
    return;
  }
  const int pp = 2 * p < N ? p : 0;  // a pair past N in a block that has work: pair 0, unwritten
  const int n0 = 2 * pp, n1 = min(2 * pp + 1, N - 1);  // odd N: the last second row repeats
  // The epilogue's inputs are read first, so that their round trips overlap the weights' instead
  // of ending the kernel: the bias is a weight, and the residual row was last written at least
  // two launches before this one (the attention comes between; at the first layer the QKV
  // product gathers the row, later ones read it): with PDL a kernel launches only after the one
  // two before it has completed, see pdl.cuh.
  const int lane = threadIdx.x & 31;
  const bool stores = lane < B && 2 * p < N && warp % Q == 0;
  float* row = resid + int64_t(lane) * N;
  float old0 = 0.0f, old1 = 0.0f, b0 = 0.0f, b1 = 0.0f;
  if (stores) {
    if (add) old0 = row[n0], old1 = row[n1];
    if (bias) b0 = bias[n0], b1 = bias[n1];
  }
  float acc[MAXB][2];
  dg_two_rows<MAXB, Q>(
      w, n0, n1, [x] { return x; }, B, K, acc, warp % Q);
  dg_sum_parts<Q>(acc);
  if (!stores) return;
  float v0 = 0.0f, v1 = 0.0f;
#pragma unroll
  for (int r = 0; r < MAXB; ++r)
    if (r == lane) v0 = acc[r][0], v1 = acc[r][1];
  row[n0] = old0 + (v0 + b0);
  if (n1 != n0) row[n1] = old1 + (v1 + b1);
}

void decode_gemv_check(const char* launcher, const void* x, const void* w, int B, int K) {
  MIND4_CUDA_ARG(x && w, launcher, "null pointer");
  MIND4_CUDA_ARG(B >= 1 && B <= kDgMaxRows && K > 0 && K % 8 == 0, launcher, "B = ", B, " (1 to ",
                 kDgMaxRows, "), K = ", K, " (a multiple of 8)");
  MIND4_CUDA_ARG(
      reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0,
      launcher, "x and w must be 16-byte aligned");
}

}  // namespace

void decode_qkv_rope(const void* x, const void* w, const float* bias, int B, int K, int NH, int NKV,
                     int D, const float* cos_table, const float* sin_table, const int* pos,
                     const int* slot, void* qkv, KvLayer kv, cudaStream_t stream) {
  decode_gemv_check("decode_qkv_rope", x, w, B, K);
  MIND4_CUDA_ARG(bias && cos_table && sin_table && pos && slot && qkv && kv.k && kv.v,
                 "decode_qkv_rope", "null pointer");
  MIND4_CUDA_ARG(NH > 0 && NKV > 0 && D > 0 && D % 2 == 0 && kv.positions > 0, "decode_qkv_rope",
                 "NH = ", NH, ", NKV = ", NKV, ", D = ", D, " (even), positions = ", kv.positions);
  const int pairs = (NH + 2 * NKV) * (D / 2);
  launch_pdl("decode_qkv_rope_bf16",
             B == 1 ? decode_qkv_rope_kernel<1> : decode_qkv_rope_kernel<kDgMaxRows>,
             dim3((pairs + kDgWarps - 1) / kDgWarps), dim3(kDgWarps * 32), 0, stream,
             static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w), bias, B, K,
             NH, NKV, D, cos_table, sin_table, pos, slot, static_cast<__nv_bfloat16*>(qkv),
             static_cast<__nv_bfloat16*>(kv.k), static_cast<__nv_bfloat16*>(kv.v), kv.positions);
}

void decode_qkv_rope_norm(float* x, const float* norm_scale, float eps, const void* w,
                          const float* bias, int K, int NH, int NKV, int D, const float* cos_table,
                          const float* sin_table, const int* pos, const int* slot, void* qkv,
                          KvLayer kv, cudaStream_t stream, const void* embedding,
                          const int* token) {
  decode_gemv_check("decode_qkv_rope_norm", x, w, 1, K);
  MIND4_CUDA_ARG(!embedding || (token && reinterpret_cast<uintptr_t>(embedding) % 8 == 0),
                 "decode_qkv_rope_norm", "an embedding table needs the token and 8-byte alignment");
  MIND4_CUDA_ARG(norm_scale && bias && cos_table && sin_table && pos && slot && qkv && kv.k && kv.v,
                 "decode_qkv_rope_norm", "null pointer");
  MIND4_CUDA_ARG(reinterpret_cast<uintptr_t>(norm_scale) % 16 == 0 && eps > 0 && K <= kDgNormMaxK,
                 "decode_qkv_rope_norm", "norm_scale must be 16-byte aligned, eps = ", eps,
                 " (positive), K = ", K, " (at most ", kDgNormMaxK, ")");
  MIND4_CUDA_ARG(NH > 0 && NKV > 0 && D > 0 && D % 2 == 0 && kv.positions > 0,
                 "decode_qkv_rope_norm", "NH = ", NH, ", NKV = ", NKV, ", D = ", D,
                 " (even), positions = ", kv.positions);
  const int pairs = (NH + 2 * NKV) * (D / 2);
  launch_pdl(embedding ? "decode_qkv_rope_norm_embedding_bf16" : "decode_qkv_rope_norm_bf16",
             embedding ? decode_qkv_rope_norm_kernel<true> : decode_qkv_rope_norm_kernel<false>,
             dim3((pairs + kDgNormWarps - 1) / kDgNormWarps), dim3(kDgNormWarps * 32),
             size_t(K) * 6, stream, x, static_cast<const __nv_bfloat16*>(embedding), token,
             norm_scale, eps, static_cast<const __nv_bfloat16*>(w), bias, K, NH, NKV, D, cos_table,
             sin_table, pos, slot, static_cast<__nv_bfloat16*>(qkv),
             static_cast<__nv_bfloat16*>(kv.k), static_cast<__nv_bfloat16*>(kv.v), kv.positions);
}

namespace {

void launch_decode_linear(const char* launcher, const void* x, const void* w, const float* bias,
                          int B, int K, int N, float* out, bool add, cudaStream_t stream) {
  decode_gemv_check(launcher, x, w, B, K);
  MIND4_CUDA_ARG(out && N > 0, launcher, "null output or N = ", N);
  const int warps = (N + 1) / 2;
  // One row: each row pair's K split over kDgLinearParts warps; a few rows: a warp a pair.
  const int per_block = B == 1 ? kDgWarps / kDgLinearParts : kDgWarps;
  launch_pdl(add ? "decode_linear_residual_bf16" : "decode_linear_bf16",
             B == 1 ? decode_linear_residual_kernel<1, kDgLinearParts>
                    : decode_linear_residual_kernel<kDgMaxRows, 1>,
             dim3((warps + per_block - 1) / per_block), dim3(kDgWarps * 32), 0, stream,
             static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w), bias, B, K,
             N, out, add);
}

}  // namespace

void decode_linear_residual(const void* x, const void* w, const float* bias, int B, int K, int N,
                            float* resid, cudaStream_t stream) {
  launch_decode_linear("decode_linear_residual", x, w, bias, B, K, N, resid, true, stream);
}

void decode_linear(const void* x, const void* w, int B, int K, int N, float* out,
                   cudaStream_t stream) {
  launch_decode_linear("decode_linear", x, w, nullptr, B, K, N, out, false, stream);
}

}  // namespace mind4::cuda
