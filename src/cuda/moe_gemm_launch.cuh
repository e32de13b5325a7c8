// What the grouped MXFP4 expert GEMMs share on the host (moe_gemm_mf4.cu on mma.sync,
// moe_gemm_mf4_wgmma.cu on wgmma): the launchers' argument checks, and the launch of a kernel over
// (the tile plan's capacity, column tiles of N) with its dynamic shared memory.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "cuda/device_util.cuh"
#include "cuda/kernels.h"

namespace mind4::cuda {

inline void check_moe_gemm_args(const char* launcher, ActType t, int A, int E, int H, int I) {
  MIND4_CUDA_ARG(t == ActType::kBF16, launcher, "dtype ", act_name(t),
                 " (bf16 only; f32 mode keeps the expanded route)");
  MIND4_CUDA_ARG(A >= 0 && E > 0 && H > 0 && H % 32 == 0 && I > 0 && I % 32 == 0, launcher,
                 "A = ", A, ", E = ", E, ", H = ", H, ", I = ", I, " (H and I multiples of 32)");
}

using MoeGemmKernel = void (*)(const __nv_bfloat16*, const int*, const uint8_t*, const uint8_t*,
                               const float*, const int*, const int*, int, int, float, void*);

// out = the grouped product of a (rows a_rows[...], or a's own rows) and the packed weights: grid
// (max_tiles, N / cols), `threads` a block. The shared-memory limit is set per launch (about a
// microsecond; a prefill step has two per layer): it belongs to the kernel on the current device,
// and a function-local flag would race between threads.
inline void launch_moe_gemm(MoeGemmKernel kernel, const char* name, size_t smem, int threads,
                            int cols, const void* a, const int* a_rows, const uint8_t* blocks,
                            const uint8_t* scales, const float* bias, const int* offsets,
                            const int* plan, int max_tiles, int N, int K, float limit, void* out,
                            cudaStream_t stream) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), name);
  const dim3 grid(unsigned(max_tiles), unsigned((N + cols - 1) / cols));
  kernel<<<grid, threads, smem, stream>>>(static_cast<const __nv_bfloat16*>(a), a_rows, blocks,
                                          scales, bias, offsets, plan, N, K, limit, out);
}

// One grouped-GEMM kernel family: its instance for mlp1 (+ clamped SwiGLU, act out) and for mlp2
// (f32 out), their launch shape, and the names its errors carry.
struct MoeGemmFamily {
  MoeGemmKernel swiglu, plain;
  const char* attribute;    // "cudaFuncSetAttribute(<kernel>)"
  const char *mlp1, *mlp2;  // the public launchers' names
  size_t smem;
  int threads, cols;
};

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
                  bias, g.offsets, plan, moe_tile_plan_capacity(A, E), 2 * I, H, limit, act_out,
                  stream);
  check_launch((std::string(f.mlp1) + "_bf16").c_str());
}
inline void moe_mlp2_grouped(const MoeGemmFamily& f, ActType t, const void* act,
                             const uint8_t* blocks, const uint8_t* scales, const float* bias,
                             MoeGroups g, const int* plan, int A, int E, int H, int I, float* y,
                             cudaStream_t stream) {
  MIND4_CUDA_ARG(act && blocks && scales && bias && g.offsets && plan && y, f.mlp2, "null pointer");
  check_moe_gemm_args(f.mlp2, t, A, E, H, I);
  if (A == 0) return;
  launch_moe_gemm(f.plain, f.attribute, f.smem, f.threads, f.cols, act, nullptr, blocks, scales,
                  bias, g.offsets, plan, moe_tile_plan_capacity(A, E), H, I, 0.0f, y, stream);
  check_launch((std::string(f.mlp2) + "_f32").c_str());
}

}  // namespace mind4::cuda
