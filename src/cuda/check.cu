// check_launch: the one place that turns a failed launch into an error naming the kernel.
#include <array>
#include <atomic>
#include <cstdlib>

#include "cuda/check.h"

namespace mind4::cuda {

namespace {
// Read once: MIND4_CUDA_SYNC_CHECK=1 makes every launch synchronous (debugging a fault).
bool cuda_sync_each_launch() {
  static const bool on = [] {
    const char* v = std::getenv("MIND4_CUDA_SYNC_CHECK");
    return v && *v && *v != '0';
  }();
  return on;
}
}  // namespace

thread_local bool capturing_graph = false;

void check_launch(const char* kernel) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && cuda_sync_each_launch() && !capturing_graph) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) throw_cuda_error(e, kernel);
}

int multiprocessor_count() {
  static std::array<std::atomic<int>, 16> known{};  // 0: not asked yet
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  const bool cached = device >= 0 && device < int(known.size());
  int n = cached ? known[device].load(std::memory_order_relaxed) : 0;
  if (n == 0) {
    check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device),
          "cudaDeviceGetAttribute (multiprocessors)");
    if (cached) known[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace mind4::cuda
