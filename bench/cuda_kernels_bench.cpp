// The CUDA line's kernels one by one, timed with CUDA events around the launches (manual time:
// the host's clock would see only the enqueue), at gpt-oss-20b's shapes, with the counter that
// says how close each is to its ceiling: bytes/s for the memory-bound ones (decode GEMV,
// attention decode, RMSNorm, sampling), FLOP/s for the expert route at prefill size. Built into
// mind4_bench when the CUDA line is compiled in; without a GPU each benchmark reports an error.
#ifdef MIND4_HAVE_CUDA

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/kernels.h"

namespace {

using mind4::cuda::ActType;
using mind4::cuda::DeviceBuffer;

// gpt-oss-20b.
constexpr int kCbH = 2880, kCbI = 2880, kCbE = 32, kCbK = 4, kCbNH = 64, kCbNKV = 8, kCbD = 64;
constexpr int kCbV = 201088;

bool cuda_bench_gpu(benchmark::State& state) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    state.SkipWithError("no CUDA GPU on this machine");
    return false;
  }
  return true;
}

// splitmix64: the setup fills hundreds of MB (all experts of a layer), where std::mt19937 and
// std::normal_distribution would take seconds per benchmark.
inline uint64_t cuda_bench_mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Device memory of `bytes` filled with random bytes in [lo, hi] (valid MXFP4 nibbles; scales near
// 2^0 for lo, hi around 127).
DeviceBuffer cuda_bench_random_bytes(size_t bytes, uint8_t lo, uint8_t hi, uint64_t seed) {
  std::vector<uint8_t> h(bytes);
  for (size_t i = 0; i < bytes; ++i)
    h[i] = uint8_t(lo + cuda_bench_mix(seed * 0x100000000ull + i) % (hi - lo + 1));
  DeviceBuffer d(bytes);
  mind4::cuda::check(cudaMemcpy(d.data(), h.data(), bytes, cudaMemcpyHostToDevice), "bench");
  return d;
}

// Roughly normal floats of standard deviation `scale` (a sum of four uniforms).
DeviceBuffer cuda_bench_floats(size_t n, float scale, uint64_t seed) {
  std::vector<float> h(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = cuda_bench_mix(seed * 0x100000000ull + i);
    float sum = 0.0f;
    for (int q = 0; q < 4; ++q) sum += float((r >> (16 * q)) & 0xFFFF) / 65536.0f;
    h[i] = (sum - 2.0f) * 1.7320508f * scale;  // variance of the sum: 4/12
  }
  DeviceBuffer b(n * 4);
  mind4::cuda::check(cudaMemcpy(b.data(), h.data(), n * 4, cudaMemcpyHostToDevice), "bench");
  return b;
}

DeviceBuffer cuda_bench_ints(const std::vector<int>& v) {
  DeviceBuffer b(v.size() * 4);
  mind4::cuda::check(cudaMemcpy(b.data(), v.data(), v.size() * 4, cudaMemcpyHostToDevice), "bench");
  return b;
}

// bf16 activations from random floats.
DeviceBuffer cuda_bench_act(size_t n, uint64_t seed) {
  DeviceBuffer f = cuda_bench_floats(n, 1.0f, seed);
  DeviceBuffer a(n * 2);
  mind4::cuda::convert_to_act(ActType::kBF16, f.data(), false, int64_t(n), a.data(), nullptr);
  mind4::cuda::check(cudaDeviceSynchronize(), "bench");
  return a;
}

// Times `launch` (a few launches per timed iteration so that event resolution does not matter).
template <typename F>
void cuda_bench_time(benchmark::State& state, int reps, F&& launch) {
  cudaEvent_t start, stop;
  mind4::cuda::check(cudaEventCreate(&start), "bench");
  mind4::cuda::check(cudaEventCreate(&stop), "bench");
  launch();  // warm-up (kernel attributes, caches)
  mind4::cuda::check(cudaDeviceSynchronize(), "bench warm-up");
  for (auto _ : state) {
    cudaEventRecord(start);
    for (int r = 0; r < reps; ++r) launch();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(double(ms) / 1e3 / reps);
  }
  mind4::cuda::check(cudaGetLastError(), "bench");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

// Router output for B rows: row r picks experts (r*K + s) % E, so that rows spread evenly.
mind4::cuda::MoeGroups cuda_bench_groups(int B, DeviceBuffer& storage) {
  const int A = B * kCbK;
  std::vector<int> experts(A);
  for (int a = 0; a < A; ++a) experts[a] = (a + a / kCbE) % kCbE;
  DeviceBuffer d_experts = cuda_bench_ints(experts);
  storage = DeviceBuffer(size_t(2 * (kCbE + 1) + 3 * A) * 4);
  int* g = storage.data<int>();
  mind4::cuda::MoeGroups groups{g, g + (kCbE + 1), g + 2 * (kCbE + 1), g + 2 * (kCbE + 1) + A,
                                g + 2 * (kCbE + 1) + 2 * A};
  mind4::cuda::moe_group(d_experts.data<int>(), A, kCbK, kCbE, groups, nullptr);
  mind4::cuda::check(cudaDeviceSynchronize(), "bench moe_group");
  return groups;
}

// The decode expert GEMV (bf16 mode's int8 route): mlp1 + SwiGLU then mlp2 for B rows, four
// experts each. Bytes: the MXFP4 blocks and scales of the experts read.
void BM_CudaMxfp4DecodeGemv(benchmark::State& state) {
  if (!cuda_bench_gpu(state)) return;
  const int B = int(state.range(0)), A = B * kCbK, max_active = std::min(kCbE, A);
  const size_t w1 = size_t(kCbE) * 2 * kCbI * kCbH, w2 = size_t(kCbE) * kCbH * kCbI;
  auto b1 = cuda_bench_random_bytes(w1 / 2, 0, 255, 1),
       s1 = cuda_bench_random_bytes(w1 / 32, 124, 128, 2);
  auto b2 = cuda_bench_random_bytes(w2 / 2, 0, 255, 3),
       s2 = cuda_bench_random_bytes(w2 / 32, 124, 128, 4);
  auto bias1 = cuda_bench_floats(size_t(kCbE) * 2 * kCbI, 0.1f, 5);
  auto bias2 = cuda_bench_floats(size_t(kCbE) * kCbH, 0.1f, 6);
  auto x = cuda_bench_act(size_t(B) * kCbH, 7);
  DeviceBuffer gstore;
  auto groups = cuda_bench_groups(B, gstore);
  DeviceBuffer xq(size_t(B) * kCbH), xd(size_t(B) * kCbH / 32 * 4), act(size_t(A) * kCbI * 2),
      aq(size_t(A) * kCbI), ad(size_t(A) * kCbI / 32 * 4), y(size_t(A) * kCbH * 4);
  cuda_bench_time(state, 20, [&] {
    mind4::cuda::quantize_q8_32(ActType::kBF16, x.data(), B, kCbH, xq.data<int8_t>(),
                                xd.data<float>(), nullptr);
    mind4::cuda::moe_mlp1_swiglu_mf4_q8(ActType::kBF16, xq.data<int8_t>(), xd.data<float>(),
                                        b1.data<uint8_t>(), s1.data<uint8_t>(), bias1.data<float>(),
                                        groups, max_active, kCbH, kCbI, 7.0f, act.data(), nullptr);
    mind4::cuda::quantize_q8_32(ActType::kBF16, act.data(), A, kCbI, aq.data<int8_t>(),
                                ad.data<float>(), nullptr);
    mind4::cuda::moe_mlp2_mf4_q8(aq.data<int8_t>(), ad.data<float>(), b2.data<uint8_t>(),
                                 s2.data<uint8_t>(), bias2.data<float>(), groups, max_active, kCbH,
                                 kCbI, y.data<float>(), nullptr);
  });
  const double per_expert = (2.0 * kCbI * kCbH + double(kCbH) * kCbI) * (0.5 + 1.0 / 32);
  state.counters["bytes_per_second"] =
      benchmark::Counter(per_expert * max_active, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["experts"] = max_active;
}
BENCHMARK(BM_CudaMxfp4DecodeGemv)->Arg(1)->Arg(16)->UseManualTime()->Unit(benchmark::kMicrosecond);

// The expert route at prefill size (the tensor-core route of backend.cu): every expert's mlp1
// expanded from MXFP4 to bf16, then one cuBLAS product per expert over its rows, then the bias and
// SwiGLU. FLOPs: 2 * A * 2I * H of the products.
void BM_CudaExpertRoutePrefill(benchmark::State& state) {
  if (!cuda_bench_gpu(state)) return;
  const int B = int(state.range(0)), A = B * kCbK, rows = A / kCbE;
  const size_t w1 = size_t(kCbE) * 2 * kCbI * kCbH;
  auto b1 = cuda_bench_random_bytes(w1 / 2, 0, 255, 11),
       s1 = cuda_bench_random_bytes(w1 / 32, 124, 128, 12);
  auto bias1 = cuda_bench_floats(size_t(kCbE) * 2 * kCbI, 0.1f, 13);
  auto xg = cuda_bench_act(size_t(A) * kCbH, 14);
  DeviceBuffer w(w1 * 2), h(size_t(A) * 2 * kCbI * 4), act(size_t(A) * kCbI * 2);
  std::vector<int> ge(A);
  for (int a = 0; a < A; ++a) ge[a] = a / rows;
  auto group_expert = cuda_bench_ints(ge);
  mind4::cuda::BlasHandle blas;
  cuda_bench_time(state, 3, [&] {
    mind4::cuda::mf4_expand(ActType::kBF16, b1.data<uint8_t>(), s1.data<uint8_t>(), kCbE * 2 * kCbI,
                            kCbH, w.data(), nullptr);
    for (int e = 0; e < kCbE; ++e)
      mind4::cuda::linear(blas.get(), ActType::kBF16, xg.data<char>() + size_t(e) * rows * kCbH * 2,
                          rows, kCbH, w.data<char>() + size_t(e) * 2 * kCbI * kCbH * 2, 2 * kCbI,
                          h.data<float>() + size_t(e) * rows * 2 * kCbI, true);
    mind4::cuda::moe_bias_swiglu(ActType::kBF16, h.data<float>(), bias1.data<float>(),
                                 group_expert.data<int>(), A, kCbI, 7.0f, act.data(), nullptr);
  });
  state.counters["flops_per_second"] =
      benchmark::Counter(2.0 * A * 2 * kCbI * kCbH, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaExpertRoutePrefill)->Arg(2048)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Attention decode: B sequences, one query row each, over `keys` cached positions (full
// attention, flash-decoding splits as the backend picks them). Bytes: the K and V rows read.
void BM_CudaAttentionDecode(benchmark::State& state) {
  if (!cuda_bench_gpu(state)) return;
  const int B = int(state.range(0)), keys = int(state.range(1));
  const int QKV = (kCbNH + 2 * kCbNKV) * kCbD;
  const size_t cache = size_t(B) * keys * kCbNKV * kCbD;
  auto k = cuda_bench_act(cache, 21), v = cuda_bench_act(cache, 22);
  auto qkv = cuda_bench_act(size_t(B) * QKV, 23);
  auto sinks = cuda_bench_floats(kCbNH, 1.0f, 24);
  std::vector<int> pos(B, keys - 1), slot(B);
  for (int b = 0; b < B; ++b) slot[b] = b;
  auto d_pos = cuda_bench_ints(pos), d_slot = cuda_bench_ints(slot);
  const int splits = mind4::cuda::attention_splits(B, kCbNH, keys, 64);
  DeviceBuffer partial(size_t(B) * kCbNH * splits * (kCbD + 2) * 4),
      out(size_t(B) * kCbNH * kCbD * 2);
  const mind4::cuda::KvLayer kv{k.data(), v.data(), keys};
  cuda_bench_time(state, 20, [&] {
    mind4::cuda::attention(ActType::kBF16, qkv.data(), kCbNH, kCbNKV, kCbD, kv, d_pos.data<int>(),
                           d_slot.data<int>(), sinks.data<float>(), B, 0, 0.125f, splits,
                           partial.data<float>(), out.data(), nullptr);
  });
  state.counters["bytes_per_second"] =
      benchmark::Counter(2.0 * double(cache) * 2, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["splits"] = splits;
}
BENCHMARK(BM_CudaAttentionDecode)
    ->Args({1, 4096})
    ->Args({16, 4096})
    ->Args({64, 4096})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Residual add + RMSNorm of B rows (bf16 out). Bytes: x read and written (f32), the delta read
// (bf16), the output written (bf16).
void BM_CudaRmsNorm(benchmark::State& state) {
  if (!cuda_bench_gpu(state)) return;
  const int B = int(state.range(0));
  auto x = cuda_bench_floats(size_t(B) * kCbH, 1.0f, 31);
  auto delta = cuda_bench_act(size_t(B) * kCbH, 32);
  auto bias = cuda_bench_floats(kCbH, 0.1f, 33), scale = cuda_bench_floats(kCbH, 1.0f, 34);
  DeviceBuffer out(size_t(B) * kCbH * 2);
  cuda_bench_time(state, 50, [&] {
    mind4::cuda::residual_rmsnorm(ActType::kBF16, x.data<float>(), delta.data(), bias.data<float>(),
                                  scale.data<float>(), B, kCbH, 1e-5f, out.data(), nullptr,
                                  nullptr);
  });
  state.counters["bytes_per_second"] = benchmark::Counter(
      double(B) * kCbH * (4 + 4 + 2 + 2), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaRmsNorm)
    ->Arg(1)
    ->Arg(64)
    ->Arg(2048)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Sampling on the GPU: n sequences of o200k logits, temperature 1 with top-p 0.9 (arg 1 = 0) or
// top-k 50 + top-p 0.9 (arg 1 = 1). Bytes: the logits once (the floor a sampler cannot beat; the
// kernel makes several passes, mostly from L2).
void BM_CudaSampling(benchmark::State& state) {
  if (!cuda_bench_gpu(state)) return;
  const int n = int(state.range(0));
  auto logits = cuda_bench_floats(size_t(n) * kCbV, 2.5f, 41);
  std::vector<mind4::cuda::SampleJob> jobs(n);
  for (int j = 0; j < n; ++j) jobs[j] = {j, 42, uint64_t(j), 0, 0};
  DeviceBuffer d_jobs(jobs.size() * sizeof(jobs[0]));
  mind4::cuda::check(cudaMemcpy(d_jobs.data(), jobs.data(), d_jobs.bytes(), cudaMemcpyHostToDevice),
                     "bench");
  DeviceBuffer out(size_t(n) * sizeof(mind4::cuda::SampleOut));
  mind4::cuda::SampleParams p;
  p.top_p = 0.9f;
  p.top_k = state.range(1) ? 50 : 0;
  cuda_bench_time(state, 5, [&] {
    mind4::cuda::sample_tokens(logits.data<float>(), kCbV, d_jobs.data<mind4::cuda::SampleJob>(), n,
                               nullptr, p, nullptr, out.data<mind4::cuda::SampleOut>(), nullptr);
  });
  state.counters["bytes_per_second"] =
      benchmark::Counter(double(n) * kCbV * 4, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaSampling)
    ->Args({1, 0})
    ->Args({16, 0})
    ->Args({64, 0})
    ->Args({64, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

#endif  // MIND4_HAVE_CUDA
