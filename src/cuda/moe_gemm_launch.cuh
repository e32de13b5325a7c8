// What the grouped MXFP4 expert GEMMs share on the host (moe_gemm_mf4.cu on mma.sync,
// moe_gemm_mf4_wgmma.cu on wgmma): the launchers' argument checks, and the launch of a kernel over
// (the tile plan's capacity, column tiles of N) with its dynamic shared memory.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/device_util.cuh"

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

}  // namespace mind4::cuda
