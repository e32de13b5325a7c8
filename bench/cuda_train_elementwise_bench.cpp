// The training's elementwise kernels (and the RMSNorms) at issue 5's shape (`mind4 bench-train`
// defaults, bf16): 16 x 1024 rows, hidden 768, intermediate 1024, 8 experts top-2 spread evenly
// over padded segments of 4096 + 192 rows (34304 rows in all, the profile's count), vocabulary
// 32768. One launch of one layer per timing, CUDA events; bytes_per_second counts what must cross
// memory once (inputs read, outputs written; the small tables of biases, weights and indices left
// out).
#ifdef MIND4_HAVE_CUDA

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/kernels.h"
#include "cuda/train_kernels.h"
#include "cuda_bench_util.h"

namespace {

using mind4::cuda::ActType;
using mind4::cuda::DeviceBuffer;
namespace cb = mind4::cuda_bench;
using cb::Dist;

constexpr int kTebNT = 16 * 1024, kTebH = 768, kTebI = 1024, kTebE = 8, kTebK = 2;
constexpr int kTebV = 32768, kTebSegment = 4096 + 192, kTebAP = kTebE * kTebSegment;
constexpr float kTebLimit = 7.0f;

// Row r's slots go to experts r % 8 and (r + 1) % 8: 4096 assignments per expert, each at the
// next row of its expert's padded segment (the 192 rows after them are the gap).
struct TebRouting {
  DeviceBuffer experts, assign_at, offsets, group_row, group_expert, weights, dweights, probs;
  TebRouting() {
    std::vector<int> ex(kTebNT * kTebK), at(kTebNT * kTebK), off(kTebE + 1, 0), row(kTebAP, 0),
        gexp(kTebAP, 0), cursor(kTebE, 0);
    for (int r = 0; r < kTebNT; ++r)
      for (int s = 0; s < kTebK; ++s) {
        const int e = (r + s) % kTebE, i = r * kTebK + s;
        ex[i] = e;
        at[i] = e * kTebSegment + cursor[e]++;
        row[at[i]] = r;
        gexp[at[i]] = e;
      }
    for (int e = 0; e < kTebE; ++e) off[e + 1] = off[e] + cursor[e];
    experts = cb::upload(ex), assign_at = cb::upload(at), offsets = cb::upload(off);
    group_row = cb::upload(row), group_expert = cb::upload(gexp);
    weights = cb::random_f32(size_t(kTebNT) * kTebK, 1.0f, 21, Dist::kUniform);
    dweights = cb::random_f32(size_t(kTebNT) * kTebK, 1.0f, 22, Dist::kUniform);
    probs = cb::random_f32(size_t(kTebNT) * kTebE, 0.25f, 23, Dist::kUniform);
  }
};

void BM_CudaTrainSwigluFwd(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebRouting rt;
  const size_t n = size_t(kTebAP) * kTebI;
  DeviceBuffer h = cb::random_bf16(2 * n, 2.0f, 31, Dist::kNormal);
  DeviceBuffer bias = cb::random_f32(size_t(kTebE) * 2 * kTebI, 0.5f, 32, Dist::kNormal);
  DeviceBuffer h_saved(2 * n * 2), act(n * 2);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_swiglu_fwd(ActType::kBF16, h.data(), bias.data<float>(),
                                  rt.group_expert.data<int>(), kTebAP, kTebI, kTebLimit,
                                  h_saved.data(), act.data(), nullptr);
  });
  cb::set_bytes_per_second(state, double(n) * 2 * (2 + 2 + 1));
}
BENCHMARK(BM_CudaTrainSwigluFwd)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_CudaTrainSwigluBwd(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const size_t n = size_t(kTebAP) * kTebI;
  DeviceBuffer h = cb::random_bf16(2 * n, 2.0f, 33, Dist::kNormal);
  DeviceBuffer dact = cb::random_bf16(n, 1.0f, 34, Dist::kNormal);
  DeviceBuffer dh(2 * n * 2);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_swiglu_bwd(ActType::kBF16, h.data(), dact.data(), kTebAP, kTebI, kTebLimit,
                                  dh.data(), nullptr);
  });
  cb::set_bytes_per_second(state, double(n) * 2 * (2 + 1 + 2));
}
BENCHMARK(BM_CudaTrainSwigluBwd)->UseManualTime()->Unit(benchmark::kMicrosecond);

// The padded segments of TebRouting: expert e's rows from e * kTebSegment (a multiple of the
// fused bias sums' 64-row chunks).
std::vector<int> teb_segments() {
  std::vector<int> seg(kTebE + 1);
  for (int e = 0; e <= kTebE; ++e) seg[e] = e * kTebSegment;
  return seg;
}

// The SwiGLU backward's buffers with its bias sums (both bias-sum benchmarks of it).
struct TebSwigluBwd {
  static constexpr size_t n = size_t(kTebAP) * kTebI;
  std::vector<int> seg = teb_segments();
  DeviceBuffer h = cb::random_bf16(2 * n, 2.0f, 33, Dist::kNormal);
  DeviceBuffer dact = cb::random_bf16(n, 1.0f, 34, Dist::kNormal);
  DeviceBuffer d_seg = cb::upload(seg), dh{2 * n * 2}, dbias{size_t(kTebE) * 2 * kTebI * 4};
  DeviceBuffer partial{size_t(mind4::cuda::train_colsum_scratch_floats(2 * kTebI, kTebE)) * 4};
};

// The SwiGLU backward with the mlp1 bias gradient summed as dh is stored (train_swiglu_bwd_bias's
// fused path): the same bytes as BM_CudaTrainSwigluBwd (the partial sums, 2.2 MB, left out).
void BM_CudaTrainSwigluBwdBias(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebSwigluBwd b;
  constexpr size_t n = TebSwigluBwd::n;
  if (!mind4::cuda::train_swiglu_bwd_bias_fused(b.h.data(), b.dact.data(), kTebI, b.seg.data(),
                                                kTebE, b.dh.data())) {
    state.SkipWithError("the fused path does not take these arguments");
    return;
  }
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_swiglu_bwd_bias(ActType::kBF16, b.h.data(), b.dact.data(), kTebI, kTebLimit,
                                       b.d_seg.data<int>(), b.seg.data(), kTebE, b.dh.data(),
                                       b.partial.data<float>(), b.dbias.data<float>(), nullptr);
  });
  cb::set_bytes_per_second(state, double(n) * 2 * (2 + 1 + 2));
}
BENCHMARK(BM_CudaTrainSwigluBwdBias)->UseManualTime()->Unit(benchmark::kMicrosecond);

// What the fused path replaces: the plain SwiGLU backward, then train_colsum_segments reading dh
// again (bytes: the backward's plus dh read once more).
void BM_CudaTrainSwigluBwdThenColsum(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebSwigluBwd b;
  constexpr size_t n = TebSwigluBwd::n;
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_swiglu_bwd(ActType::kBF16, b.h.data(), b.dact.data(), kTebAP, kTebI,
                                  kTebLimit, b.dh.data(), nullptr);
    mind4::cuda::train_colsum_segments(ActType::kBF16, b.dh.data(), 2 * kTebI, b.d_seg.data<int>(),
                                       kTebE, kTebSegment, 2 * kTebI, b.partial.data<float>(),
                                       b.dbias.data<float>(), nullptr);
  });
  cb::set_bytes_per_second(state, double(n) * 2 * (2 + 1 + 2 + 2));
}
BENCHMARK(BM_CudaTrainSwigluBwdThenColsum)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_CudaTrainCrossEntropy(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const size_t n = size_t(kTebNT) * kTebV;
  // Random bits (small values; the kernel's time does not depend on them): 537M floats drawn on
  // the host would take seconds.
  DeviceBuffer logits = cb::random_bf16_bits(n, 41);
  std::vector<int> tg(kTebNT);
  for (int r = 0; r < kTebNT; ++r) tg[r] = int(cb::mix_at(42, size_t(r)) % kTebV);
  DeviceBuffer targets = cb::upload(tg), loss(size_t(kTebNT) * 4), dlogits(n * 2);
  cb::time_launches(state, 3, [&] {
    mind4::cuda::train_cross_entropy(ActType::kBF16, logits.data(), targets.data<int>(), kTebNT,
                                     kTebV, 1.0f / kTebNT, loss.data<float>(), dlogits.data(),
                                     nullptr);
  });
  cb::set_bytes_per_second(state, double(n) * 2 * 2);
}
BENCHMARK(BM_CudaTrainCrossEntropy)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_CudaTrainRouterBwd(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebRouting rt;
  DeviceBuffer dxe = cb::random_bf16(size_t(kTebAP) * kTebH, 1.0f, 51, Dist::kNormal);
  // With the router product's input gradient folded in, as the trainer runs it.
  DeviceBuffer gate_w = cb::random_bf16(size_t(kTebE) * kTebH, 0.05f, 52, Dist::kNormal);
  DeviceBuffer dlogits(size_t(kTebNT) * kTebE * 2), dt(size_t(kTebNT) * kTebH * 4);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_router_bwd(
        ActType::kBF16, rt.experts.data<int>(), rt.weights.data<float>(), rt.dweights.data<float>(),
        rt.probs.data<float>(), rt.offsets.data<int>(), 0.01f, dxe.data(), rt.assign_at.data<int>(),
        kTebNT, kTebE, kTebK, kTebH, gate_w.data(), dlogits.data(), dt.data<float>(), nullptr);
  });
  cb::set_bytes_per_second(state, double(kTebNT) * kTebH * (kTebK * 2 + 4));
}
BENCHMARK(BM_CudaTrainRouterBwd)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_CudaTrainMoeCombineFwd(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebRouting rt;
  DeviceBuffer xmid = cb::random_f32(size_t(kTebNT) * kTebH, 1.0f, 61, Dist::kNormal);
  DeviceBuffer y = cb::random_bf16(size_t(kTebAP) * kTebH, 1.0f, 62, Dist::kNormal);
  DeviceBuffer bias = cb::random_f32(size_t(kTebE) * kTebH, 0.5f, 63, Dist::kNormal);
  DeviceBuffer xout(size_t(kTebNT) * kTebH * 4);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_moe_combine_fwd(ActType::kBF16, xmid.data<float>(), y.data(),
                                       bias.data<float>(), rt.experts.data<int>(),
                                       rt.assign_at.data<int>(), rt.weights.data<float>(), kTebNT,
                                       kTebK, kTebH, xout.data<float>(), nullptr);
  });
  cb::set_bytes_per_second(state, double(kTebNT) * kTebH * (4 + kTebK * 2 + 4));
}
BENCHMARK(BM_CudaTrainMoeCombineFwd)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_CudaTrainMoeCombineBwd(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebRouting rt;
  DeviceBuffer dx = cb::random_f32(size_t(kTebNT) * kTebH, 1.0f, 71, Dist::kNormal);
  DeviceBuffer y = cb::random_bf16(size_t(kTebAP) * kTebH, 1.0f, 72, Dist::kNormal);
  DeviceBuffer bias = cb::random_f32(size_t(kTebE) * kTebH, 0.5f, 73, Dist::kNormal);
  DeviceBuffer dweights(size_t(kTebNT) * kTebK * 4), dy(size_t(kTebAP) * kTebH * 2);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_moe_combine_bwd(ActType::kBF16, dx.data<float>(), y.data(),
                                       bias.data<float>(), rt.experts.data<int>(),
                                       rt.assign_at.data<int>(), rt.weights.data<float>(), kTebNT,
                                       kTebK, kTebH, dweights.data<float>(), dy.data(), nullptr);
  });
  cb::set_bytes_per_second(state, double(kTebNT) * kTebH * (4 + kTebK * 2 + kTebK * 2));
}
BENCHMARK(BM_CudaTrainMoeCombineBwd)->UseManualTime()->Unit(benchmark::kMicrosecond);

// The combine backward's buffers, as the trainer holds them (both bias-sum benchmarks).
struct TebCombineBwd {
  TebRouting rt;
  std::vector<int> seg = teb_segments();
  DeviceBuffer dx = cb::random_f32(size_t(kTebNT) * kTebH, 1.0f, 71, Dist::kNormal);
  DeviceBuffer y = cb::random_bf16(size_t(kTebAP) * kTebH, 1.0f, 72, Dist::kNormal);
  DeviceBuffer bias = cb::random_f32(size_t(kTebE) * kTebH, 0.5f, 73, Dist::kNormal);
  DeviceBuffer dweights{size_t(kTebNT) * kTebK * 4}, dy{size_t(kTebAP) * kTebH * 2};
  DeviceBuffer d_seg = cb::upload(seg), dbias{size_t(kTebE) * kTebH * 4};
  DeviceBuffer partial{size_t(mind4::cuda::train_colsum_scratch_floats(kTebH, kTebE)) * 4};
};

// The combine backward over grouped rows with the mlp2 bias gradient summed as dy is stored
// (train_moe_combine_bwd_bias's fused path): dx read (f32), y read over the assigned rows, dy
// written whole (its gap rows too, which the plain path zeroes beforehand).
void BM_CudaTrainMoeCombineBwdBias(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebCombineBwd b;
  if (!mind4::cuda::train_moe_combine_bwd_bias_fused(b.dx.data<float>(), b.y.data(),
                                                     b.bias.data<float>(), kTebH, b.seg.data(),
                                                     kTebE, b.dy.data())) {
    state.SkipWithError("the fused path does not take these arguments");
    return;
  }
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_moe_combine_bwd_bias(
        ActType::kBF16, b.dx.data<float>(), b.y.data(), b.bias.data<float>(),
        b.rt.experts.data<int>(), b.rt.assign_at.data<int>(), b.rt.weights.data<float>(),
        b.rt.offsets.data<int>(), b.rt.group_row.data<int>(), kTebNT, kTebK, kTebH,
        b.d_seg.data<int>(), b.seg.data(), kTebE, b.dweights.data<float>(), b.dy.data(),
        b.partial.data<float>(), b.dbias.data<float>(), nullptr);
  });
  cb::set_bytes_per_second(state,
                           double(kTebNT) * kTebH * (4 + kTebK * 2) + double(kTebAP) * kTebH * 2);
}
BENCHMARK(BM_CudaTrainMoeCombineBwdBias)->UseManualTime()->Unit(benchmark::kMicrosecond);

// What the fused path replaces: zero dy, the combine backward over token rows, then
// train_colsum_segments reading dy again (bytes: dx and y read, dy written by the memset, its
// assigned rows written by the kernel, dy read by the column sums).
void BM_CudaTrainMoeCombineBwdThenColsum(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebCombineBwd b;
  cb::time_launches(state, 10, [&] {
    mind4::cuda::check(cudaMemsetAsync(b.dy.data(), 0, b.dy.bytes(), nullptr), "bench zero dy");
    mind4::cuda::train_moe_combine_bwd(
        ActType::kBF16, b.dx.data<float>(), b.y.data(), b.bias.data<float>(),
        b.rt.experts.data<int>(), b.rt.assign_at.data<int>(), b.rt.weights.data<float>(), kTebNT,
        kTebK, kTebH, b.dweights.data<float>(), b.dy.data(), nullptr);
    mind4::cuda::train_colsum_segments(ActType::kBF16, b.dy.data(), kTebH, b.d_seg.data<int>(),
                                       kTebE, kTebSegment, kTebH, b.partial.data<float>(),
                                       b.dbias.data<float>(), nullptr);
  });
  cb::set_bytes_per_second(
      state, double(kTebNT) * kTebH * (4 + kTebK * 2 + kTebK * 2) + double(kTebAP) * kTebH * 2 * 2);
}
BENCHMARK(BM_CudaTrainMoeCombineBwdThenColsum)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_CudaTrainGatherExpertRows(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  TebRouting rt;
  DeviceBuffer x = cb::random_bf16(size_t(kTebNT) * kTebH, 1.0f, 81, Dist::kNormal);
  DeviceBuffer xe(size_t(kTebAP) * kTebH * 2);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::gather_rows(ActType::kBF16, x.data(), rt.group_row.data<int>(), kTebAP, kTebH,
                             xe.data(), nullptr);
  });
  cb::set_bytes_per_second(state, double(kTebAP) * kTebH * 2 * 2);
}
BENCHMARK(BM_CudaTrainGatherExpertRows)->UseManualTime()->Unit(benchmark::kMicrosecond);

// RMSNorm forward with the out bias added into the residual (the MoE norm): x read and written
// (f32), the normed rows written (bf16).
void BM_CudaTrainRmsNormFwd(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  DeviceBuffer x = cb::random_f32(size_t(kTebNT) * kTebH, 1.0f, 91, Dist::kNormal);
  DeviceBuffer add = cb::random_f32(kTebH, 0.01f, 92, Dist::kNormal);
  DeviceBuffer g = cb::random_f32(kTebH, 1.0f, 93, Dist::kNormal);
  DeviceBuffer y(size_t(kTebNT) * kTebH * 2), rstd(size_t(kTebNT) * 4);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_rmsnorm_fwd(ActType::kBF16, x.data<float>(), add.data<float>(),
                                   g.data<float>(), kTebNT, kTebH, 1e-5f, y.data(),
                                   rstd.data<float>(), nullptr);
  });
  cb::set_bytes_per_second(state, double(kTebNT) * kTebH * (4 + 4 + 2));
}
BENCHMARK(BM_CudaTrainRmsNormFwd)->UseManualTime()->Unit(benchmark::kMicrosecond);

// RMSNorm backward accumulating into dx (as the step does): x and dy read, dx read and written.
void BM_CudaTrainRmsNormBwd(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  DeviceBuffer x = cb::random_f32(size_t(kTebNT) * kTebH, 1.0f, 94, Dist::kNormal);
  DeviceBuffer dy = cb::random_f32(size_t(kTebNT) * kTebH, 1.0f, 95, Dist::kNormal);
  DeviceBuffer dx = cb::random_f32(size_t(kTebNT) * kTebH, 1.0f, 96, Dist::kNormal);
  DeviceBuffer g = cb::random_f32(kTebH, 1.0f, 97, Dist::kNormal);
  DeviceBuffer rstd = cb::random_f32(kTebNT, 1.0f, 98, Dist::kUniform);
  cb::time_launches(state, 10, [&] {
    mind4::cuda::train_rmsnorm_bwd(x.data<float>(), g.data<float>(), rstd.data<float>(),
                                   dy.data<float>(), kTebNT, kTebH, true, dx.data<float>(),
                                   nullptr);
  });
  cb::set_bytes_per_second(state, double(kTebNT) * kTebH * 4 * 4);
}
BENCHMARK(BM_CudaTrainRmsNormBwd)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

#endif  // MIND4_HAVE_CUDA
