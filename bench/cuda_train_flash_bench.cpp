// The fused training attention (src/cuda/train_flash.cu) at issue 5's shape: 16 sequences of 1024
// positions, 12 query heads and 4 KV heads of 64, one layer (arg: window, 0 = full, 128 = the
// windowed layers). Timed with CUDA events (manual time); FLOP/s counted on the visible (query
// head, key) pairs only, masked work not counted: 4 D per pair forward (q.k, p.v), 10 D per pair
// backward (q.k again, dO.v, and the dq, dk, dv products). The backward's time includes its
// preprocessing (delta, the sink gradient) and the zeroing of dqkv.
#ifdef MIND4_HAVE_CUDA

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

#include "cuda/buffer.h"
#include "cuda/train_kernels.h"
#include "cuda_bench_util.h"

namespace {

using mind4::cuda::ActType;
using mind4::cuda::DeviceBuffer;
namespace cb = mind4::cuda_bench;
using cb::Dist;

constexpr int kTfbB = 16, kTfbS = 1024, kTfbNH = 12, kTfbNKV = 4, kTfbD = 64;
constexpr float kTfbScale = 0.125f;  // 1 / sqrt(64)

double tfb_visible_pairs(int window) {
  double pairs = 0;
  for (int s = 0; s < kTfbS; ++s) pairs += window > 0 ? std::min(s + 1, window) : s + 1;
  return pairs * kTfbB * kTfbNH;
}

struct TfbData {
  DeviceBuffer qkv, sinks, out, lse, dout, dqkv, dsinks, scratch;
  explicit TfbData(int window) {
    const size_t NT = size_t(kTfbB) * kTfbS, QKV = size_t(kTfbNH + 2 * kTfbNKV) * kTfbD;
    qkv = cb::random_bf16(NT * QKV, 1.0f, 11, Dist::kUniform);
    sinks = cb::random_f32(kTfbNH, 1.0f, 12, Dist::kUniform);
    dout = cb::random_bf16(NT * kTfbNH * kTfbD, 1.0f, 13, Dist::kUniform);
    out = DeviceBuffer(NT * kTfbNH * kTfbD * 2);
    lse = DeviceBuffer(NT * kTfbNH * 4);
    dqkv = DeviceBuffer(NT * QKV * 4);
    dsinks = DeviceBuffer(kTfbNH * 4);
    scratch =
        DeviceBuffer(size_t(mind4::cuda::train_flash_bwd_scratch_floats(kTfbB, kTfbS, kTfbNH)) * 4);
    forward(window);  // the backward's out and lse
    mind4::cuda::check(cudaDeviceSynchronize(), "bench train flash setup");
  }
  void forward(int window) {
    mind4::cuda::train_flash_attention_fwd(ActType::kBF16, qkv.data(), sinks.data<float>(), kTfbB,
                                           kTfbS, kTfbNH, kTfbNKV, kTfbD, window, kTfbScale,
                                           out.data(), lse.data<float>(), nullptr);
  }
  void backward(int window) {
    mind4::cuda::train_flash_attention_bwd(
        ActType::kBF16, qkv.data(), out.data(), dout.data(), lse.data<float>(), sinks.data<float>(),
        kTfbB, kTfbS, kTfbNH, kTfbNKV, kTfbD, window, kTfbScale, dqkv.data<float>(),
        dsinks.data<float>(), scratch.data<float>(), nullptr);
  }
};

void BM_CudaTrainFlashForward(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const int window = int(state.range(0));
  TfbData d(window);
  cb::time_launches(state, 10, [&] { d.forward(window); });
  cb::set_flops_per_second(state, 4.0 * kTfbD * tfb_visible_pairs(window));
}
BENCHMARK(BM_CudaTrainFlashForward)
    ->Arg(0)
    ->Arg(128)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

void BM_CudaTrainFlashBackward(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const int window = int(state.range(0));
  TfbData d(window);
  cb::time_launches(state, 10, [&] { d.backward(window); });
  cb::set_flops_per_second(state, 10.0 * kTfbD * tfb_visible_pairs(window));
}
BENCHMARK(BM_CudaTrainFlashBackward)
    ->Arg(0)
    ->Arg(128)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

#endif  // MIND4_HAVE_CUDA
