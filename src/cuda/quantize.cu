// Activation quantization for the int8 decode GEMV: one warp per 32 consecutive values (a lane
// each), the block's max |x| by a warp reduction, then round(x / d) with d = max / 127.
#include "cuda/device_util.cuh"
#include "cuda/pdl.cuh"

namespace mind4::cuda {
namespace {

template <typename T>
__global__ void quantize_q8_32_kernel(const T* __restrict__ x, int64_t nblocks,
                                      int8_t* __restrict__ q, float* __restrict__ d) {
  const int64_t blk = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  pdl_wait();
  if (blk >= nblocks) return;  // whole warps leave together (blockDim is a multiple of 32)
  const float v = to_f32(x[blk * 32 + lane]);
  const float scale = q8_scale(warp_max(fabsf(v)));
  q[blk * 32 + lane] = int8_t(q8_round(v, scale));
  if (lane == 0) d[blk] = scale;
}

}  // namespace

void quantize_q8_32(ActType t, const void* x, int rows, int cols, int8_t* q, float* d,
                    cudaStream_t stream) {
  MIND4_CUDA_ARG(x && q && d, "quantize_q8_32", "null pointer");
  MIND4_CUDA_ARG(rows >= 0 && cols > 0 && cols % 32 == 0, "quantize_q8_32", "rows = ", rows,
                 ", cols = ", cols, " (a multiple of 32)");
  const int64_t nblocks = int64_t(rows) * cols / 32;
  if (nblocks == 0) return;
  const int threads = 256;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(t == ActType::kF32 ? "quantize_q8_32_f32" : "quantize_q8_32_bf16",
               quantize_q8_32_kernel<T>, dim3(unsigned((nblocks * 32 + threads - 1) / threads)),
               dim3(threads), 0, stream, static_cast<const T*>(x), nblocks, q, d);
  });
}

}  // namespace mind4::cuda
