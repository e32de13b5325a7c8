// Programmatic dependent launch (PDL) for the decode chain. Inside a CUDA graph every kernel
// boundary costs a drain of the last blocks plus a launch; with PDL the next kernel's blocks are
// launched while the previous kernel still runs, do what does not depend on it (issue weight
// loads, compute addresses) and then wait in pdl_wait() until the previous grid has completed and
// its writes are visible. A kernel of this chain must call pdl_wait() in every block, and before
// it reads what the kernel just before it writes or writes what that kernel reads or writes; that
// also keeps the chain transitive (a grid completes only after all its blocks waited).
// pdl_wait() is also where a block lets the next kernel launch: only after its own wait, so at
// most one grid waits beside the running one, and a kernel launches only after the one two before
// it has completed. What that kernel or an earlier one wrote may therefore be read before the wait
// (the decode GEMVs read their residual, bias and routing so). (Letting the next kernel launch at
// the start, as v6 did, let the whole chain launch ahead, every grid waiting on the one before,
// their blocks taking the multiprocessors' warp slots from the kernel that runs: 5-7% slower;
// docs/perf-notes.md.) Outside a PDL launch both instructions are no-ops, so the same kernels
// serve every route.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "cuda/check.h"
#include "cuda/pdl.h"

namespace mind4::cuda {

// (The library is also compiled for targets older than sm_90, where there is no PDL.)
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...) in clusters of cluster_x blocks along x (0: no
// clusters, or the kernel's own __cluster_dims__), with programmatic serialisation when
// pdl_launches is set; a failed launch throws, naming `name`.
template <typename... KernelArgs, typename... Args>
void launch_pdl_clusters(const char* name, void (*kernel)(KernelArgs...), unsigned cluster_x,
                         dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  int n = 0;
  if (pdl_launches) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_x > 0) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n++].val.clusterDim = {cluster_x, 1, 1};
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), name);
  check_launch(name);
}

// Whether `kernel` can run in clusters of `blocks` blocks of `threads` threads on the current
// device: beyond the portable 8, a cluster size must be allowed (non-portable) and the driver must
// count at least one such cluster that fits at once. A refusal is an answer here, not an error to
// keep, so the error state is cleared after one.
template <typename... KernelArgs>
bool cluster_fits(void (*kernel)(KernelArgs...), unsigned blocks, unsigned threads) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(threads);
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim = {blocks, 1, 1};
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  cudaError_t err = cudaSuccess;
  if (blocks > 8)
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return clusters > 0;
}

template <typename... KernelArgs, typename... Args>
void launch_pdl(const char* name, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, Args&&... args) {
  launch_pdl_clusters(name, kernel, 0, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace mind4::cuda
