// The fused decode chain's kernels (kernels.h, "fused decode chain") at gpt-oss-20b's shapes,
// timed with CUDA events like cuda_kernels_bench.cpp, each next to what it replaces: the bf16
// GEMVs with fused epilogues against cuBLAS at the same shape, the one-launch router against the
// three launches it replaces. Weights rotate over copies larger than the L2 cache together, so each
// launch streams them from memory as a decode step does. Counter: bytes of weights per second.
#ifdef MIND4_HAVE_CUDA

#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/kernels.h"

namespace {

using mind4::cuda::ActType;
using mind4::cuda::DeviceBuffer;

constexpr int kDbH = 2880, kDbI = 2880, kDbE = 32, kDbK = 4, kDbNH = 64, kDbNKV = 8, kDbD = 64;
constexpr int kDbCopies = 4;  // 4 x 29.5 MB (QKV) > the 50 MB L2 of an H100

bool dcb_gpu(benchmark::State& state) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    state.SkipWithError("no CUDA GPU on this machine");
    return false;
  }
  return true;
}

uint64_t dcb_mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Random bytes in [lo, hi]; as bf16 pairs with lo = 0x00, hi = 0xff and every second byte kept
// below 0x40 they are finite values of moderate size.
DeviceBuffer dcb_bytes(size_t n, uint8_t lo, uint8_t hi, uint64_t seed, bool bf16 = false) {
  std::vector<uint8_t> h(n);
  for (size_t i = 0; i < n; ++i) {
    h[i] = uint8_t(lo + dcb_mix(seed * 0x100000000ull + i) % (hi - lo + 1));
    if (bf16 && i % 2 == 1) h[i] = uint8_t(0x3c + (h[i] & 1) + (h[i] & 0x80));  // +-2^-7..2^-6
  }
  DeviceBuffer d(n);
  mind4::cuda::check(cudaMemcpy(d.data(), h.data(), n, cudaMemcpyHostToDevice), "bench");
  return d;
}

DeviceBuffer dcb_floats(size_t n, float scale, uint64_t seed) {
  std::vector<float> h(n);
  for (size_t i = 0; i < n; ++i)
    h[i] = (float(dcb_mix(seed * 0x100000000ull + i) % 65536) / 32768.0f - 1.0f) * scale;
  DeviceBuffer d(n * 4);
  mind4::cuda::check(cudaMemcpy(d.data(), h.data(), n * 4, cudaMemcpyHostToDevice), "bench");
  return d;
}

template <typename F>
void dcb_time(benchmark::State& state, int reps, F&& launch) {
  cudaEvent_t start, stop;
  mind4::cuda::check(cudaEventCreate(&start), "bench");
  mind4::cuda::check(cudaEventCreate(&stop), "bench");
  for (int r = 0; r < kDbCopies; ++r) launch(r);
  mind4::cuda::check(cudaDeviceSynchronize(), "bench warm-up");
  for (auto _ : state) {
    cudaEventRecord(start);
    for (int r = 0; r < reps; ++r) launch(r % kDbCopies);
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

// QKV projection of B rows. Arg 1: 0 = cuBLAS + qkv_bias_rope (before), 1 = decode_qkv_rope.
void BM_CudaDecodeQkv(benchmark::State& state) {
  if (!dcb_gpu(state)) return;
  const int B = int(state.range(0)), fused = int(state.range(1));
  const int N = (kDbNH + 2 * kDbNKV) * kDbD, P = 256;
  std::vector<DeviceBuffer> w;
  for (int c = 0; c < kDbCopies; ++c)
    w.push_back(dcb_bytes(size_t(N) * kDbH * 2, 0, 255, 10 + c, true));
  auto x = dcb_bytes(size_t(B) * kDbH * 2, 0, 255, 1, true);
  auto bias = dcb_floats(N, 0.1f, 2), cos_t = dcb_floats(size_t(P) * kDbD / 2, 1.0f, 3),
       sin_t = dcb_floats(size_t(P) * kDbD / 2, 1.0f, 4);
  std::vector<int> pos_h(B, 100), slot_h(B);
  for (int b = 0; b < B; ++b) slot_h[b] = b;
  DeviceBuffer pos(B * 4), slot(B * 4), qkv(size_t(B) * N * 2),
      k(size_t(B) * P * kDbNKV * kDbD * 2), v(size_t(B) * P * kDbNKV * kDbD * 2);
  mind4::cuda::check(cudaMemcpy(pos.data(), pos_h.data(), B * 4, cudaMemcpyHostToDevice), "bench");
  mind4::cuda::check(cudaMemcpy(slot.data(), slot_h.data(), B * 4, cudaMemcpyHostToDevice),
                     "bench");
  cublasHandle_t blas = nullptr;
  mind4::cuda::check(cublasCreate(&blas), "cublasCreate");
  const mind4::cuda::KvLayer kv{k.data(), v.data(), P};
  dcb_time(state, 20, [&](int c) {
    if (fused) {
      mind4::cuda::decode_qkv_rope(x.data(), w[c].data(), bias.data<float>(), B, kDbH, kDbNH,
                                   kDbNKV, kDbD, cos_t.data<float>(), sin_t.data<float>(),
                                   pos.data<int>(), slot.data<int>(), qkv.data(), kv, nullptr);
    } else {
      mind4::cuda::linear(blas, ActType::kBF16, x.data(), B, kDbH, w[c].data(), N, qkv.data(),
                          false);
      mind4::cuda::qkv_bias_rope(ActType::kBF16, qkv.data(), bias.data<float>(),
                                 cos_t.data<float>(), sin_t.data<float>(), pos.data<int>(),
                                 slot.data<int>(), B, kDbNH, kDbNKV, kDbD, kv, nullptr);
    }
  });
  cublasDestroy(blas);
  state.counters["bytes_per_second"] =
      benchmark::Counter(double(N) * kDbH * 2, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaDecodeQkv)
    ->Args({1, 0})
    ->Args({1, 1})
    ->Args({4, 0})
    ->Args({4, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Out projection of B rows into the residual. Arg 1: 0 = cuBLAS (+ the norm's residual add,
// not timed here), 1 = decode_linear_residual.
void BM_CudaDecodeOutProj(benchmark::State& state) {
  if (!dcb_gpu(state)) return;
  const int B = int(state.range(0)), fused = int(state.range(1)), K = kDbNH * kDbD;
  std::vector<DeviceBuffer> w;
  for (int c = 0; c < kDbCopies; ++c)
    w.push_back(dcb_bytes(size_t(kDbH) * K * 2, 0, 255, 20 + c, true));
  auto x = dcb_bytes(size_t(B) * K * 2, 0, 255, 5, true);
  auto bias = dcb_floats(kDbH, 0.1f, 6), resid = dcb_floats(size_t(B) * kDbH, 1.0f, 7);
  DeviceBuffer proj(size_t(B) * kDbH * 2);
  cublasHandle_t blas = nullptr;
  mind4::cuda::check(cublasCreate(&blas), "cublasCreate");
  dcb_time(state, 20, [&](int c) {
    if (fused)
      mind4::cuda::decode_linear_residual(x.data(), w[c].data(), bias.data<float>(), B, K, kDbH,
                                          resid.data<float>(), nullptr);
    else
      mind4::cuda::linear(blas, ActType::kBF16, x.data(), B, K, w[c].data(), kDbH, proj.data(),
                          false);
  });
  cublasDestroy(blas);
  state.counters["bytes_per_second"] =
      benchmark::Counter(double(kDbH) * K * 2, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CudaDecodeOutProj)
    ->Args({1, 0})
    ->Args({1, 1})
    ->Args({4, 0})
    ->Args({4, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The router of B rows. Arg 1: 0 = cuBLAS f32 product + router_topk_softmax + moe_group,
// 1 = router_group.
void BM_CudaDecodeRouter(benchmark::State& state) {
  if (!dcb_gpu(state)) return;
  const int B = int(state.range(0)), fused = int(state.range(1)), A = B * kDbK;
  auto x = dcb_floats(size_t(B) * kDbH, 1.0f, 8), w = dcb_floats(size_t(kDbE) * kDbH, 0.05f, 9),
       bias = dcb_floats(kDbE, 0.1f, 10);
  DeviceBuffer logits(size_t(B) * kDbE * 4), done(4), experts(A * 4), weights(A * 4),
      groups(size_t(2 * (kDbE + 1) + 3 * A) * 4);
  mind4::cuda::check(cudaMemset(done.data(), 0, 4), "bench");
  int* g = groups.data<int>();
  const mind4::cuda::MoeGroups mg{g, g + (kDbE + 1), g + 2 * (kDbE + 1), g + 2 * (kDbE + 1) + A,
                                  g + 2 * (kDbE + 1) + 2 * A};
  cublasHandle_t blas = nullptr;
  mind4::cuda::check(cublasCreate(&blas), "cublasCreate");
  dcb_time(state, 20, [&](int) {
    if (fused) {
      mind4::cuda::router_group(x.data<float>(), w.data<float>(), bias.data<float>(), B, kDbH, kDbE,
                                kDbK, logits.data<float>(), done.data<unsigned>(),
                                experts.data<int>(), weights.data<float>(), mg, nullptr);
    } else {
      mind4::cuda::linear(blas, ActType::kF32, x.data(), B, kDbH, w.data(), kDbE, logits.data(),
                          true);
      mind4::cuda::router_topk_softmax(logits.data<float>(), bias.data<float>(), B, kDbE, kDbK,
                                       experts.data<int>(), weights.data<float>(), nullptr);
      mind4::cuda::moe_group(experts.data<int>(), A, kDbK, kDbE, mg, nullptr);
    }
  });
  cublasDestroy(blas);
}
BENCHMARK(BM_CudaDecodeRouter)
    ->Args({1, 0})
    ->Args({1, 1})
    ->Args({64, 0})
    ->Args({64, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

#endif  // MIND4_HAVE_CUDA
