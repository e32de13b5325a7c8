// The experts' padded segments computed on the GPU from moe_group's offsets, so that the rows can
// be placed and gathered while the host still waits for the counts (train_segments.cuh).
#include "cuda/device_util.cuh"
#include "cuda/train_kernels.h"
#include "cuda/train_segments.cuh"

namespace mind4::cuda {
namespace {

__global__ void train_segments_kernel(const int* __restrict__ offsets, int E, int tile,
                                      int uniform_max, int* __restrict__ poffsets) {
  train_segments(offsets, E, tile, uniform_max, poffsets);
}

}  // namespace

void train_expert_segments(const int* offsets, int E, int tile, int uniform_max, int* poffsets,
                           cudaStream_t stream) {
  MIND4_CUDA_ARG(offsets && poffsets, "train_expert_segments", "null pointer");
  MIND4_CUDA_ARG(E > 0 && tile > 0 && uniform_max >= 0, "train_expert_segments", "E = ", E,
                 ", tile = ", tile, ", uniform_max = ", uniform_max);
  train_segments_kernel<<<1, 1, 0, stream>>>(offsets, E, tile, uniform_max, poffsets);
  check_launch("train_expert_segments");
}

}  // namespace mind4::cuda
