// Prefill attention on tensor cores, flash-attention style (bf16 mode): the scores never leave the
// chip. A block owns 64 "rows" of one KV head: the flattened (position, query head of the group)
// pairs f = i * G + g of the step's rows i, so the G query heads that share a KV head share every
// K/V tile the block loads, and the rows of a block span only 64 / G positions (a sharp causal
// edge: few masked scores). Keys come in tiles of 64 through a double-buffered cp.async pipeline;
// each of the 4 warps multiplies its 16 rows by the tile with mma.sync (S = Q K^T), folds the
// scores into a running max and sum (online softmax, in log2 units), and adds P V into its f32
// accumulators. Only key tiles that meet the block's causal / sliding-window band are loaded, so
// a windowed layer costs about window / S of a full one. The sink logit joins the denominator at
// the end. f32 mode keeps the exact cuBLAS route (attention.cu).
#include <algorithm>
#include <cmath>

#include "cuda/device_util.cuh"
#include "cuda/mma.cuh"

namespace mind4::cuda {
namespace {

constexpr int kFlashRows = 64;  // flattened (position, head) rows per block, 16 per warp
constexpr int kFlashKeys = 64;  // keys per tile
constexpr int kFlashThreads = 128;
constexpr float kFlashLog2e = 1.4426950408889634f;

// Shared memory of one block: K and V tiles, two stages each, rows padded by 16 bytes so that the
// eight row addresses of an ldmatrix fall in distinct banks.
template <int DP>
constexpr int flash_stride() {
  return DP + 8;
}
template <int DP>
constexpr size_t flash_smem_bytes() {
  return size_t(4) * kFlashKeys * flash_stride<DP>() * sizeof(__nv_bfloat16);
}

__device__ __forceinline__ float flash_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));  // ex2(-inf) = +0
  return y;
}

// DP: the head dimension rounded up to 32, 64 or 128 (dimensions >= D are zero in Q and K).
// k0/v0: the cache of this slot, [positions, NKV * D]; qkv [B, (NH + 2 NKV) D]; out [B, NH D].
template <int DP>
__global__ void __launch_bounds__(kFlashThreads)
    flash_prefill_kernel(const __nv_bfloat16* __restrict__ qkv, int NH, int NKV, int D,
                         const __nv_bfloat16* __restrict__ k0, const __nv_bfloat16* __restrict__ v0,
                         int pos0, int B, const float* __restrict__ sinks, int window,
                         float scale_log2, __nv_bfloat16* __restrict__ out) {
  using bf16 = __nv_bfloat16;
  constexpr int S = flash_stride<DP>(), KT = kFlashKeys;
  extern __shared__ __align__(16) unsigned char flash_smem[];
  bf16* ks = reinterpret_cast<bf16*>(flash_smem);  // [2][KT][S]
  bf16* vs = ks + 2 * KT * S;                      // [2][KT][S]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int G = NH / NKV, kvh = blockIdx.y, total = B * G;
  const int width = NKV * D, QKV = (NH + 2 * NKV) * D;
  // The block's rows, the longest first (the last positions see the most keys).
  const int f0 = (gridDim.x - 1 - blockIdx.x) * kFlashRows;
  const int p_lo = pos0 + f0 / G, p_hi = pos0 + (min(total, f0 + kFlashRows) - 1) / G;
  auto first_key = [&](int p) { return window > 0 ? max(0, p - window + 1) : 0; };
  const int k_begin = first_key(p_lo), k_end = p_hi + 1;
  // Keys in [full_lo, full_hi] are visible to every row of the block: no mask needed there.
  const int full_lo = first_key(p_hi), full_hi = p_lo;

  // This lane's two rows (fragment rows l/4 and l/4 + 8 of the warp's 16); rows past the step are
  // computed like the last row and never stored.
  const int fr0 = f0 + warp * 16 + (lane >> 2), fr1 = fr0 + 8;
  const int pr0 = pos0 + min(fr0, total - 1) / G, pr1 = pos0 + min(fr1, total - 1) / G;
  const int first0 = first_key(pr0), first1 = first_key(pr1);
  // The warp's band of keys (skips tiles that none of its rows sees).
  const int wf_lo = f0 + warp * 16, wf_hi = min(total - 1, wf_lo + 15);
  const bool warp_live = wf_lo < total;
  const int wk_lo = first_key(pos0 + wf_lo / G), wk_hi = pos0 + wf_hi / G;
  const int c2 = 2 * (lane & 3);

  // Q fragments straight from global memory (read once per block).
  uint32_t qf[DP / 16][4];
  auto q_pair = [&](int f, int d) -> uint32_t {
    if (f >= total || d >= D) return 0u;
    const int i = f / G, h = kvh * G + f % G;
    return *reinterpret_cast<const uint32_t*>(qkv + int64_t(i) * QKV + int64_t(h) * D + d);
  };
#pragma unroll
  for (int kk = 0; kk < DP / 16; ++kk) {
    qf[kk][0] = q_pair(fr0, 16 * kk + c2);
    qf[kk][1] = q_pair(fr1, 16 * kk + c2);
    qf[kk][2] = q_pair(fr0, 16 * kk + 8 + c2);
    qf[kk][3] = q_pair(fr1, 16 * kk + 8 + c2);
  }

  const int n_tiles = (k_end - k_begin + KT - 1) / KT;
  auto load_tile = [&](int j) {
    const int kt0 = k_begin + j * KT, buf = j & 1;
    constexpr int kChunks = DP / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < KT * kChunks; c += kFlashThreads) {
      const int row = c / kChunks, ch = c % kChunks, key = kt0 + row;
      // Keys past the block's last row and dimensions past D are zero-filled: P is 0 there, and
      // 0 * (stale cache bytes) could be NaN.
      const bool ok = key < k_end && ch * 8 < D;
      const int64_t off = ok ? int64_t(key) * width + int64_t(kvh) * D + ch * 8 : 0;
      cp_async16(ks + (buf * KT + row) * S + ch * 8, k0 + off, ok ? 16 : 0);
      cp_async16(vs + (buf * KT + row) * S + ch * 8, v0 + off, ok ? 16 : 0);
    }
    cp_async_commit();
  };

  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  float acc[DP / 8][4];
#pragma unroll
  for (int dt = 0; dt < DP / 8; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f;
  const int mi = lane >> 3, ri = lane & 7;  // ldmatrix: this lane's matrix and row address

  if (n_tiles > 0) load_tile(0);
  for (int j = 0; j < n_tiles; ++j) {
    if (j + 1 < n_tiles) {
      load_tile(j + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int kt0 = k_begin + j * KT;
    const bf16* kt = ks + (j & 1) * KT * S;
    const bf16* vt = vs + (j & 1) * KT * S;
    if (warp_live && kt0 <= wk_hi && kt0 + KT > wk_lo) {
      float s[KT / 8][4];
#pragma unroll
      for (int nt = 0; nt < KT / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < DP / 16; ++kk)
#pragma unroll
        for (int nt = 0; nt < KT / 8; nt += 2) {
          uint32_t b[4];
          ldmatrix_x4(b, kt + (8 * (nt + (mi >> 1)) + ri) * S + 16 * kk + 8 * (mi & 1));
          mma_bf16_16816(s[nt], qf[kk], b[0], b[1]);
          mma_bf16_16816(s[nt + 1], qf[kk], b[2], b[3]);
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
          uint32_t b[4];
          ldmatrix_x4_trans(b, vt + (16 * kk + 8 * (mi & 1) + ri) * S + 8 * (dt + (mi >> 1)));
          mma_bf16_16816(acc[dt], pa, b[0], b[1]);
          mma_bf16_16816(acc[dt + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's copy refills this stage
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  auto store_row = [&](int f, float m, float l, int e0) {
    if (f >= total) return;
    const int i = f / G, h = kvh * G + f % G;
    const float sink = sinks[h] * kFlashLog2e, M = fmaxf(m, sink);
    const float fm = flash_exp2(m - M), mult = fm / (l * fm + flash_exp2(sink - M));
    bf16* o = out + int64_t(i) * NH * D + int64_t(h) * D;
#pragma unroll
    for (int dt = 0; dt < DP / 8; ++dt) {
      const int d = 8 * dt + c2;
      if (d < D)
        *reinterpret_cast<uint32_t*>(o + d) =
            pack_bf16x2(acc[dt][e0] * mult, acc[dt][e0 + 1] * mult);
    }
  };
  store_row(fr0, m0, l0, 0);
  store_row(fr1, m1, l1, 2);
}

template <int DP>
void launch_flash_prefill(const void* qkv, int NH, int NKV, int D, const void* k0, const void* v0,
                          int pos0, int B, const float* sinks, int window, float scale, void* out,
                          cudaStream_t stream) {
  constexpr size_t smem = flash_smem_bytes<DP>();
  if constexpr (smem > 48 * 1024) {
    // Per launch, as attention.cu does: the limit belongs to the kernel on the current device.
    check(cudaFuncSetAttribute(flash_prefill_kernel<DP>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "cudaFuncSetAttribute(flash_prefill)");
  }
  const int G = NH / NKV;
  const dim3 grid(unsigned((int64_t(B) * G + kFlashRows - 1) / kFlashRows), unsigned(NKV));
  flash_prefill_kernel<DP><<<grid, kFlashThreads, smem, stream>>>(
      static_cast<const __nv_bfloat16*>(qkv), NH, NKV, D, static_cast<const __nv_bfloat16*>(k0),
      static_cast<const __nv_bfloat16*>(v0), pos0, B, sinks, window, scale * kFlashLog2e,
      static_cast<__nv_bfloat16*>(out));
}

}  // namespace

bool attention_prefill_flash_supported(ActType t, int D) {
  return t == ActType::kBF16 && D > 0 && D % 8 == 0 && D <= 128;
}

void attention_prefill_flash(ActType t, const void* qkv, int NH, int NKV, int D, KvLayer kv,
                             int slot, int pos0, const float* sinks, int B, int window, float scale,
                             void* out, cudaStream_t stream) {
  MIND4_CUDA_ARG(qkv && kv.k && kv.v && sinks && out, "attention_prefill_flash", "null pointer");
  MIND4_CUDA_ARG(attention_prefill_flash_supported(t, D), "attention_prefill_flash", "dtype ",
                 act_name(t), ", D = ", D, " (bf16 only, D a multiple of 8 up to 128)");
  MIND4_CUDA_ARG(NH > 0 && NKV > 0 && NH % NKV == 0, "attention_prefill_flash", "NH = ", NH,
                 ", NKV = ", NKV);
  MIND4_CUDA_ARG(B > 0 && pos0 >= 0 && slot >= 0 && pos0 + B <= kv.positions && window >= 0,
                 "attention_prefill_flash", "B = ", B, ", pos0 = ", pos0,
                 ", positions = ", kv.positions, ", window = ", window);
  MIND4_CUDA_ARG(int64_t(B) * (NH / NKV) < (int64_t(1) << 31) - kFlashRows,
                 "attention_prefill_flash", "B = ", B, " rows of ", NH / NKV, " heads per KV head");
  const int64_t slot_off = int64_t(slot) * kv.positions * NKV * D;
  const auto* k0 = static_cast<const __nv_bfloat16*>(kv.k) + slot_off;
  const auto* v0 = static_cast<const __nv_bfloat16*>(kv.v) + slot_off;
  if (D <= 32)
    launch_flash_prefill<32>(qkv, NH, NKV, D, k0, v0, pos0, B, sinks, window, scale, out, stream);
  else if (D <= 64)
    launch_flash_prefill<64>(qkv, NH, NKV, D, k0, v0, pos0, B, sinks, window, scale, out, stream);
  else
    launch_flash_prefill<128>(qkv, NH, NKV, D, k0, v0, pos0, B, sinks, window, scale, out, stream);
  check_launch("flash_prefill_bf16");
}

}  // namespace mind4::cuda
