// The counting sort of a step's (row, slot) assignments by expert, as a block-wide device
// function: moe_group's kernel runs it on its own, and the fused decode router runs it in the
// block that finishes the router (router.cu).
#pragma once

#include "cuda/device_util.cuh"

namespace mind4::cuda {

// experts [A] (global memory, written before a __syncthreads by this block or by an earlier
// kernel); count: E ints of shared memory. Every thread of the block must call it.
__device__ __forceinline__ void moe_group_block(const int* experts, int A, int K, int E, int* count,
                                                MoeGroups g) {
  for (int e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < A; i += blockDim.x) atomicAdd(&count[experts[i]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0, n_active = 0;
    for (int e = 0; e < E; ++e) {
      g.offsets[e] = total;
      const int c = count[e];
      if (c) g.active[1 + n_active++] = e;
      count[e] = total;  // from here on: the fill cursor
      total += c;
    }
    g.offsets[E] = total;
    g.active[0] = n_active;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < A; i += blockDim.x) {
    const int e = experts[i];
    const int at = atomicAdd(&count[e], 1);
    g.group_row[at] = i / K;
    g.group_expert[at] = e;
    g.assign_at[i] = at;
  }
}

// moe_group_block's result for one row of K distinct experts out of E (at most 32 * 8), by one
// warp: every chosen expert holds exactly one assignment, so its offset is the number of chosen
// experts below it, and the fill order cannot differ. The decode router's last block spent about
// half of its time in the general sort's barriers and serial prefix sum. mine: slot `lane`'s
// expert in lanes below K (from the top-k's registers, not read back from memory).
__device__ __forceinline__ void moe_group_one_row(int mine, int K, int E, MoeGroups g) {
  const int lane = threadIdx.x & 31;
  if (lane >= K) mine = -1;
  int rank = 0;   // slot lane's place among the chosen experts, ascending
  if (E <= 32) {  // expert e is lane e: a ballot and a popcount
    bool chosen = false;
    for (int s = 0; s < K; ++s) chosen |= __shfl_sync(0xffffffffu, mine, s) == lane;
    const unsigned mask = __ballot_sync(0xffffffffu, chosen && lane < E);
    const auto below = [&](int e) { return __popc(mask & ((1u << e) - 1u)); };
    if (lane < E) g.offsets[lane] = below(lane);
    rank = below(max(mine, 0));
  } else {  // expert e0 + lane of each 32, counting the K chosen below it
    for (int e0 = 0; e0 < E; e0 += 32) {
      int below = 0;
      for (int s = 0; s < K; ++s) below += __shfl_sync(0xffffffffu, mine, s) < e0 + lane;
      if (e0 + lane < E) g.offsets[e0 + lane] = below;
    }
    for (int s = 0; s < K; ++s) rank += __shfl_sync(0xffffffffu, mine, s) < mine;
  }
  if (lane == 0) g.offsets[E] = K, g.active[0] = K;
  if (lane < K) {
    g.active[1 + rank] = mine;
    g.group_row[rank] = 0;
    g.group_expert[rank] = mine;
    g.assign_at[lane] = rank;
  }
}

}  // namespace mind4::cuda
