// Error checks of the CUDA line. Every runtime and cuBLAS call goes through MIND4_CUDA_CHECK, and
// every launch is followed by cuda::check_launch(name), so that a failure becomes a
// mind4::Error(kDeviceError) naming the call or kernel that failed instead of a later, unrelated
// call reporting it. Plain C++ (no device code): tests include it too.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "mind4/status.h"

namespace mind4::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* what) {
  throw Error(e == cudaErrorMemoryAllocation ? Status::kOutOfMemory : Status::kDeviceError,
              detail::cat("CUDA error in ", what, ": ", cudaGetErrorName(e), " (",
                          cudaGetErrorString(e), ")"));
}

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw_cuda_error(e, what);
}

inline void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(Status::kDeviceError,
                detail::cat("cuBLAS error in ", what, ": ", cublasGetStatusName(s), " (",
                            cublasGetStatusString(s), ")"));
}

// After a kernel launch: a bad configuration shows at once; with MIND4_CUDA_SYNC_CHECK set in
// the environment the launch is also synchronised, so that a fault inside it is named here.
void check_launch(const char* kernel);
// Set while this thread captures a graph (no synchronisation is allowed then).
extern thread_local bool capturing_graph;
// The current device's multiprocessors (asked once per device and remembered).
int multiprocessor_count();

}  // namespace mind4::cuda

#define MIND4_CUDA_CHECK(call) ::mind4::cuda::check((call), #call)
