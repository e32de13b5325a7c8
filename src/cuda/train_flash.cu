// Training attention on tensor cores, flash-attention style (bf16 mode, head dimension 64): the
// scores and probabilities never reach memory, and tiles outside the causal / sliding-window band
// are not computed. q, k and v stay in the packed [NT, (NH + 2 NKV) D] layout of the QKV product
// (after bias + RoPE), so the G query heads of a KV head read one copy of its keys.
//
// Forward: a block owns 64 flattened (position, query head of the group) rows f = s * G + g of
// one (sequence, KV head), as the prefill kernel does (attention_prefill.cu): the group's heads
// share every K/V tile the block loads. Keys come in tiles of 64 through a double-buffered
// cp.async pipeline; each of the 4 warps multiplies its 16 rows by the tile (mma.sync m16n8k16),
// folds the scores into a running max and sum (online softmax, log2 units) and adds P V into f32
// accumulators. The sink joins the denominator at the end; out (bf16) and lse (f32, natural log,
// sink included) are written per (row, head).
//
// Backward (FlashAttention-2): a preprocessing kernel computes delta = dO . O per (row, head) and
// the sink's gradient terms exp(sink - lse) delta, reduced per block in a fixed order (then over
// blocks by one small kernel: no atomics, deterministic). The main kernel owns a tile of 64 keys
// of one (sequence, KV head); each of 4 warps holds 16 keys' K and V fragments in registers and
// walks the group's heads and the query tiles that see the keys: it recomputes P^T = exp(K Q^T
// scale - lse) and dP^T = V dO^T, forms dS^T = P^T (dP^T - delta) scale, accumulates dV += P^T dO
// and dK += dS^T Q in registers (summed over the group's heads, which share K and V), and adds
// dQ = dS K into f32 memory with float2 atomics. dQ by atomics rather than a separate pass: a
// second pass would recompute S and dP (two of the five products) for every tile pair, about 40%
// more tensor work; the price is that dQ's additions come in a varying order (the last bits of
// dq vary run to run, as the embedding gradient's already do).
//
// ptxas (sm_90a, nvcc 13.0): forward 158 registers (3 blocks of 4 warps an SM), backward 239 (2
// blocks of 4 warps), no spills; a bound of 2 forward blocks of 8 warps or 3 backward blocks
// spilled.
#include <cmath>

#include "cuda/flash_tile.cuh"
#include "cuda/mma.cuh"
#include "cuda/train_kernels.h"
#include "cuda/train_util.cuh"

namespace mind4::cuda {
namespace {

using tf_bf16 = __nv_bfloat16;

constexpr int kTfD = 64;  // the head dimension these kernels are written for
constexpr int kTfStride =
    kTfD + 8;                // shared-memory row stride (bf16): ldmatrix rows in distinct banks
constexpr int kTfKeys = 64;  // keys per tile (forward and backward)
constexpr int kTfFwdWarps = 4;
constexpr int kTfFwdRows = 16 * kTfFwdWarps;  // flattened rows per forward block
constexpr int kTfBwdWarps = kTfKeys / 16;     // a warp per 16 keys of the backward's key tile
constexpr int kTfQueries = 64;                // queries per backward query tile
constexpr int kTfPrepRows = 32;               // rows per block of the backward's preprocessing
constexpr float kTfLn2 = 0.6931471805599453f;
constexpr int kTfTile = kTfKeys * kTfStride;  // bf16 elements of one 64-row shared tile

constexpr size_t kTfFwdSmem = size_t(4) * kTfTile * sizeof(tf_bf16);  // K, V: two stages each
// K, V, dS^T, Q and dO (two stages each), lse and delta (two stages each).
constexpr size_t kTfBwdSmem =
    size_t(7) * kTfTile * sizeof(tf_bf16) + size_t(4) * kTfQueries * sizeof(float);

__device__ __forceinline__ int tf_first_key(int s, int window) {
  return window > 0 ? max(0, s - window + 1) : 0;
}

// ---- bias + RoPE into the packed layout, and the transpose

template <typename T>
__global__ void train_qkv_rope_packed_kernel(const float* __restrict__ qkv,
                                             const float* __restrict__ bias,
                                             const float* __restrict__ cos_t,
                                             const float* __restrict__ sin_t, int S, int NH,
                                             int NKV, int D, T* __restrict__ out) {
  const int64_t r = blockIdx.x;  // row b*S + s
  const int s = int(r % S), h2 = D / 2, heads = NH + 2 * NKV;
  const float* src = qkv + r * int64_t(heads) * D;
  T* dst = out + r * int64_t(heads) * D;
  for (int p = threadIdx.x; p < heads * h2; p += blockDim.x) {
    const int hh = p / h2, i = p % h2;
    const float x1 = src[hh * D + i] + bias[hh * D + i];
    const float x2 = src[hh * D + i + h2] + bias[hh * D + i + h2];
    float y1 = x1, y2 = x2;
    if (hh < NH + NKV) {  // q and k rotate, v does not
      const float c = cos_t[s * h2 + i], sn = sin_t[s * h2 + i];
      y1 = x1 * c - x2 * sn;
      y2 = x2 * c + x1 * sn;
    }
    dst[hh * D + i] = from_f32<T>(y1);
    dst[hh * D + i + h2] = from_f32<T>(y2);
  }
}

template <typename T>
__global__ void train_rope_packed_bwd_kernel(const float* __restrict__ dqkv,
                                             const float* __restrict__ cos_t,
                                             const float* __restrict__ sin_t, int S, int NH,
                                             int NKV, int D, T* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const int s = int(r % S), h2 = D / 2, heads = NH + 2 * NKV;
  const float* src = dqkv + r * int64_t(heads) * D;
  T* dst = out + r * int64_t(heads) * D;
  for (int p = threadIdx.x; p < heads * h2; p += blockDim.x) {
    const int hh = p / h2, i = p % h2;
    const float d1 = src[hh * D + i], d2 = src[hh * D + i + h2];
    train_rope_bwd_pair(d1, d2, hh, NH + NKV, cos_t, sin_t, s, i, D, dst);
  }
}

// ---- forward

// qkv [B*S, QKV] packed; out [B*S, NH D]; lse [B*S, NH]. Grid (row blocks, NKV, B).
__global__ void __launch_bounds__(kTfFwdWarps * 32, 3)
    train_flash_fwd_kernel(const tf_bf16* __restrict__ qkv, const float* __restrict__ sinks, int S,
                           int NH, int NKV, int window, float scale_log2, tf_bf16* __restrict__ out,
                           float* __restrict__ lse) {
  constexpr int ST = kTfStride, KT = kTfKeys, D = kTfD;
  extern __shared__ __align__(16) unsigned char tf_fwd_smem[];
  tf_bf16* ks = reinterpret_cast<tf_bf16*>(tf_fwd_smem);  // [2][KT][ST]
  tf_bf16* vs = ks + 2 * kTfTile;                         // [2][KT][ST]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int G = NH / NKV, kvh = blockIdx.y, b = blockIdx.z, total = S * G;
  const int64_t QKV = int64_t(NH + 2 * NKV) * D;
  const tf_bf16* seq = qkv + int64_t(b) * S * QKV;
  const int64_t k_off = int64_t(NH + kvh) * D, v_off = int64_t(NH + NKV + kvh) * D;
  // The block's rows, the longest first (the last positions see the most keys).
  const int f0 = (gridDim.x - 1 - blockIdx.x) * kTfFwdRows;
  const int p_lo = f0 / G, p_hi = (min(total, f0 + kTfFwdRows) - 1) / G;
  const int k_begin = tf_first_key(p_lo, window), k_end = p_hi + 1;
  // Keys in [full_lo, full_hi] are visible to every row of the block: no mask there.
  const int full_lo = tf_first_key(p_hi, window), full_hi = p_lo;

  // This lane's two rows (fragment rows l/4 and l/4 + 8 of the warp's 16); rows past the sequence
  // are computed like the last row and never stored.
  const int fr0 = f0 + warp * 16 + (lane >> 2), fr1 = fr0 + 8;
  const int pr0 = min(fr0, total - 1) / G, pr1 = min(fr1, total - 1) / G;
  const int first0 = tf_first_key(pr0, window), first1 = tf_first_key(pr1, window);
  // The warp's band of keys (tiles none of its rows sees are skipped).
  const int wf_lo = f0 + warp * 16, wf_hi = min(total - 1, wf_lo + 15);
  const bool warp_live = wf_lo < total;
  const int wk_lo = tf_first_key(wf_lo / G, window), wk_hi = wf_hi / G;
  const int c2 = 2 * (lane & 3);

  uint32_t qf[D / 16][4];  // Q fragments straight from global memory (read once per block)
  auto q_pair = [&](int f, int d) -> uint32_t {
    if (f >= total) return 0u;
    const int s = f / G, h = kvh * G + f % G;
    return *reinterpret_cast<const uint32_t*>(seq + int64_t(s) * QKV + int64_t(h) * D + d);
  };
  flash_q_fragments<D>(qf, fr0, fr1, c2, q_pair);

  const int n_tiles = (k_end - k_begin + KT - 1) / KT;
  auto load_tile = [&](int j) {
    const int kt0 = k_begin + j * KT, buf = j & 1;
    constexpr int kChunks = D / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < KT * kChunks; c += kTfFwdWarps * 32) {
      const int row = c / kChunks, ch = c % kChunks, key = kt0 + row;
      // Keys past the block's last row are zero-filled: P is 0 there, and 0 * (stale bytes) could
      // be NaN.
      const bool ok = key < k_end;
      const int64_t off = ok ? int64_t(key) * QKV + ch * 8 : 0;
      cp_async16(ks + (buf * KT + row) * ST + ch * 8, seq + k_off + off, ok ? 16 : 0);
      cp_async16(vs + (buf * KT + row) * ST + ch * 8, seq + v_off + off, ok ? 16 : 0);
    }
    cp_async_commit();
  };

  FlashRowState<D> st;

  flash_walk_tiles(
      n_tiles, load_tile,
      [&](int j) {
        const int kt0 = k_begin + j * KT;
        const tf_bf16* kt = ks + (j & 1) * kTfTile;
        const tf_bf16* vt = vs + (j & 1) * kTfTile;
        if (warp_live && kt0 <= wk_hi && kt0 + KT > wk_lo)
          flash_tile_forward<D, KT>(kt, vt, ST, qf, kt0, full_lo, full_hi, first0, pr0, first1, pr1,
                                    scale_log2, st);
      },
      st);
  auto store_row = [&](int f, float m, float l, int e0) {
    if (f >= total) return;
    const int s = f / G, h = kvh * G + f % G;
    const int64_t row = int64_t(b) * S + s;
    const float sink = sinks[h] * kFlashLog2e, M = fmaxf(m, sink);
    const float fm = flash_exp2(m - M), denom = l * fm + flash_exp2(sink - M), mult = fm / denom;
    tf_bf16* o = out + row * NH * D + int64_t(h) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<uint32_t*>(o + 8 * dt + c2) =
          pack_bf16x2(st.acc[dt][e0] * mult, st.acc[dt][e0 + 1] * mult);
    if ((lane & 3) == 0) lse[row * NH + h] = (M + log2f(denom)) * kTfLn2;
  };
  store_row(fr0, st.m0, st.l0, 0);
  store_row(fr1, st.m1, st.l1, 2);
}

// ---- backward

// Eight lanes per (row, head) of a block's kTfPrepRows rows, a warp four of them at once (each
// lane one 16-byte word of dO and of O: a lane moving 4 bytes left the pass at a third of the
// bandwidth): delta [NT, NH] = dO . O, and the block's sum per head of exp(sink - lse) delta in
// sink_partial [blocks, NH] (rows in order).
constexpr int kTfPrepLanes = kTfD / 8;           // lanes per (row, head): 8 bf16 each
constexpr int kTfPrepPairs = 32 / kTfPrepLanes;  // (row, head) pairs per warp at once
__global__ void __launch_bounds__(256)
    train_flash_bwd_prep_kernel(const tf_bf16* __restrict__ dout, const tf_bf16* __restrict__ out,
                                const float* __restrict__ lse, const float* __restrict__ sinks,
                                int NT, int NH, float* __restrict__ delta,
                                float* __restrict__ sink_partial) {
  extern __shared__ float tf_prep_terms[];  // [kTfPrepRows][NH]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int sub = lane / kTfPrepLanes, part = lane % kTfPrepLanes;
  const int64_t r0 = int64_t(blockIdx.x) * kTfPrepRows;
  const int pairs = kTfPrepRows * NH;
  for (int p0 = warp * kTfPrepPairs; p0 < pairs; p0 += warps * kTfPrepPairs) {
    const int p = p0 + sub, rl = p / NH, h = p % NH;
    const int64_t r = r0 + rl;
    const bool valid = p < pairs && r < NT;
    float dot = 0.0f;
    if (valid) {
      const int64_t at = (r * NH + h) * kTfD + part * 8;
      const uint4 g = __ldg(reinterpret_cast<const uint4*>(dout + at));
      const uint4 o = __ldg(reinterpret_cast<const uint4*>(out + at));
      const uint32_t gw[4] = {g.x, g.y, g.z, g.w}, ow[4] = {o.x, o.y, o.z, o.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&gw[i]));
        const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ow[i]));
        dot += x.x * y.x + x.y * y.y;
      }
    }
#pragma unroll
    for (int m = kTfPrepLanes / 2; m > 0; m /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, m);
    if (valid && part == 0) {
      delta[r * NH + h] = dot;
      tf_prep_terms[rl * NH + h] = expf(sinks[h] - lse[r * NH + h]) * dot;
    } else if (p < pairs && part == 0) {
      tf_prep_terms[rl * NH + h] = 0.0f;  // rows past NT
    }
  }
  __syncthreads();
  for (int h = threadIdx.x; h < NH; h += blockDim.x) {
    float sum = 0.0f;
    for (int rl = 0; rl < kTfPrepRows; ++rl) sum += tf_prep_terms[rl * NH + h];
    sink_partial[int64_t(blockIdx.x) * NH + h] = sum;
  }
}

// dsinks[h] -= the sum of the prep blocks' partials, in a fixed order. A block per head.
__global__ void train_flash_sink_grad_kernel(const float* __restrict__ sink_partial, int blocks,
                                             int NH, float* __restrict__ dsinks) {
  const int h = blockIdx.x;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < blocks; i += blockDim.x) sum += sink_partial[int64_t(i) * NH + h];
  sum = train_block_sum(sum);
  if (threadIdx.x == 0) dsinks[h] -= sum;
}

// qkv, dqkv [B*S, QKV] packed (dqkv f32: its q columns zeroed beforehand and added to, its k and v
// columns written); dout [B*S, NH D]; lse, delta [B*S, NH]. Grid (key tiles, NKV, B).
__global__ void __launch_bounds__(kTfBwdWarps * 32, 2)
    train_flash_bwd_kernel(const tf_bf16* __restrict__ qkv, const tf_bf16* __restrict__ dout,
                           const float* __restrict__ lse, const float* __restrict__ delta, int S,
                           int NH, int NKV, int window, float scale_log2, float scale,
                           float* __restrict__ dqkv) {
  constexpr int ST = kTfStride, D = kTfD, QT = kTfQueries;
  extern __shared__ __align__(16) unsigned char tf_bwd_smem[];
  tf_bf16* ks = reinterpret_cast<tf_bf16*>(tf_bwd_smem);       // [KT][ST]
  tf_bf16* vs = ks + kTfTile;                                  // [KT][ST]
  tf_bf16* dst = vs + kTfTile;                                 // dS^T [KT][ST] (keys by queries)
  tf_bf16* qs = dst + kTfTile;                                 // [2][QT][ST]
  tf_bf16* dos = qs + 2 * kTfTile;                             // [2][QT][ST]
  float* lse_s = reinterpret_cast<float*>(dos + 2 * kTfTile);  // [2][QT], log2 units
  float* dl_s = lse_s + 2 * QT;                                // [2][QT]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int G = NH / NKV, kvh = blockIdx.y, b = blockIdx.z;
  const int64_t QKV = int64_t(NH + 2 * NKV) * D, row0 = int64_t(b) * S;
  const tf_bf16* seq = qkv + row0 * QKV;
  const int64_t k_off = int64_t(NH + kvh) * D, v_off = int64_t(NH + NKV + kvh) * D;
  // Tile 0 first: under a causal mask it is seen by the most query tiles.
  const int kt0 = blockIdx.x * kTfKeys;
  // Queries that see a key of the tile: kt0 .. the last key's window end.
  const int q_last = window > 0 ? min(S - 1, kt0 + kTfKeys - 1 + window - 1) : S - 1;
  const int n_qt = (q_last - kt0) / QT + 1, n_iter = G * n_qt;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  const int mi = lane >> 3, ri = lane & 7, c2 = 2 * (lane & 3);

  for (int c = threadIdx.x; c < kTfKeys * kChunks; c += kTfBwdWarps * 32) {
    const int row = c / kChunks, ch = c % kChunks, key = kt0 + row;
    const bool ok = key < S;
    const int64_t off = ok ? int64_t(key) * QKV + ch * 8 : 0;
    cp_async16(ks + row * ST + ch * 8, seq + k_off + off, ok ? 16 : 0);
    cp_async16(vs + row * ST + ch * 8, seq + v_off + off, ok ? 16 : 0);
  }
  // Iteration it: head kvh * G + it / n_qt, query tile it % n_qt. Rows past S are zero-filled
  // (their P is masked to 0 and their dQ is not stored).
  auto load_queries = [&](int it) {
    const int h = kvh * G + it / n_qt, qt0 = kt0 + (it % n_qt) * QT, buf = it & 1;
    for (int c = threadIdx.x; c < QT * kChunks; c += kTfBwdWarps * 32) {
      const int row = c / kChunks, ch = c % kChunks, q = qt0 + row;
      const bool ok = q < S;
      const int64_t qo = ok ? int64_t(q) * QKV + int64_t(h) * D + ch * 8 : 0;
      const int64_t go = ok ? (row0 + q) * NH * D + int64_t(h) * D + ch * 8 : 0;
      cp_async16(qs + (buf * QT + row) * ST + ch * 8, seq + qo, ok ? 16 : 0);
      cp_async16(dos + (buf * QT + row) * ST + ch * 8, dout + go, ok ? 16 : 0);
    }
    for (int i = threadIdx.x; i < 2 * QT; i += kTfBwdWarps * 32) {
      const int row = i % QT, q = qt0 + row;
      const float* src = i < QT ? lse : delta;
      const float v = q < S ? src[(row0 + q) * NH + h] : 0.0f;
      if (i < QT)
        lse_s[buf * QT + row] = v * kFlashLog2e;
      else
        dl_s[buf * QT + row] = v;
    }
    cp_async_commit();
  };

  // This lane's keys: fragment rows l/4 and l/4 + 8 of the warp's 16.
  const int kr0 = kt0 + warp * 16 + (lane >> 2), kr1 = kr0 + 8;
  uint32_t kf[D / 16][4], vf[D / 16][4];
  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.0f;

  load_queries(0);  // one group with the K/V copies above
  for (int it = 0; it < n_iter; ++it) {
    if (it + 1 < n_iter) {
      load_queries(it + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const int off = (warp * 16 + 8 * (mi & 1) + ri) * ST + 16 * kk + 8 * (mi >> 1);
        ldmatrix_x4(kf[kk], ks + off);
        ldmatrix_x4(vf[kk], vs + off);
      }
    }
    const int h = kvh * G + it / n_qt, qt0 = kt0 + (it % n_qt) * QT, buf = it & 1;
    const tf_bf16* qt = qs + buf * kTfTile;
    const tf_bf16* dot = dos + buf * kTfTile;
    const float* ls = lse_s + buf * QT;
    const float* dls = dl_s + buf * QT;

    // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys by the tile's 64 queries.
    float s[QT / 8][4], dp[QT / 8][4];
#pragma unroll
    for (int nt = 0; nt < QT / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int nt = 0; nt < QT / 8; nt += 2) {
        const int off = (8 * (nt + (mi >> 1)) + ri) * ST + 16 * kk + 8 * (mi & 1);
        uint32_t bq[4], bo[4];
        ldmatrix_x4(bq, qt + off);
        ldmatrix_x4(bo, dot + off);
        mma_bf16_16816(s[nt], kf[kk], bq[0], bq[1]);
        mma_bf16_16816(s[nt + 1], kf[kk], bq[2], bq[3]);
        mma_bf16_16816(dp[nt], vf[kk], bo[0], bo[1]);
        mma_bf16_16816(dp[nt + 1], vf[kk], bo[2], bo[3]);
      }
    // P^T and dS^T in place of S^T and dP^T. A tile pair needs no mask when every query is in
    // the sequence and sees every key.
    const bool full =
        qt0 >= kt0 + kTfKeys - 1 && qt0 + QT <= S && (window == 0 || qt0 + QT - 1 - kt0 < window);
#pragma unroll
    for (int nt = 0; nt < QT / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ql = 8 * nt + c2 + (e & 1), q = qt0 + ql, key = e < 2 ? kr0 : kr1;
        float p = flash_exp2(s[nt][e] * scale_log2 - ls[ql]);
        if (!full && !(q < S && key <= q && (window == 0 || q - key < window))) p = 0.0f;
        s[nt][e] = p;
        dp[nt][e] = p * (dp[nt][e] - dls[ql]) * scale;
      }
      // dV += P^T dO and dK += dS^T Q (k = the tile's queries); dS^T to shared memory for dQ.
#pragma unroll
    for (int kk = 0; kk < QT / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                              pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      const uint32_t da[4] = {pack_bf16x2(dp[2 * kk][0], dp[2 * kk][1]),
                              pack_bf16x2(dp[2 * kk][2], dp[2 * kk][3]),
                              pack_bf16x2(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                              pack_bf16x2(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
      tf_bf16* drow = dst + (warp * 16 + (lane >> 2)) * ST + 16 * kk + c2;
      *reinterpret_cast<uint32_t*>(drow) = da[0];
      *reinterpret_cast<uint32_t*>(drow + 8 * ST) = da[1];
      *reinterpret_cast<uint32_t*>(drow + 8) = da[2];
      *reinterpret_cast<uint32_t*>(drow + 8 * ST + 8) = da[3];
#pragma unroll
      for (int dt = 0; dt < D / 8; dt += 2) {
        const int off = (16 * kk + 8 * (mi & 1) + ri) * ST + 8 * (dt + (mi >> 1));
        uint32_t bo[4], bq[4];
        ldmatrix_x4_trans(bo, dot + off);
        ldmatrix_x4_trans(bq, qt + off);
        mma_bf16_16816(dv[dt], pa, bo[0], bo[1]);
        mma_bf16_16816(dv[dt + 1], pa, bo[2], bo[3]);
        mma_bf16_16816(dk[dt], da, bq[0], bq[1]);
        mma_bf16_16816(dk[dt + 1], da, bq[2], bq[3]);
      }
    }
    __syncthreads();  // dS^T complete

    // dQ = dS K for the queries 16 warp .. 16 warp + 15 of the tile over all 64 keys (A: dS read
    // transposed out of dS^T; B: K, rows = k).
    float dq[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kTfKeys / 16; ++kk) {
      uint32_t a[4];
      ldmatrix_x4_trans(a, dst + (16 * kk + 8 * (mi >> 1) + ri) * ST + warp * 16 + 8 * (mi & 1));
#pragma unroll
      for (int dt = 0; dt < D / 8; dt += 2) {
        uint32_t bk[4];
        ldmatrix_x4_trans(bk, ks + (16 * kk + 8 * (mi & 1) + ri) * ST + 8 * (dt + (mi >> 1)));
        mma_bf16_16816(dq[dt], a, bk[0], bk[1]);
        mma_bf16_16816(dq[dt + 1], a, bk[2], bk[3]);
      }
    }
    const int qa = qt0 + warp * 16 + (lane >> 2), qb = qa + 8;
    float* dqa = dqkv + (row0 + qa) * QKV + int64_t(h) * D + c2;
    float* dqb = dqa + 8 * QKV;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      if (qa < S)
        atomicAdd(reinterpret_cast<float2*>(dqa + 8 * dt), make_float2(dq[dt][0], dq[dt][1]));
      if (qb < S)
        atomicAdd(reinterpret_cast<float2*>(dqb + 8 * dt), make_float2(dq[dt][2], dq[dt][3]));
    }
    __syncthreads();  // the next iteration's copy refills this stage and rewrites dS^T
  }

  // dK and dV of the warp's keys (summed over the group's heads): plain stores, a key tile
  // belongs to one block.
  auto store_rows = [&](int key, int e0) {
    if (key >= S) return;
    float* dkr = dqkv + (row0 + key) * QKV + k_off + c2;
    float* dvr = dqkv + (row0 + key) * QKV + v_off + c2;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<float2*>(dkr + 8 * dt) = make_float2(dk[dt][e0], dk[dt][e0 + 1]);
      *reinterpret_cast<float2*>(dvr + 8 * dt) = make_float2(dv[dt][e0], dv[dt][e0 + 1]);
    }
  };
  store_rows(kr0, 0);
  store_rows(kr1, 2);
}

void train_flash_check(const char* launcher, ActType t, int B, int S, int NH, int NKV, int D,
                       int window) {
  MIND4_CUDA_ARG(train_flash_supported(t, D), launcher, "dtype ", act_name(t), ", D = ", D,
                 " (bf16 with head dimension 64 only; the cuBLAS route serves the rest)");
  MIND4_CUDA_ARG(B >= 0 && B <= 65535 && S > 0 && NH > 0 && NKV > 0 && NH % NKV == 0 && window >= 0,
                 launcher, "B = ", B, ", S = ", S, ", NH = ", NH, ", NKV = ", NKV,
                 ", window = ", window);
  MIND4_CUDA_ARG(int64_t(S) * (NH / NKV) < (int64_t(1) << 31) - kTfFwdRows, launcher, "S = ", S,
                 " rows of ", NH / NKV, " heads per KV head");
}

}  // namespace

bool train_flash_supported(ActType t, int D) {
  return t == ActType::kBF16 && D == kTfD;
}

void train_qkv_rope_packed(ActType t, const float* qkv, const float* bias, const float* cos_table,
                           const float* sin_table, int B, int S, int NH, int NKV, int D, void* out,
                           cudaStream_t stream) {
  MIND4_CUDA_ARG(qkv && bias && cos_table && sin_table && out, "train_qkv_rope_packed",
                 "null pointer");
  MIND4_CUDA_ARG(B >= 0 && S > 0 && NH > 0 && NKV > 0 && D > 0 && D % 2 == 0,
                 "train_qkv_rope_packed", "B = ", B, ", S = ", S, ", NH = ", NH, ", NKV = ", NKV,
                 ", D = ", D);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_qkv_rope_packed_kernel<T><<<B * S, 256, 0, stream>>>(qkv, bias, cos_table, sin_table, S,
                                                               NH, NKV, D, static_cast<T*>(out));
  });
  check_launch(t == ActType::kF32 ? "train_qkv_rope_packed_f32" : "train_qkv_rope_packed_bf16");
}

void train_rope_packed_bwd(ActType t, const float* dqkv, const float* cos_table,
                           const float* sin_table, int B, int S, int NH, int NKV, int D, void* out,
                           cudaStream_t stream) {
  MIND4_CUDA_ARG(dqkv && cos_table && sin_table && out, "train_rope_packed_bwd", "null pointer");
  MIND4_CUDA_ARG(B >= 0 && S > 0 && NH > 0 && NKV > 0 && D > 0 && D % 2 == 0,
                 "train_rope_packed_bwd", "B = ", B, ", S = ", S, ", NH = ", NH, ", NKV = ", NKV,
                 ", D = ", D);
  if (B == 0) return;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    train_rope_packed_bwd_kernel<T><<<B * S, 256, 0, stream>>>(dqkv, cos_table, sin_table, S, NH,
                                                               NKV, D, static_cast<T*>(out));
  });
  check_launch(t == ActType::kF32 ? "train_rope_packed_bwd_f32" : "train_rope_packed_bwd_bf16");
}

void train_flash_attention_fwd(ActType t, const void* qkv, const float* sinks, int B, int S, int NH,
                               int NKV, int D, int window, float scale, void* out, float* lse,
                               cudaStream_t stream) {
  MIND4_CUDA_ARG(qkv && sinks && out && lse, "train_flash_attention_fwd", "null pointer");
  train_flash_check("train_flash_attention_fwd", t, B, S, NH, NKV, D, window);
  if (B == 0) return;
  // Per launch, as attention_prefill.cu does: the limit belongs to the kernel on the current
  // device (36 KiB today, under the default 48; set anyway should the tiles grow).
  check(cudaFuncSetAttribute(train_flash_fwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             int(kTfFwdSmem)),
        "cudaFuncSetAttribute(train_flash_fwd)");
  const int G = NH / NKV;
  const dim3 grid(unsigned((int64_t(S) * G + kTfFwdRows - 1) / kTfFwdRows), unsigned(NKV),
                  unsigned(B));
  train_flash_fwd_kernel<<<grid, kTfFwdWarps * 32, kTfFwdSmem, stream>>>(
      static_cast<const tf_bf16*>(qkv), sinks, S, NH, NKV, window, scale * kFlashLog2e,
      static_cast<tf_bf16*>(out), lse);
  check_launch("train_flash_fwd_bf16");
}

int64_t train_flash_bwd_scratch_floats(int B, int S, int NH) {
  const int64_t NT = int64_t(B) * S;
  return NT * NH + (NT + kTfPrepRows - 1) / kTfPrepRows * NH;
}

void train_flash_attention_bwd(ActType t, const void* qkv, const void* out, const void* dout,
                               const float* lse, const float* sinks, int B, int S, int NH, int NKV,
                               int D, int window, float scale, float* dqkv, float* dsinks,
                               float* scratch, cudaStream_t stream) {
  MIND4_CUDA_ARG(qkv && out && dout && lse && sinks && dqkv && dsinks && scratch,
                 "train_flash_attention_bwd", "null pointer");
  train_flash_check("train_flash_attention_bwd", t, B, S, NH, NKV, D, window);
  MIND4_CUDA_ARG(NH <= 256, "train_flash_attention_bwd", "NH = ", NH,
                 " (the sink reduction keeps 32 rows x NH terms in shared memory: at most 256)");
  MIND4_CUDA_ARG(
      reinterpret_cast<uintptr_t>(out) % 16 == 0 && reinterpret_cast<uintptr_t>(dout) % 16 == 0,
      "train_flash_attention_bwd", "out and dout must be 16-byte aligned");
  if (B == 0) return;
  const int64_t NT = int64_t(B) * S;
  const int prep_blocks = int((NT + kTfPrepRows - 1) / kTfPrepRows);
  float* delta = scratch;
  float* sink_partial = scratch + NT * NH;
  const auto* dO = static_cast<const tf_bf16*>(dout);
  train_flash_bwd_prep_kernel<<<prep_blocks, 256, size_t(kTfPrepRows) * NH * sizeof(float),
                                stream>>>(dO, static_cast<const tf_bf16*>(out), lse, sinks, int(NT),
                                          NH, delta, sink_partial);
  check_launch("train_flash_bwd_prep_bf16");
  train_flash_sink_grad_kernel<<<NH, 256, 0, stream>>>(sink_partial, prep_blocks, NH, dsinks);
  check_launch("train_flash_sink_grad");
  // dQ is added to by every key tile that its queries see (the k and v columns are written):
  // only the q columns of each row are zeroed.
  check(cudaMemset2DAsync(dqkv, size_t(NH + 2 * NKV) * D * sizeof(float), 0,
                          size_t(NH) * D * sizeof(float), size_t(NT), stream),
        "train_flash_attention_bwd: zero dq");
  check(cudaFuncSetAttribute(train_flash_bwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             int(kTfBwdSmem)),
        "cudaFuncSetAttribute(train_flash_bwd)");
  const dim3 grid(unsigned((S + kTfKeys - 1) / kTfKeys), unsigned(NKV), unsigned(B));
  train_flash_bwd_kernel<<<grid, kTfBwdWarps * 32, kTfBwdSmem, stream>>>(
      static_cast<const tf_bf16*>(qkv), dO, lse, delta, S, NH, NKV, window, scale * kFlashLog2e,
      scale, dqkv);
  check_launch("train_flash_bwd_bf16");
}

}  // namespace mind4::cuda
