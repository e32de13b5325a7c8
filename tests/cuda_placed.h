// Device arrays placed a chosen number of bytes into their buffer, for the tests of kernels that
// take a 16-byte path where their pointers allow and an element path otherwise: shift 0 keeps
// cudaMalloc's 256-byte alignment, an element's size puts the array off the 16-byte grid.
#pragma once

#ifdef MIND4_HAVE_CUDA

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cuda/buffer.h"
#include "cuda_test_util.h"

namespace mind4::cuda_test {

struct Placed {
  cuda::DeviceBuffer buf;
  size_t shift = 0, bytes = 0;
  template <typename T = void>
  T* p() const {
    return reinterpret_cast<T*>(buf.data<char>() + shift);
  }
  // The first n bytes (all of them by default), after the kernels before have finished.
  std::vector<uint8_t> fetch(size_t n = SIZE_MAX) const {
    n = std::min(n, bytes);
    cuda::check(cudaDeviceSynchronize(), "test kernel");
    std::vector<uint8_t> v(n);
    cuda::check(cudaMemcpy(v.data(), p(), n, cudaMemcpyDeviceToHost), "test download");
    return v;
  }
  std::vector<float> f32(size_t n = SIZE_MAX) const {
    const auto b = fetch(n == SIZE_MAX ? n : n * 4);
    std::vector<float> v(b.size() / 4);
    std::memcpy(v.data(), b.data(), v.size() * 4);
    return v;
  }
  std::vector<float> act(cuda::ActType t, size_t n = SIZE_MAX) const {
    return from_act(fetch(n == SIZE_MAX ? n : n * cuda::act_size(t)), t);
  }
};

inline Placed placed_bytes(const void* bytes, size_t n, size_t shift) {
  Placed d{cuda::DeviceBuffer(n + shift + 1), shift, n};
  cuda::check(cudaMemcpy(d.p(), bytes, n, cudaMemcpyHostToDevice), "test upload");
  return d;
}
template <typename T>
Placed placed(const std::vector<T>& v, size_t shift = 0) {
  return placed_bytes(v.data(), v.size() * sizeof(T), shift);
}
// Activations in dtype t (shift in elements).
inline Placed placed_act(const std::vector<float>& v, cuda::ActType t, size_t shift) {
  return placed(to_act(v, t), shift * cuda::act_size(t));
}
// n bytes of NaN (0xff) where a kernel's output goes.
inline Placed placed_poisoned(size_t n, size_t shift = 0) {
  Placed d{cuda::DeviceBuffer(n + shift + 1), shift, n};
  cuda::check(cudaMemset(d.buf.data(), 0xff, n + shift + 1), "test poison");
  return d;
}

}  // namespace mind4::cuda_test

#endif  // MIND4_HAVE_CUDA
