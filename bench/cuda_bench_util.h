// Plumbing of the CUDA benchmarks (cuda_kernels_bench.cpp, cuda_decode_bench.cpp,
// cuda_prefill_bench.cpp): skip without a GPU, fast random device data, router groups, and the
// CUDA-event timing loop. One copy here, so that the three files time and fill the same way.
#pragma once

#ifdef MIND4_HAVE_CUDA

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/kernels.h"

namespace mind4::cuda_bench {

// False (and the benchmark marked as an error) without a GPU: mind4_bench holds the CUDA
// benchmarks whenever the CUDA line is compiled in, also on machines without a card.
inline bool gpu_present(benchmark::State& state) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    state.SkipWithError("no CUDA GPU on this machine");
    return false;
  }
  return true;
}

// splitmix64: the setup fills hundreds of MB (all experts of a layer), where std::mt19937 and
// std::normal_distribution would take seconds per benchmark.
inline uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The random word of element i of the stream `seed` (streams of different seeds do not overlap
// below 2^32 elements).
inline uint64_t mix_at(uint64_t seed, size_t i) {
  return mix(seed * 0x100000000ull + i);
}

template <typename T>
cuda::DeviceBuffer upload(const std::vector<T>& v) {
  cuda::DeviceBuffer d(v.size() * sizeof(T));
  cuda::check(cudaMemcpy(d.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice),
              "bench upload");
  return d;
}

inline std::vector<uint8_t> random_host_bytes(size_t n, uint8_t lo, uint8_t hi, uint64_t seed) {
  std::vector<uint8_t> h(n);
  for (size_t i = 0; i < n; ++i) h[i] = uint8_t(lo + mix_at(seed, i) % (hi - lo + 1));
  return h;
}

// `n` random bytes in [lo, hi] on the device: valid MXFP4 nibbles with 0..255, scales near 2^0
// with 124..128.
inline cuda::DeviceBuffer random_bytes(size_t n, uint8_t lo, uint8_t hi, uint64_t seed) {
  return upload(random_host_bytes(n, lo, hi, seed));
}

// `n` bf16 values made directly from random bits (no conversion pass, for weights of hundreds of
// MB): a random low byte, and a high byte 0x3c or 0x3d with a random sign, so every value is
// finite and of moderate size (+-2^-7..2^-6).
inline cuda::DeviceBuffer random_bf16_bits(size_t n, uint64_t seed) {
  std::vector<uint8_t> h = random_host_bytes(2 * n, 0, 255, seed);
  for (size_t i = 1; i < h.size(); i += 2) h[i] = uint8_t(0x3c + (h[i] & 1) + (h[i] & 0x80));
  return upload(h);
}

// How random floats are drawn. Each benchmark keeps the one it was written with, so that its
// numbers stay comparable across commits.
enum class Dist {
  kUniform,  // uniform in [-scale, scale)
  kNormal,   // roughly normal of standard deviation `scale` (a sum of four uniforms)
};

inline std::vector<float> random_host_floats(size_t n, float scale, uint64_t seed, Dist dist) {
  std::vector<float> h(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = mix_at(seed, i);
    if (dist == Dist::kUniform) {
      h[i] = (float(r >> 40) / float(1 << 24) * 2 - 1) * scale;
    } else {
      float sum = 0.0f;
      for (int q = 0; q < 4; ++q) sum += float((r >> (16 * q)) & 0xFFFF) / 65536.0f;
      h[i] = (sum - 2.0f) * 1.7320508f * scale;  // variance of the sum: 4/12
    }
  }
  return h;
}

inline cuda::DeviceBuffer random_f32(size_t n, float scale, uint64_t seed, Dist dist) {
  return upload(random_host_floats(n, scale, seed, dist));
}

// The same values as random_f32, rounded to bf16 on the device (the activations of the bf16 mode).
inline cuda::DeviceBuffer random_bf16(size_t n, float scale, uint64_t seed, Dist dist) {
  const cuda::DeviceBuffer f = random_f32(n, scale, seed, dist);
  cuda::DeviceBuffer a(n * 2);
  cuda::convert_to_act(cuda::ActType::kBF16, f.data(), false, int64_t(n), a.data(), nullptr);
  cuda::check(cudaDeviceSynchronize(), "bench");  // f is freed on return
  return a;
}

// Router output that spreads A assignments evenly over E experts (each expert gets A / E rows,
// and a row's K experts are distinct while K <= E).
inline std::vector<int> spread_experts(int A, int E) {
  std::vector<int> experts(A);
  for (int a = 0; a < A; ++a) experts[a] = (a + a / E) % E;
  return experts;
}

// The five arrays of MoeGroups for A assignments over E experts, carved out of one buffer that
// `storage` keeps (the caller holds it as long as the groups are used).
inline cuda::MoeGroups moe_groups_in(int A, int E, cuda::DeviceBuffer& storage) {
  storage = cuda::DeviceBuffer(size_t(2 * (E + 1) + 3 * A) * 4);
  int* g = storage.data<int>();
  return {g, g + (E + 1), g + 2 * (E + 1), g + 2 * (E + 1) + A, g + 2 * (E + 1) + 2 * A};
}

// The groups of `experts` (K per row, E experts) as moe_group makes them, in `storage`.
inline cuda::MoeGroups moe_groups_of(const std::vector<int>& experts, int K, int E,
                                     cuda::DeviceBuffer& storage) {
  const int A = int(experts.size());
  const cuda::DeviceBuffer d_experts = upload(experts);
  const cuda::MoeGroups groups = moe_groups_in(A, E, storage);
  cuda::moe_group(d_experts.data<int>(), A, K, E, groups, nullptr);
  cuda::check(cudaDeviceSynchronize(), "bench moe_group");  // d_experts is freed on return
  return groups;
}

// The rate counters of a timed kernel: what one launch moves (bytes) or computes (FLOPs), divided
// by its manual time.
inline void set_bytes_per_second(benchmark::State& state, double bytes) {
  state.counters["bytes_per_second"] =
      benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
}
inline void set_flops_per_second(benchmark::State& state, double flops) {
  state.counters["flops_per_second"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

// Times launch(c) with CUDA events around `reps` launches per iteration (manual time: the host's
// clock would see only the enqueue; several launches so that event resolution does not matter).
// c cycles over `copies`, for benchmarks that rotate their weights over copies larger than the L2
// cache; each copy is launched once untimed first (kernel attributes, caches).
template <typename F>
void time_launches(benchmark::State& state, int reps, int copies, F&& launch) {
  cudaEvent_t start, stop;
  cuda::check(cudaEventCreate(&start), "bench");
  cuda::check(cudaEventCreate(&stop), "bench");
  for (int c = 0; c < copies; ++c) launch(c);
  cuda::check(cudaDeviceSynchronize(), "bench warm-up");
  for (auto _ : state) {
    cudaEventRecord(start);
    for (int r = 0; r < reps; ++r) launch(r % copies);
    cudaEventRecord(stop);
    float ms = 0.0f;
    cudaError_t e = cudaEventSynchronize(stop);
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, start, stop);
    if (e == cudaSuccess) e = cudaGetLastError();
    // A failed launch or a broken context times every iteration as 0 s, and the library would
    // then run iterations without end (a benchmark that "hangs"): stop here and say why.
    if (e != cudaSuccess || ms <= 0.0f) {
      state.SkipWithError(e != cudaSuccess ? cudaGetErrorString(e) : "GPU events timed 0 s");
      break;
    }
    state.SetIterationTime(double(ms) / 1e3 / reps);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

// The same with one copy: launch() takes no argument.
template <typename F>
void time_launches(benchmark::State& state, int reps, F&& launch) {
  time_launches(state, reps, 1, [&](int) { launch(); });
}

}  // namespace mind4::cuda_bench

#endif  // MIND4_HAVE_CUDA
