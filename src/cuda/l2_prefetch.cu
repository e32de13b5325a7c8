// Weights asked into L2 ahead of the kernel that reads them. At batch 1 the decode attention reads
// almost nothing from memory (a few hundred KB of cache at short contexts) and the memory is idle
// while it runs; the out projection after it then streams 23.6 MB (gpt-oss-20b). Launched on a side
// stream when the QKV product ends, this kernel moves the out projection's weights into L2 during
// the attention, so that the projection reads part of them from L2. Each thread asks for
// kL2PrefetchChunk bytes at a time with cp.async.bulk.prefetch.L2, a request the copy engine
// serves on its own, so the kernel holds a few warps and no data. What it can and cannot win
// (every other window the chain leaves idle lost more than it gained) is in docs/perf-notes.md,
// S8.6-S8.7 and S11.1.
#include "cuda/device_util.cuh"

namespace mind4::cuda {
namespace {

constexpr int kL2PrefetchBlocks = 8;  // of one warp; 16 and 32 measured slower on an H100
constexpr int kL2PrefetchChunk = 16 * 1024;

__global__ void l2_prefetch_kernel(const char* __restrict__ p, int64_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int64_t threads = int64_t(gridDim.x) * blockDim.x;
  for (int64_t off = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * kL2PrefetchChunk;
       off < bytes; off += threads * kL2PrefetchChunk) {
    const uint32_t n = uint32_t(bytes - off < kL2PrefetchChunk ? bytes - off : kL2PrefetchChunk);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(n) : "memory");
  }
#endif
}

}  // namespace

void l2_prefetch(const void* p, int64_t bytes, cudaStream_t stream) {
  MIND4_CUDA_ARG(p && bytes >= 0, "l2_prefetch", "null pointer or bytes = ", bytes, " < 0");
  MIND4_CUDA_ARG(reinterpret_cast<uintptr_t>(p) % 16 == 0, "l2_prefetch",
                 "the address must be 16-byte aligned");
  bytes -= bytes % 16;  // whole 16-byte units, never past the region
  if (bytes == 0) return;
  l2_prefetch_kernel<<<kL2PrefetchBlocks, 32, 0, stream>>>(static_cast<const char*>(p), bytes);
  check_launch("l2_prefetch");
}

}  // namespace mind4::cuda
