// What the grouped MXFP4 expert GEMMs share on the host (moe_gemm_mf4.cu on mma.sync,
// moe_gemm_mf4_wgmma.cu on wgmma): the launchers' argument checks, and the launch of a kernel over
// (the tile plan's capacity, column tiles of N) with its dynamic shared memory.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/device_util.cuh"
#include "cuda/kernels.h"
#include "cuda/mma.cuh"

namespace mind4::cuda {

inline void check_moe_gemm_args(const char* launcher, ActType t, int A, int E, int H, int I) {
  MIND4_CUDA_ARG(t == ActType::kBF16, launcher, "dtype ", act_name(t),
                 " (bf16 only; f32 mode keeps the expanded route)");
  MIND4_CUDA_ARG(A >= 0 && E > 0 && H > 0 && H % 32 == 0 && I > 0 && I % 32 == 0, launcher,
                 "A = ", A, ", E = ", E, ", H = ", H, ", I = ", I, " (H and I multiples of 32)");
}

// The e8m0 scale byte s as a bf16 pair: 2^(s - 127) (s = 0: the subnormal 2^-127, as the CPU's
// decode).
__device__ __forceinline__ uint32_t mf4_scale_pair(uint32_t s) {
  const uint32_t sb = s ? s << 7 : 0x40u;
  return sb | (sb << 16);
}

// Packed MXFP4 values expanded to bf16 in the kernels' weight tiles: kWords 32-bit words of one
// block (4 for a whole block of 16 bytes, 32 e2m1 values; 2 for half of one) with the block's e8m0
// scale wsc. lut turns each byte into two values, and one bf16x2 multiply applies the scale
// (mf4_scale_pair; the product with an e2m1 value is exact). store(q, word) receives the q-th 16
// bytes (8 values) of the result.
template <int kWords, typename Store>
__device__ __forceinline__ void moe_expand_mf4_words(const uint32_t* words, uint32_t wsc,
                                                     const uint32_t* lut, Store store) {
  const uint32_t s2u = mf4_scale_pair(wsc);
  const __nv_bfloat162 s2 = *reinterpret_cast<const __nv_bfloat162*>(&s2u);
#pragma unroll
  for (int q = 0; q < kWords; ++q) {
    uint32_t v[4];
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      uint32_t pair = lut[(words[q] >> (8 * b)) & 0xffu];
      __nv_bfloat162 x = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&pair), s2);
      v[b] = *reinterpret_cast<const uint32_t*>(&x);
    }
    store(q, make_uint4(v[0], v[1], v[2], v[3]));
  }
}
// One whole block (16 bytes wq).
template <typename Store>
__device__ __forceinline__ void moe_expand_mf4_block(uint4 wq, uint32_t wsc, const uint32_t* lut,
                                                     Store store) {
  const uint32_t words[4] = {wq.x, wq.y, wq.z, wq.w};
  moe_expand_mf4_words<4>(words, wsc, lut, store);
}

// e2m1 decoding without a table, for the kernels that decode into MMA fragments in registers:
// an e2m1 magnitude (3 bits) picks a byte out of an 8-byte pool with one prmt, so two prmt give
// the high and low bytes of four bf16 values, two more interleave them into two bf16 pairs, and
// two sign-replicating prmt plus an OR put the signs back. One bf16x2 multiply by the block's
// power-of-two scale follows (exact, as in the table-driven expansion above).
__device__ __forceinline__ uint32_t mf4_prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// Bytes 0 and 1 of x hold four e2m1 values (low nibble first): returns them as two bf16 pairs,
// lo = (value 0, value 1) and hi = (value 2, value 3), each times the bf16x2 scale s2.
__device__ __forceinline__ void mf4_decode4(uint32_t x, uint32_t s2, uint32_t& lo, uint32_t& hi) {
  // bf16 of the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6: high bytes, then low bytes, 8 a pool.
  constexpr uint32_t kHi0 = 0x3F3F3F00u, kHi1 = 0x40404040u;
  constexpr uint32_t kLo0 = 0xC0800000u, kLo1 = 0xC0804000u;
  const uint32_t mag = x & 0x7777u;  // selector nibbles with the sign-replicate bit clear
  const uint32_t hb = mf4_prmt(kHi0, kHi1, mag), lb = mf4_prmt(kLo0, kLo1, mag);
  uint32_t v0 = mf4_prmt(lb, hb, 0x5140u), v1 = mf4_prmt(lb, hb, 0x7362u);
  // Signs: bit 7 of byte 0 / 1 of x is value 1's / 3's; shifted by 4, value 0's / 2's. A selector
  // nibble with bit 3 set replicates the chosen byte's top bit; the mask keeps bits 15 and 31.
  const uint32_t xs = x << 4;
  const uint32_t sg0 = mf4_prmt(xs, x, 0xC888u), sg1 = mf4_prmt(xs, x, 0xD999u);
  v0 |= sg0 & 0x80008000u;
  v1 |= sg1 & 0x80008000u;
  const __nv_bfloat162 s = *reinterpret_cast<const __nv_bfloat162*>(&s2);
  const __nv_bfloat162 r0 = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&v0), s);
  const __nv_bfloat162 r1 = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&v1), s);
  lo = *reinterpret_cast<const uint32_t*>(&r0);
  hi = *reinterpret_cast<const uint32_t*>(&r1);
}

// The kernels' epilogue for one lane's accumulators a[0..3]: rows r_lo and r_lo + 8 of the
// tile (valid below `rows`), columns n and n + 1 of expert e's N. kSwiglu: out is act bf16
// [*, N/2], the clamped SwiGLU of the (gate, linear) pair plus bias, lanes l and l ^ 1 (which hold
// neighbouring outputs) pairing up so that the even lane stores row r_lo's two values and the odd
// lane row r_hi's; else out is f32 [*, N] plus bias. Every lane of the warp must call it.
template <bool kSwiglu>
__device__ __forceinline__ void moe_gemm_store(const float* a, const float* __restrict__ bias,
                                               int e, int n, int N, int r_lo, int rows, int row0,
                                               int lane, float limit, void* __restrict__ out) {
  const int r_hi = r_lo + 8;
  const float b0 = bias[int64_t(e) * N + n], b1 = bias[int64_t(e) * N + n + 1];
  if constexpr (kSwiglu) {
    const float v_lo = moe_swiglu(a[0] + b0, a[1] + b1, limit);
    const float v_hi = moe_swiglu(a[2] + b0, a[3] + b1, limit);
    const bool even = (lane & 1) == 0;
    const float other = __shfl_xor_sync(0xffffffffu, even ? v_hi : v_lo, 1);
    const int r = even ? r_lo : r_hi, p = n / 2 - (even ? 0 : 1);
    if (r < rows) {
      __nv_bfloat16* o = static_cast<__nv_bfloat16*>(out) + int64_t(row0 + r) * (N / 2) + p;
      *reinterpret_cast<uint32_t*>(o) = even ? pack_bf16x2(v_lo, other) : pack_bf16x2(other, v_hi);
    }
  } else {
    float* o = static_cast<float*>(out);
    if (r_lo < rows)
      *reinterpret_cast<float2*>(o + int64_t(row0 + r_lo) * N + n) =
          make_float2(a[0] + b0, a[1] + b1);
    if (r_hi < rows)
      *reinterpret_cast<float2*>(o + int64_t(row0 + r_hi) * N + n) =
          make_float2(a[2] + b0, a[3] + b1);
  }
}

// The epilogue of the kernels that multiply weight rows x assignments (the weights as the A
// operand): a lane's two accumulators d0, d1 are weight row n of expert e (its bias row eb) and the
// tile's assignments tok, tok + 1 (rows past `rows`, and n past N, are not stored). For kSwiglu
// the lanes l and l ^ 4 hold rows n and n ^ 1, mlp1's interleaved gate (even) and linear (odd)
// rows: the even row's lane stores the pair's SwiGLU for assignment tok, the odd row's lane for
// tok + 1 (out: act bf16 [*, N/2]); else out is f32 [*, N]. Every lane of the warp must call it.
template <bool kSwiglu>
__device__ __forceinline__ void moe_store_row_pair(float d0, float d1, const float* __restrict__ eb,
                                                   int n, int N, int tok, int rows, int row0,
                                                   float limit, void* __restrict__ out) {
  const bool live = n < N;
  if constexpr (kSwiglu) {
    const bool even = (n & 1) == 0;
    const int i = n >> 1;
    const float other = __shfl_xor_sync(0xffffffffu, even ? d1 : d0, 4);
    const int r = tok + (even ? 0 : 1);
    if (live && r < rows) {
      const float v = even ? moe_swiglu(d0 + eb[2 * i], other + eb[2 * i + 1], limit)
                           : moe_swiglu(other + eb[2 * i], d1 + eb[2 * i + 1], limit);
      static_cast<__nv_bfloat16*>(out)[int64_t(row0 + r) * (N / 2) + i] = __float2bfloat16(v);
    }
  } else {
    if (!live) return;
    float* y = static_cast<float*>(out);
    if (tok < rows) y[int64_t(row0 + tok) * N + n] = d0 + eb[n];
    if (tok + 1 < rows) y[int64_t(row0 + tok + 1) * N + n] = d1 + eb[n];
  }
}

using MoeGemmKernelFn = void (*)(const __nv_bfloat16*, const int*, const uint8_t*, const uint8_t*,
                                 const float*, const int*, const int*, int, int, float, void*);

// out = the grouped product of a (rows a_rows[...], or a's own rows) and the packed weights: grid
// (max_tiles, N / cols), `threads` a block. The shared-memory limit is set per launch (about a
// microsecond; a prefill step has two per layer): it belongs to the kernel on the current device,
// and a function-local flag would race between threads.
inline void launch_moe_gemm(MoeGemmKernelFn kernel, const char* name, size_t smem, int threads,
                            int cols, const void* a, const int* a_rows, const uint8_t* blocks,
                            const uint8_t* scales, const float* bias, const int* offsets,
                            const int* plan, int max_tiles, int N, int K, float limit, void* out,
                            cudaStream_t stream) {
  if (smem > 0)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          name);
  const dim3 grid(unsigned(max_tiles), unsigned((N + cols - 1) / cols));
  kernel<<<grid, threads, smem, stream>>>(static_cast<const __nv_bfloat16*>(a), a_rows, blocks,
                                          scales, bias, offsets, plan, N, K, limit, out);
}

// One grouped-GEMM kernel family: its instance for mlp1 (+ clamped SwiGLU, act out) and for mlp2
// (f32 out), their launch shape, and the names its errors carry.
struct MoeGemmFamily {
  MoeGemmKernelFn swiglu, plain;
  const char* attribute;                  // "cudaFuncSetAttribute(<kernel>)"
  const char *mlp1, *mlp2;                // the public launchers' names
  const char *mlp1_launch, *mlp2_launch;  // what a failed launch is called
  size_t smem;
  int threads, rows, cols;  // rows: assignments per tile (the tile plan's unit)
};

// The Hopper families (their kernels are built for sm_90a only): moe_gemm_mf4_wgmma.cu's and
// moe_gemm_mf4_wgmma_regs.cu's.
const MoeGemmFamily& moe_wgmma_family();
const MoeGemmFamily& moe_wgmma_regs_family();
// moe_gemm_mf4_skinny.cu's (few rows an expert; any card).
const MoeGemmFamily& moe_skinny_family();

// The public launchers of a family: argument checks, then the product over the tile plan.
inline void moe_mlp1_grouped(const MoeGemmFamily& f, ActType t, const void* x,
                             const uint8_t* blocks, const uint8_t* scales, const float* bias,
                             MoeGroups g, const int* plan, int A, int E, int H, int I, float limit,
                             void* act_out, cudaStream_t stream) {
  MIND4_CUDA_ARG(x && blocks && scales && bias && g.offsets && g.group_row && plan && act_out,
                 f.mlp1, "null pointer");
  check_moe_gemm_args(f.mlp1, t, A, E, H, I);
  if (A == 0) return;
  launch_moe_gemm(f.swiglu, f.attribute, f.smem, f.threads, f.cols, x, g.group_row, blocks, scales,
                  bias, g.offsets, plan, moe_tile_plan_capacity(A, E, f.rows), 2 * I, H, limit,
                  act_out, stream);
  check_launch(f.mlp1_launch);
}
inline void moe_mlp2_grouped(const MoeGemmFamily& f, ActType t, const void* act,
                             const uint8_t* blocks, const uint8_t* scales, const float* bias,
                             MoeGroups g, const int* plan, int A, int E, int H, int I, float* y,
                             cudaStream_t stream) {
  MIND4_CUDA_ARG(act && blocks && scales && bias && g.offsets && plan && y, f.mlp2, "null pointer");
  check_moe_gemm_args(f.mlp2, t, A, E, H, I);
  if (A == 0) return;
  launch_moe_gemm(f.plain, f.attribute, f.smem, f.threads, f.cols, act, nullptr, blocks, scales,
                  bias, g.offsets, plan, moe_tile_plan_capacity(A, E, f.rows), H, I, 0.0f, y,
                  stream);
  check_launch(f.mlp2_launch);
}

}  // namespace mind4::cuda
