// One key tile of flash attention's forward, for one warp's 16 rows (two per lane): S = Q K^T on
// mma.sync m16n8k16, the causal / sliding-window mask, the online softmax in log2 units (running
// max m and per-lane partial sums l of each of the lane's two rows), and P V added into the f32
// accumulators. Shared by the prefill kernel (attention_prefill.cu) and the training forward
// (train_flash.cu), which differ in how they lay out rows and keys, not in this step.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/device_util.cuh"
#include "cuda/mma.cuh"

namespace mind4::cuda {

constexpr float kFlashLog2e = 1.4426950408889634f;

__device__ __forceinline__ float flash_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));  // ex2(-inf) = +0
  return y;
}

// The running state of a warp's 16 rows, two per lane (r = 0: fragment row lane/4, 1: lane/4 + 8):
// max m_r and this lane's partial sum l_r of each row (log2 units), and P V's f32 accumulators
// (acc[dt][0..1] row 0, acc[dt][2..3] row 1). Starts empty: no key seen.
template <int DP>
struct FlashRowState {
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  float acc[DP / 8][4] = {};
};

// DP: the head dimension in the tiles (a multiple of 16); KT: keys per tile (a multiple of 16).
// kt, vt: the tile's keys and values in shared memory, `stride` elements a row; kt0: the tile's
// first key. qf: the warp's Q fragments. Row r of the lane's two (r = 0: fragment row lane/4, 1:
// lane/4 + 8) sees keys first_r .. pr_r; keys in [full_lo, full_hi] are visible to every row of
// the block (tiles inside it skip the mask). scale_log2: the score scale times log2(e).
template <int DP, int KT>
__device__ __forceinline__ void flash_tile_forward(const __nv_bfloat16* kt, const __nv_bfloat16* vt,
                                                   int stride, const uint32_t (&qf)[DP / 16][4],
                                                   int kt0, int full_lo, int full_hi, int first0,
                                                   int pr0, int first1, int pr1, float scale_log2,
                                                   FlashRowState<DP>& st) {
  float &m0 = st.m0, &m1 = st.m1, &l0 = st.l0, &l1 = st.l1;
  float(&acc)[DP / 8][4] = st.acc;
  const int lane = threadIdx.x & 31;
  const int mi = lane >> 3, ri = lane & 7;  // ldmatrix: this lane's matrix and row address
  const int c2 = 2 * (lane & 3);
  float s[KT / 8][4];
#pragma unroll
  for (int nt = 0; nt < KT / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < DP / 16; ++kk)
#pragma unroll
    for (int nt = 0; nt < KT / 8; nt += 2) {
      uint32_t b4[4];
      ldmatrix_x4(b4, kt + (8 * (nt + (mi >> 1)) + ri) * stride + 16 * kk + 8 * (mi & 1));
      mma_bf16_16816(s[nt], qf[kk], b4[0], b4[1]);
      mma_bf16_16816(s[nt + 1], qf[kk], b4[2], b4[3]);
    }
  const bool full = kt0 >= full_lo && kt0 + KT - 1 <= full_hi;
  float mx0 = m0, mx1 = m1;
#pragma unroll
  for (int nt = 0; nt < KT / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float v = s[nt][e] * scale_log2;
      if (!full) {
        const int key = kt0 + 8 * nt + c2 + (e & 1);
        const bool vis = e < 2 ? key >= first0 && key <= pr0 : key >= first1 && key <= pr1;
        if (!vis) v = -INFINITY;
      }
      s[nt][e] = v;
      if (e < 2)
        mx0 = fmaxf(mx0, v);
      else
        mx1 = fmaxf(mx1, v);
    }
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
  // A row with no visible key yet keeps max -inf; subtract 0 then (every exp is 0).
  const float base0 = mx0 == -INFINITY ? 0.0f : mx0, base1 = mx1 == -INFINITY ? 0.0f : mx1;
  const float corr0 = flash_exp2(m0 - base0), corr1 = flash_exp2(m1 - base1);
  m0 = mx0;
  m1 = mx1;
  l0 *= corr0;  // per-lane partial sums; the 4 lanes of a row add up at the end
  l1 *= corr1;
#pragma unroll
  for (int dt = 0; dt < DP / 8; ++dt) {
    acc[dt][0] *= corr0;
    acc[dt][1] *= corr0;
    acc[dt][2] *= corr1;
    acc[dt][3] *= corr1;
  }
#pragma unroll
  for (int kk = 0; kk < KT / 16; ++kk) {
    // The score accumulators of keys 16kk .. 16kk + 15 are already in A-fragment order.
    const float p00 = flash_exp2(s[2 * kk][0] - base0), p01 = flash_exp2(s[2 * kk][1] - base0);
    const float p10 = flash_exp2(s[2 * kk][2] - base1), p11 = flash_exp2(s[2 * kk][3] - base1);
    const float p02 = flash_exp2(s[2 * kk + 1][0] - base0),
                p03 = flash_exp2(s[2 * kk + 1][1] - base0);
    const float p12 = flash_exp2(s[2 * kk + 1][2] - base1),
                p13 = flash_exp2(s[2 * kk + 1][3] - base1);
    l0 += (p00 + p01) + (p02 + p03);
    l1 += (p10 + p11) + (p12 + p13);
    const uint32_t pa[4] = {pack_bf16x2(p00, p01), pack_bf16x2(p10, p11), pack_bf16x2(p02, p03),
                            pack_bf16x2(p12, p13)};
#pragma unroll
    for (int dt = 0; dt < DP / 8; dt += 2) {
      uint32_t b4[4];
      ldmatrix_x4_trans(b4, vt + (16 * kk + 8 * (mi & 1) + ri) * stride + 8 * (dt + (mi >> 1)));
      mma_bf16_16816(acc[dt], pa, b4[0], b4[1]);
      mma_bf16_16816(acc[dt + 1], pa, b4[2], b4[3]);
    }
  }
}

// The end of a row: this lane's accumulators acc[.][e0], acc[.][e0 + 1] of a row with running
// max m and sum l (log2 units) join the sink logit (sink_log2, log2 units) in the denominator and
// go out as bf16: o[d] = acc * 2^(m - M) / (l 2^(m - M) + 2^(sink - M)), M = max(m, sink), for
// the lane's dimensions d = 8 dt + c2 (+ 1) below D.
template <int DP>
__device__ __forceinline__ void flash_store_row(__nv_bfloat16* o, int D,
                                                const float (&acc)[DP / 8][4], int e0, float m,
                                                float l, float sink_log2, int c2) {
  const float M = fmaxf(m, sink_log2);
  const float fm = flash_exp2(m - M), mult = fm / (l * fm + flash_exp2(sink_log2 - M));
#pragma unroll
  for (int dt = 0; dt < DP / 8; ++dt) {
    const int d = 8 * dt + c2;
    if (d < D)
      *reinterpret_cast<uint32_t*>(o + d) = pack_bf16x2(acc[dt][e0] * mult, acc[dt][e0 + 1] * mult);
  }
}

// The A fragments of this lane's two query rows fr0, fr1 (m16n8k16 rows l/4 and l/4 + 8) over
// DP dimensions, straight from global memory: q_pair(f, d) returns row f's bf16 pair at d, d + 1.
template <int DP, typename QPair>
__device__ __forceinline__ void flash_q_fragments(uint32_t (&qf)[DP / 16][4], int fr0, int fr1,
                                                  int c2, QPair q_pair) {
#pragma unroll
  for (int kk = 0; kk < DP / 16; ++kk) {
    qf[kk][0] = q_pair(fr0, 16 * kk + c2);
    qf[kk][1] = q_pair(fr1, 16 * kk + c2);
    qf[kk][2] = q_pair(fr0, 16 * kk + 8 + c2);
    qf[kk][3] = q_pair(fr1, 16 * kk + 8 + c2);
  }
}

// Copies keys kt0 .. kt0 + KT - 1 of one KV head into stage buf of the shared tiles ks and vs
// ([2][KT][S] each), threads t, t + threads, ... of the block; k0 and v0 point at key 0 of the
// head, keys `width` elements apart. Keys at or past k_end and dimensions past D are zero-filled:
// P is 0 there, and 0 * (stale bytes) could be NaN. One commit group.
template <int DP, int KT, int S>
__device__ __forceinline__ void flash_load_kv_tile(__nv_bfloat16* ks, __nv_bfloat16* vs,
                                                   const __nv_bfloat16* k0, const __nv_bfloat16* v0,
                                                   int64_t width, int D, int kt0, int k_end,
                                                   int buf, int t, int threads) {
  constexpr int kChunks = DP / 8;  // 16-byte chunks per row
  for (int c = t; c < KT * kChunks; c += threads) {
    const int row = c / kChunks, ch = c % kChunks, key = kt0 + row;
    const bool ok = key < k_end && ch * 8 < D;
    const int64_t off = ok ? int64_t(key) * width + ch * 8 : 0;
    cp_async16(ks + (buf * KT + row) * S + ch * 8, k0 + off, ok ? 16 : 0);
    cp_async16(vs + (buf * KT + row) * S + ch * 8, v0 + off, ok ? 16 : 0);
  }
  cp_async_commit();
}

// The key tiles of a block, double-buffered in shared memory: load_tile(j) issues tile j's copies
// (one commit group), use_tile(j) works on it once it has landed, and tile j + 1 is in flight
// meanwhile. Then each row's sum l (kept by the four lanes of a quad) is completed across them.
// kWarpOwnTiles: each warp walks tiles of its own (its own stages), so only the warp synchronises.
template <bool kWarpOwnTiles = false, int DP, typename Load, typename Use>
__device__ __forceinline__ void flash_walk_tiles(int n_tiles, Load load_tile, Use use_tile,
                                                 FlashRowState<DP>& st) {
  auto sync = [] {
    if constexpr (kWarpOwnTiles)
      __syncwarp();
    else
      __syncthreads();
  };
  float &l0 = st.l0, &l1 = st.l1;
  if (n_tiles > 0) load_tile(0);
  for (int j = 0; j < n_tiles; ++j) {
    if (j + 1 < n_tiles) {
      load_tile(j + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    sync();
    use_tile(j);
    sync();  // the next iteration's copy refills this stage
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
}

}  // namespace mind4::cuda
