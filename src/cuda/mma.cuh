// Warp-level tensor-core building blocks of the prefill kernels (flash attention, the MXFP4
// grouped GEMM): asynchronous 16-byte copies into shared memory, ldmatrix, and the bf16
// m16n8k16 MMA with f32 accumulation. Fragment layouts (PTX ISA, "mma.m16n8k16"): lane l holds
//   A (16 x 16, row-major): a0 = (l/4, 2(l%4) + {0,1}), a1 = row + 8, a2 = col + 8, a3 = both;
//   B (16 x 8, "col"):      b0 = (k 2(l%4) + {0,1}, n l/4), b1 = k + 8;
//   C (16 x 8):             c0,c1 = (l/4, 2(l%4) + {0,1}), c2,c3 = row + 8.
// ldmatrix (non-transposed) of an 8 x 8 bf16 matrix stored by rows hands lane l the pair
// (row l/4, cols 2(l%4) + {0,1}): the A layout of rows, and the B layout when the rows are n.
// With .trans it hands (rows 2(l%4) + {0,1}, col l/4): the B layout when the rows are k.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace mind4::cuda {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; src_bytes < 16 zero-fills the rest (0: all zeros, and
// src is not read). dst: a shared-memory pointer, or its shared-window address (smem_addr).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
  cp_async16(smem_addr(dst), src, src_bytes);
}
// 4 bytes global -> shared through L1 (cp.async allows 4-byte copies only with .ca); src_bytes < 4
// zero-fills the rest.
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// c += a * b (bf16 inputs, f32 accumulators).
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&p);
}

}  // namespace mind4::cuda
