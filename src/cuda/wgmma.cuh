// Hopper's warpgroup MMA (wgmma, sm_90a) building blocks shared by the grouped MXFP4 GEMMs:
// the ordering instructions, the proxy fence that makes ordinary shared-memory writes visible to
// the tensor cores, and the two shared-memory matrix descriptors the kernels use. Everything here
// is built only where the translation unit is compiled for sm_90a (a portable PTX pass leaves it
// out; the launchers refuse other cards).
#pragma once

#include <cstdint>

// The 64 f32 accumulators of an m64n128 product as asm operands %0 .. %63 (a brace list for the
// instruction text, and the read-write operand list of the array d).
#define MIND4_WGMMA_D64                      \
  "{"                                        \
  "%0, %1, %2, %3, %4, %5, %6, %7, "         \
  "%8, %9, %10, %11, %12, %13, %14, %15, "   \
  "%16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, " \
  "%40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, " \
  "%56, %57, %58, %59, %60, %61, %62, %63"   \
  "}"
#define MIND4_WGMMA_D64_OPERANDS(d)                                                               \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),    \
      "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),  \
      "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),  \
      "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),  \
      "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),  \
      "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),  \
      "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),  \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

namespace mind4::cuda {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)

// Registers (accumulators, A fragments) written by ordinary instructions are ready for the
// following wgmma.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Wait until at most N committed groups of this warpgroup are still running.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Ordinary shared-memory writes (cp.async, st.shared) become visible to the tensor cores' reads.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Descriptor of a K-major tile in the no-swizzle core-matrix layout: 8 rows x 16 bytes contiguous
// (a core matrix), core matrices along k 128 bytes apart (leading byte offset), groups of 8 rows
// 1024 bytes apart (stride byte offset).
__device__ __forceinline__ uint64_t wgmma_desc_interleaved(uint32_t saddr) {
  return uint64_t((saddr >> 4) & 0x3FFFu) | (uint64_t(128 >> 4) << 16) |
         (uint64_t(1024 >> 4) << 32);
}

// Descriptor of a K-major tile with rows of 128 bytes (64 bf16 along k) in the 128-byte swizzle:
// the 16-byte chunk c of row r sits at r * 128 + ((c ^ (r % 8)) * 16), groups of 8 rows 1024
// bytes apart, the tile 1024-byte aligned. A step of 16 along k starts 32 bytes further on.
__device__ __forceinline__ uint64_t wgmma_desc_swizzle128(uint32_t saddr) {
  return uint64_t((saddr >> 4) & 0x3FFFu) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}
__device__ __forceinline__ int swizzle128_offset(int row, int chunk) {
  return row * 128 + ((chunk ^ (row & 7)) << 4);
}

#endif

}  // namespace mind4::cuda
