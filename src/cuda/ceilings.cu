// Measures the copy bandwidth and the bf16 matrix throughput with CUDA events around repeated
// operations after a warm-up, on random data (zeros run faster on some parts).
#include <algorithm>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/ceilings.h"
#include "cuda/device_util.cuh"

namespace mind4::cuda {
namespace {

__global__ void ceilings_fill_random_bf16(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = __float2bfloat16(float(h & 0xffff) / 65536.0f - 0.5f);
  }
}

template <typename F>
double median_ms(cudaStream_t s, int reps, F&& f) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  f();  // warm-up
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a, s), "cudaEventRecord");
    f();
    check(cudaEventRecord(b, s), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float t = 0;
    check(cudaEventElapsedTime(&t, a, b), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Every 16-byte word of p read once (four independent loads a thread in flight per round); block
// b stores the XOR of the 32-bit words it read in sink[b]. So the loads cannot be removed, and a
// word read twice or not at all changes the XOR of sink (the test checks it against the host).
// One plain store a block: one atomic a warp on a single word took the 29.5 MB read from 12.6 to
// 17.1 us on an H100.
constexpr int kStreamReadThreads = 256;

__global__ void __launch_bounds__(kStreamReadThreads)
    stream_read_kernel(const uint4* __restrict__ p, size_t n, unsigned* __restrict__ sink) {
  constexpr int kUnroll = 4;
  __shared__ uint32_t warp_xor[kStreamReadThreads / 32];
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  uint32_t acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      v[u] = i + u * stride < n ? __ldg(p + i + u * stride) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) warp_xor[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t x = 0;
    for (int w = 0; w < kStreamReadThreads / 32; ++w) x ^= warp_xor[w];
    sink[blockIdx.x] = x;
  }
}

}  // namespace

int stream_read_sink_words() {
  return multiprocessor_count() * 8;
}

void stream_read(const void* p, size_t bytes, unsigned* sink, cudaStream_t stream) {
  MIND4_CUDA_ARG(p && sink && reinterpret_cast<uintptr_t>(p) % 16 == 0 && bytes % 16 == 0,
                 "stream_read", "p 16-byte aligned, bytes a multiple of 16 (", bytes, ")");
  const size_t n = bytes / 16;
  // Eight blocks a multiprocessor (all resident at once), fewer when the range is small: each
  // thread has at least one round of four loads.
  const size_t threads_needed = (n + 3) / 4;
  const int blocks = int(std::max<size_t>(
      1, std::min<size_t>(size_t(stream_read_sink_words()),
                          (threads_needed + kStreamReadThreads - 1) / kStreamReadThreads)));
  stream_read_kernel<<<blocks, kStreamReadThreads, 0, stream>>>(static_cast<const uint4*>(p), n,
                                                                sink);
  check_launch("stream_read");
}

Ceilings measure_ceilings() {
  Ceilings c;
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  c.device = prop.name;
  Stream stream;
  const cudaStream_t s = stream.get();
  {
    const size_t bytes = size_t(1) << 30;
    DeviceBuffer src(bytes), dst(bytes);
    ceilings_fill_random_bf16<<<1024, 256, 0, s>>>(src.data<__nv_bfloat16>(), int64_t(bytes / 2),
                                                   1);
    check_launch("ceilings_fill_random_bf16");
    const double ms = median_ms(s, 10, [&] {
      check(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, s),
            "cudaMemcpyAsync (copy ceiling)");
    });
    c.copy_gb_per_s = 2.0 * bytes / (ms * 1e-3) / 1e9;
  }
  {
    const int n = 8192;
    DeviceBuffer a(size_t(n) * n * 2), b(size_t(n) * n * 2), out(size_t(n) * n * 2);
    ceilings_fill_random_bf16<<<1024, 256, 0, s>>>(a.data<__nv_bfloat16>(), int64_t(n) * n, 2);
    ceilings_fill_random_bf16<<<1024, 256, 0, s>>>(b.data<__nv_bfloat16>(), int64_t(n) * n, 3);
    check_launch("ceilings_fill_random_bf16");
    BlasHandle blas;
    check(cublasSetStream(blas.get(), s), "cublasSetStream");
    const double ms = median_ms(s, 10, [&] {
      linear(blas.get(), ActType::kBF16, a.data(), n, n, b.data(), n, out.data(), false);
    });
    c.bf16_tflops = 2.0 * n * n * double(n) / (ms * 1e-3) / 1e12;
  }
  return c;
}

}  // namespace mind4::cuda
