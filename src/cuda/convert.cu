// Weight upload helper: raw checkpoint bytes (bf16 or f32) become the activation dtype on the
// device, so the host never holds a converted copy of a large matrix.
#include <algorithm>

#include "cuda/device_util.cuh"

namespace mind4::cuda {
namespace {

template <typename T>
__global__ void convert_to_act_kernel(const void* __restrict__ src, bool src_bf16, int64_t n,
                                      T* __restrict__ dst) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = src_bf16 ? __uint_as_float(uint32_t(static_cast<const uint16_t*>(src)[i]) << 16)
                             : static_cast<const float*>(src)[i];
    dst[i] = from_f32<T>(v);
  }
}

}  // namespace

void convert_to_act(ActType t, const void* src, bool src_bf16, int64_t n, void* dst,
                    cudaStream_t stream) {
  MIND4_CUDA_ARG(src && dst && n >= 0, "convert_to_act", "null pointer or n = ", n);
  if (n == 0) return;
  const int blocks = int(std::min<int64_t>((n + 255) / 256, 4096));
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    convert_to_act_kernel<T><<<blocks, 256, 0, stream>>>(src, src_bf16, n, static_cast<T*>(dst));
  });
  check_launch(t == ActType::kF32 ? "convert_to_act_f32" : "convert_to_act_bf16");
}

}  // namespace mind4::cuda
