// The prefill kernels of the CUDA line's bf16 mode at gpt-oss-20b shapes, timed with CUDA events
// (manual time), with FLOP/s counters against the card's matrix ceiling: fused flash attention
// over a 2048-token step (full and 128-token window layers), and the grouped MXFP4 GEMM of the
// experts (mlp1 + SwiGLU, mlp2) for 2048 rows routed evenly over 32 experts.
// (BM_CudaExpertRoutePrefill in cuda_kernels_bench.cpp times the expanded route it replaces.)
#ifdef MIND4_HAVE_CUDA

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/kernels.h"
#include "cuda_bench_util.h"

namespace {

using mind4::cuda::ActType;
using mind4::cuda::DeviceBuffer;

constexpr int kPbH = 2880, kPbI = 2880, kPbE = 32, kPbK = 4, kPbNH = 64, kPbNKV = 8, kPbD = 64;

namespace cb = mind4::cuda_bench;
using cb::Dist;

// One layer's attention over a 2048-token prefill (arg: window, 0 = full). FLOPs: 4 D per
// (query head, visible key) pair (q.k and p.v), masked work not counted.
void BM_CudaFlashPrefill(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const int B = 2048, window = int(state.range(0)), QKV = (kPbNH + 2 * kPbNKV) * kPbD;
  const size_t cache = size_t(B) * kPbNKV * kPbD;
  auto k = cb::random_bf16(cache, 1.0f, 1, Dist::kUniform),
       v = cb::random_bf16(cache, 1.0f, 2, Dist::kUniform);
  auto qkv = cb::random_bf16(size_t(B) * QKV, 1.0f, 3, Dist::kUniform);
  auto sinks = cb::random_f32(kPbNH, 1.0f, 4, Dist::kUniform);
  DeviceBuffer out(size_t(B) * kPbNH * kPbD * 2);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::attention_prefill_flash(ActType::kBF16, qkv.data(), kPbNH, kPbNKV, kPbD,
                                         {k.data(), v.data(), B}, 0, 0, sinks.data<float>(), B,
                                         window, 0.125f, out.data(), nullptr);
  });
  double pairs = 0;
  for (int p = 0; p < B; ++p) pairs += window > 0 ? std::min(p + 1, window) : p + 1;
  cb::set_flops_per_second(state, 4.0 * kPbD * kPbNH * pairs);
}
BENCHMARK(BM_CudaFlashPrefill)->Arg(0)->Arg(128)->UseManualTime()->Unit(benchmark::kMicrosecond);

// The experts of one layer for B rows, 4 experts each. Args: 1 = mlp1 + SwiGLU,
// 2 = mlp2 (the tile plan is made once, as a step shares it); routing 0 = spread evenly over the
// 32 experts (256 rows each: whole tiles), 1 = each row's first expert drawn at random (uneven
// counts and partial tiles, as a real step has); the kernel, 0 = mma.sync over 128 x 128 tiles,
// 1 = warpgroup MMA, 2 = mma.sync over 128 x 256 tiles, 3 = mma.sync over 256 x 128 tiles,
// 4 = warpgroup MMA with the weights decoded into registers, 5 = the skinny kernel (16-row tiles).
void moe_gemm_layer(benchmark::State& state, int B) {
  if (!cb::gpu_present(state)) return;
  const int A = B * kPbK, which = int(state.range(0));
  using V = mind4::cuda::MoeGemmVariant;
  const V variant = std::array{V::kMma,     V::kWgmma,     V::kMmaWide,
                               V::kMmaTall, V::kWgmmaRegs, V::kSkinny}[state.range(2)];
  // Filling 400 MB of random weights takes seconds: once per process (never freed).
  struct Weights {
    DeviceBuffer b1, s1, b2, s2, bias1, bias2, x, act;
  };
  static const Weights* w = [] {
    const size_t w1 = size_t(kPbE) * 2 * kPbI * kPbH, w2 = size_t(kPbE) * kPbH * kPbI;
    return new Weights{cb::random_bytes(w1 / 2, 0, 255, 11),
                       cb::random_bytes(w1 / 32, 124, 128, 12),
                       cb::random_bytes(w2 / 2, 0, 255, 13),
                       cb::random_bytes(w2 / 32, 124, 128, 14),
                       cb::random_f32(size_t(kPbE) * 2 * kPbI, 0.1f, 15, Dist::kUniform),
                       cb::random_f32(size_t(kPbE) * kPbH, 0.1f, 16, Dist::kUniform),
                       cb::random_bf16(size_t(2048) * kPbH, 1.0f, 17, Dist::kUniform),
                       cb::random_bf16(size_t(2048) * kPbK * kPbI, 1.0f, 18, Dist::kUniform)};
  }();
  const DeviceBuffer &b1 = w->b1, &s1 = w->s1, &b2 = w->b2, &s2 = w->s2, &bias1 = w->bias1,
                     &bias2 = w->bias2, &x = w->x, &act = w->act;
  std::vector<int> experts = cb::spread_experts(A, kPbE);
  if (state.range(1))
    for (int a = 0; a < A; ++a) {
      const int r = a / kPbK, s = a % kPbK;  // 7 s: distinct experts per row
      experts[a] = int((cb::mix(uint64_t(r) + 99) % kPbE + 7 * s) % kPbE);
    }
  DeviceBuffer groups_buf;
  const mind4::cuda::MoeGroups groups = cb::moe_groups_of(experts, kPbK, kPbE, groups_buf);
  const int tile_rows = mind4::cuda::moe_gemm_tile_rows(variant);
  DeviceBuffer plan(size_t(1 + 2 * mind4::cuda::moe_tile_plan_capacity(A, kPbE, tile_rows)) * 4);
  mind4::cuda::moe_tile_plan(groups.offsets, kPbE, tile_rows, plan.data<int>(), nullptr);
  DeviceBuffer act_out(size_t(A) * kPbI * 2), y(size_t(A) * kPbH * 4);
  cb::time_launches(state, 5, [&] {
    if (which == 1)
      mind4::cuda::moe_mlp1_swiglu_mf4_gemm(variant, ActType::kBF16, x.data(), b1.data<uint8_t>(),
                                            s1.data<uint8_t>(), bias1.data<float>(), groups,
                                            plan.data<int>(), A, kPbE, kPbH, kPbI, 7.0f,
                                            act_out.data(), nullptr);
    else
      mind4::cuda::moe_mlp2_mf4_gemm(variant, ActType::kBF16, act.data(), b2.data<uint8_t>(),
                                     s2.data<uint8_t>(), bias2.data<float>(), groups,
                                     plan.data<int>(), A, kPbE, kPbH, kPbI, y.data<float>(),
                                     nullptr);
  });
  const double n = which == 1 ? 2.0 * kPbI : double(kPbH), k = which == 1 ? kPbH : kPbI;
  cb::set_flops_per_second(state, 2.0 * A * n * k);
}
// At prefill size: 2048 rows.
void BM_CudaMoeGemmPrefill(benchmark::State& state) {
  moe_gemm_layer(state, 2048);
}
BENCHMARK(BM_CudaMoeGemmPrefill)
    ->Args({1, 0, 0})
    ->Args({2, 0, 0})
    ->Args({1, 1, 0})
    ->Args({2, 1, 0})
    ->Args({1, 0, 1})
    ->Args({2, 0, 1})
    ->Args({1, 1, 1})
    ->Args({2, 1, 1})
    ->Args({1, 0, 2})
    ->Args({2, 0, 2})
    ->Args({1, 1, 2})
    ->Args({2, 1, 2})
    ->Args({1, 0, 3})
    ->Args({2, 0, 3})
    ->Args({1, 1, 3})
    ->Args({2, 1, 3})
    ->Args({1, 0, 4})
    ->Args({2, 0, 4})
    ->Args({1, 1, 4})
    ->Args({2, 1, 4})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// At batched-decode size (args: which, routing as above, kernel, rows): 16 and 64 rows, about 2
// and 8 an expert, where each expert's weights are read about once per layer (FLOP/s against the
// matrix ceiling say little here; bytes/s is the figure: every expert's weights once).
void BM_CudaMoeGemmBatched(benchmark::State& state) {
  moe_gemm_layer(state, int(state.range(3)));
  const double values = state.range(0) == 1 ? 2.0 * kPbI * kPbH : double(kPbH) * kPbI;
  cb::set_bytes_per_second(state, kPbE * values * 17.0 / 32.0);  // 4 bits + a scale a 32
}
BENCHMARK(BM_CudaMoeGemmBatched)
    ->ArgsProduct({{1, 2}, {1}, {4, 5}, {16, 64}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

#endif  // MIND4_HAVE_CUDA
