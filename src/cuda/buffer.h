// RAII owners of the CUDA line: device memory, pinned host memory, a stream, a cuBLAS handle, a
// captured graph. Move-only; destructors never throw (a failure there is ignored: the context is
// already going away).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "cuda/check.h"

namespace mind4::cuda {

// The two allocators the line uses, as plain functions (the runtime's names are overloaded).
inline cudaError_t device_alloc(void** p, size_t bytes) {
  return cudaMalloc(p, bytes);
}
inline cudaError_t device_free(void* p) {
  return cudaFree(p);
}
inline cudaError_t pinned_alloc(void** p, size_t bytes) {
  return cudaMallocHost(p, bytes);
}
inline cudaError_t pinned_free(void* p) {
  return cudaFreeHost(p);
}

// Uninitialised memory of `bytes` from one allocator; data<T>() views it as T. `what` names the
// allocation in the error when it fails.
template <cudaError_t (*Alloc)(void**, size_t), cudaError_t (*Free)(void*)>
class Allocation {
 public:
  Allocation() = default;
  explicit Allocation(size_t bytes, const char* what) : bytes_(bytes) {
    if (bytes) check(Alloc(&ptr_, bytes), what);
  }
  ~Allocation() {
    if (ptr_) Free(ptr_);
  }
  Allocation(Allocation&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Allocation& operator=(Allocation&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;

  template <typename T = void>
  T* data() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Device memory.
class DeviceBuffer : public Allocation<device_alloc, device_free> {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes, const char* what = "cudaMalloc") : Allocation(bytes, what) {}
};

// Page-locked host memory: asynchronous copies from and to it need no staging copy inside the
// driver.
class PinnedBuffer : public Allocation<pinned_alloc, pinned_free> {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes) : Allocation(bytes, "cudaMallocHost") {}
};

class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() {
    if (s_) cudaStreamDestroy(s_);
  }
  Stream(Stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// An event for the host to wait on part of a stream (no timing).
class Event {
 public:
  Event() { check(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "cudaEventCreate"); }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

class BlasHandle {
 public:
  BlasHandle() { check(cublasCreate(&h_), "cublasCreate"); }
  ~BlasHandle() {
    if (h_) cublasDestroy(h_);
  }
  BlasHandle(BlasHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  BlasHandle& operator=(BlasHandle&& o) noexcept {
    std::swap(h_, o.h_);
    return *this;
  }
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

// An instantiated CUDA graph (a captured decode step), replayed with launch().
class Graph {
 public:
  Graph() = default;
  explicit Graph(cudaGraph_t g) {
    check(cudaGraphInstantiate(&exec_, g, 0), "cudaGraphInstantiate");
    cudaGraphDestroy(g);
  }
  ~Graph() {
    if (exec_) cudaGraphExecDestroy(exec_);
  }
  Graph(Graph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
  Graph& operator=(Graph&& o) noexcept {
    std::swap(exec_, o.exec_);
    return *this;
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  void launch(cudaStream_t s) const { check(cudaGraphLaunch(exec_, s), "cudaGraphLaunch"); }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace mind4::cuda
