// Independent products side by side: a few side streams, each with its own cuBLAS handle, forked
// from and joined back into a main stream with events. The trainer runs its experts' products
// through it when their segments differ in size: one product per expert is too small to fill an
// H100 on its own (a few hundred rows of an unbalanced router), so run one after another they
// leave most multiprocessors idle; side by side they share the card. Host-only; move-only owners.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "cuda/buffer.h"
#include "cuda/check.h"

namespace mind4::cuda {

class StreamFan {
 public:
  StreamFan() = default;
  // `lanes` side streams. fp32 products stay plain fp32 (no TF32), as on the main handle.
  explicit StreamFan(int lanes) : lanes_(size_t(lanes)), done_(size_t(lanes)) {
    for (Lane& l : lanes_) {
      check(cublasSetStream(l.blas.get(), l.stream.get()), "cublasSetStream (side stream)");
      check(cublasSetMathMode(l.blas.get(), CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    }
  }
  int size() const { return int(lanes_.size()); }
  // Work queued on `main` so far comes before anything queued on the side streams after this.
  void fork(cudaStream_t main) {
    check(cudaEventRecord(forked_.get(), main), "cudaEventRecord (fork)");
    for (Lane& l : lanes_)
      check(cudaStreamWaitEvent(l.stream.get(), forked_.get(), 0), "cudaStreamWaitEvent (fork)");
  }
  // The cuBLAS handle of lane i (its stream is the lane's).
  cublasHandle_t blas(int i) const { return lanes_[size_t(i) % lanes_.size()].blas.get(); }
  // Work queued on `main` after this waits for everything queued on the side streams.
  void join(cudaStream_t main) {
    for (size_t i = 0; i < lanes_.size(); ++i) {
      check(cudaEventRecord(done_[i].get(), lanes_[i].stream.get()), "cudaEventRecord (join)");
      check(cudaStreamWaitEvent(main, done_[i].get(), 0), "cudaStreamWaitEvent (join)");
    }
  }

 private:
  struct Lane {
    Stream stream;
    BlasHandle blas;
  };
  std::vector<Lane> lanes_;
  Event forked_;
  std::vector<Event> done_;
};

}  // namespace mind4::cuda
