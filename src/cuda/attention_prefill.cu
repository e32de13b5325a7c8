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
#include "cuda/flash_tile.cuh"
#include "cuda/mma.cuh"

namespace mind4::cuda {
namespace {

constexpr int kFlashRows = 64;  // flattened (position, head) rows per block, 16 per warp
constexpr int kFlashKeys = 64;  // keys per tile
constexpr int kFlashThreads = 128;

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
  flash_q_fragments<DP>(qf, fr0, fr1, c2, q_pair);

  const int n_tiles = (k_end - k_begin + KT - 1) / KT;
  // Keys past the block's last row are zero-filled.
  auto load_tile = [&](int j) {
    flash_load_kv_tile<DP, KT, S>(ks, vs, k0 + int64_t(kvh) * D, v0 + int64_t(kvh) * D, width, D,
                                  k_begin + j * KT, k_end, j & 1, threadIdx.x, kFlashThreads);
  };

  FlashRowState<DP> st;

  flash_walk_tiles(
      n_tiles, load_tile,
      [&](int j) {
        const int kt0 = k_begin + j * KT;
        const bf16* kt = ks + (j & 1) * KT * S;
        const bf16* vt = vs + (j & 1) * KT * S;
        if (warp_live && kt0 <= wk_hi && kt0 + KT > wk_lo)
          flash_tile_forward<DP, KT>(kt, vt, S, qf, kt0, full_lo, full_hi, first0, pr0, first1, pr1,
                                     scale_log2, st);
      },
      st);
  auto store_row = [&](int f, float m, float l, int e0) {
    if (f >= total) return;
    const int i = f / G, h = kvh * G + f % G;
    flash_store_row<DP>(out + int64_t(i) * NH * D + int64_t(h) * D, D, st.acc, e0, m, l,
                        sinks[h] * kFlashLog2e, c2);
  };
  store_row(fr0, st.m0, st.l0, 0);
  store_row(fr1, st.m1, st.l1, 2);
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
