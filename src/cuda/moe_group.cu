// Per-expert token grouping: a counting sort of the step's (row, slot) assignments by expert,
// in one block (a step has at most max_batch_tokens * K assignments). The expert kernels then
// read each active expert's weights once for all its rows. Within an expert the order of rows
// follows atomics and may differ between runs; every row's result is computed independently, so
// the outputs do not.
#include "cuda/moe_group.cuh"

namespace mind4::cuda {
namespace {

constexpr int kGroupThreads = 1024;
constexpr int kGroupMaxExperts = 1024;

__global__ void __launch_bounds__(kGroupThreads)
    moe_group_kernel(const int* __restrict__ experts, int A, int K, int E,
                     int* __restrict__ offsets, int* __restrict__ active,
                     int* __restrict__ group_row, int* __restrict__ group_expert,
                     int* __restrict__ assign_at) {
  __shared__ int count[kGroupMaxExperts];
  moe_group_block(experts, A, K, E, count, {offsets, active, group_row, group_expert, assign_at});
}

}  // namespace

void moe_group(const int* experts, int A, int K, int E, MoeGroups g, cudaStream_t stream) {
  MIND4_CUDA_ARG(experts && g.offsets && g.active && g.group_row && g.group_expert && g.assign_at,
                 "moe_group", "null pointer");
  MIND4_CUDA_ARG(A >= 0 && K > 0 && A % K == 0 && E > 0 && E <= kGroupMaxExperts, "moe_group",
                 "A = ", A, " (a multiple of K = ", K, "), E = ", E, " (at most ", kGroupMaxExperts,
                 ")");
  moe_group_kernel<<<1, kGroupThreads, 0, stream>>>(experts, A, K, E, g.offsets, g.active,
                                                    g.group_row, g.group_expert, g.assign_at);
  check_launch("moe_group_i32");
}

}  // namespace mind4::cuda
