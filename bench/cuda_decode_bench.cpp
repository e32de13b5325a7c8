// The fused decode chain's kernels (kernels.h, "fused decode chain") at gpt-oss-20b's shapes,
// timed with CUDA events like cuda_kernels_bench.cpp, each next to what it replaces: the bf16
// GEMVs with fused epilogues against cuBLAS at the same shape, the one-launch router against the
// three launches it replaces. Weights rotate over copies larger than the L2 cache together, so each
// launch streams them from memory as a decode step does. Counter: bytes of weights per second.
#ifdef MIND4_HAVE_CUDA

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/kernels.h"
#include "cuda_bench_util.h"

namespace {

using mind4::cuda::ActType;
using mind4::cuda::DeviceBuffer;

constexpr int kDbH = 2880, kDbI = 2880, kDbE = 32, kDbK = 4, kDbNH = 64, kDbNKV = 8, kDbD = 64;
constexpr int kDbCopies = 4;  // 4 x 29.5 MB (QKV) > the 50 MB L2 of an H100

namespace cb = mind4::cuda_bench;
using cb::Dist;

// kDbCopies copies of a bf16 weight matrix of n values (seeds seed, seed + 1, ...): launch c reads
// copy c, so that the launches stream their weights from memory as a decode step does.
std::vector<DeviceBuffer> decode_weight_copies(size_t n, uint64_t seed) {
  std::vector<DeviceBuffer> w;
  for (int c = 0; c < kDbCopies; ++c) w.push_back(cb::random_bf16_bits(n, seed + c));
  return w;
}

// QKV projection of B rows. Arg 1: 0 = cuBLAS + qkv_bias_rope (before), 1 = decode_qkv_rope.
void BM_CudaDecodeQkv(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const int B = int(state.range(0)), fused = int(state.range(1));
  const int N = (kDbNH + 2 * kDbNKV) * kDbD, P = 256;
  const auto w = decode_weight_copies(size_t(N) * kDbH, 10);
  auto x = cb::random_bf16_bits(size_t(B) * kDbH, 1);
  auto bias = cb::random_f32(N, 0.1f, 2, Dist::kUniform),
       cos_t = cb::random_f32(size_t(P) * kDbD / 2, 1.0f, 3, Dist::kUniform),
       sin_t = cb::random_f32(size_t(P) * kDbD / 2, 1.0f, 4, Dist::kUniform);
  std::vector<int> pos_h(B, 100), slot_h(B);
  for (int b = 0; b < B; ++b) slot_h[b] = b;
  auto pos = cb::upload(pos_h), slot = cb::upload(slot_h);
  DeviceBuffer qkv(size_t(B) * N * 2), k(size_t(B) * P * kDbNKV * kDbD * 2),
      v(size_t(B) * P * kDbNKV * kDbD * 2);
  mind4::cuda::BlasHandle blas;
  const mind4::cuda::KvLayer kv{k.data(), v.data(), P};
  cb::time_launches(state, 20, kDbCopies, [&](int c) {
    if (fused) {
      mind4::cuda::decode_qkv_rope(x.data(), w[c].data(), bias.data<float>(), B, kDbH, kDbNH,
                                   kDbNKV, kDbD, cos_t.data<float>(), sin_t.data<float>(),
                                   pos.data<int>(), slot.data<int>(), qkv.data(), kv, nullptr);
    } else {
      mind4::cuda::linear(blas.get(), ActType::kBF16, x.data(), B, kDbH, w[c].data(), N, qkv.data(),
                          false);
      mind4::cuda::qkv_bias_rope(ActType::kBF16, qkv.data(), bias.data<float>(),
                                 cos_t.data<float>(), sin_t.data<float>(), pos.data<int>(),
                                 slot.data<int>(), B, kDbNH, kDbNKV, kDbD, kv, nullptr);
    }
  });
  cb::set_bytes_per_second(state, double(N) * kDbH * 2);
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
  if (!cb::gpu_present(state)) return;
  const int B = int(state.range(0)), fused = int(state.range(1)), K = kDbNH * kDbD;
  const auto w = decode_weight_copies(size_t(kDbH) * K, 20);
  auto x = cb::random_bf16_bits(size_t(B) * K, 5);
  auto bias = cb::random_f32(kDbH, 0.1f, 6, Dist::kUniform),
       resid = cb::random_f32(size_t(B) * kDbH, 1.0f, 7, Dist::kUniform);
  DeviceBuffer proj(size_t(B) * kDbH * 2);
  mind4::cuda::BlasHandle blas;
  cb::time_launches(state, 20, kDbCopies, [&](int c) {
    if (fused)
      mind4::cuda::decode_linear_residual(x.data(), w[c].data(), bias.data<float>(), B, K, kDbH,
                                          resid.data<float>(), nullptr);
    else
      mind4::cuda::linear(blas.get(), ActType::kBF16, x.data(), B, K, w[c].data(), kDbH,
                          proj.data(), false);
  });
  cb::set_bytes_per_second(state, double(kDbH) * K * 2);
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
  if (!cb::gpu_present(state)) return;
  const int B = int(state.range(0)), fused = int(state.range(1)), A = B * kDbK;
  auto x = cb::random_f32(size_t(B) * kDbH, 1.0f, 8, Dist::kUniform),
       w = cb::random_f32(size_t(kDbE) * kDbH, 0.05f, 9, Dist::kUniform),
       bias = cb::random_f32(kDbE, 0.1f, 10, Dist::kUniform);
  DeviceBuffer logits(size_t(B) * kDbE * 4), done(4), experts(A * 4), weights(A * 4), groups;
  mind4::cuda::check(cudaMemset(done.data(), 0, 4), "bench");
  const mind4::cuda::MoeGroups mg = cb::moe_groups_in(A, kDbE, groups);
  mind4::cuda::BlasHandle blas;
  cb::time_launches(state, 20, kDbCopies, [&](int) {
    if (fused) {
      mind4::cuda::router_group(x.data<float>(), w.data<float>(), bias.data<float>(), B, kDbH, kDbE,
                                kDbK, logits.data<float>(), done.data<unsigned>(),
                                experts.data<int>(), weights.data<float>(), mg, nullptr);
    } else {
      mind4::cuda::linear(blas.get(), ActType::kF32, x.data(), B, kDbH, w.data(), kDbE,
                          logits.data(), true);
      mind4::cuda::router_topk_softmax(logits.data<float>(), bias.data<float>(), B, kDbE, kDbK,
                                       experts.data<int>(), weights.data<float>(), nullptr);
      mind4::cuda::moe_group(experts.data<int>(), A, kDbK, kDbE, mg, nullptr);
    }
  });
}
BENCHMARK(BM_CudaDecodeRouter)
    ->Args({1, 0})
    ->Args({1, 1})
    ->Args({64, 0})
    ->Args({64, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The floor for the decode chain's weight-streaming kernels: one kernel that only reads N bytes
// (stream_read), at the sizes a gpt-oss-20b step streams at batch 1 (arg: MB x 10): an expert
// product's 4 experts (mlp2 17.7 MB, mlp1 35.4 MB), the out (23.6 MB) and QKV (29.5 MB)
// projections, the unembedding (1,158 MB). Copies rotate over more than twice the L2.
void BM_CudaStreamRead(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const size_t bytes = size_t(state.range(0)) * 100000 / 16 * 16;
  const int copies = int(std::max<size_t>(1, (size_t(120) << 20) / bytes + 1));
  std::vector<DeviceBuffer> bufs;
  for (int c = 0; c < copies; ++c) bufs.push_back(cb::random_bf16_bits(bytes / 2, 50 + c));
  DeviceBuffer sink(size_t(mind4::cuda::stream_read_sink_words()) * 4);
  cb::time_launches(state, 20, copies, [&](int c) {
    mind4::cuda::stream_read(bufs[c].data(), bytes, sink.data<unsigned>(), nullptr);
  });
  cb::set_bytes_per_second(state, double(bytes));
}
BENCHMARK(BM_CudaStreamRead)
    ->Arg(177)
    ->Arg(236)
    ->Arg(295)
    ->Arg(354)
    ->Arg(11580)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The same floor for a whole decode step at batch 1: the gpt-oss-20b weights a step streams (24
// layers of QKV, out, mlp1 and mlp2 of 4 experts, then the unembedding: 3.7 GB), each matrix read
// by one stream_read launch, 97 launches captured in a CUDA graph as the decode chain is, and
// nothing else. Its time is what one kernel per matrix costs before any arithmetic; the counter
// is the step's bytes per second (items: steps per second = tokens per second at batch 1).
void BM_CudaStreamReadStep(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const size_t mb = 100000;  // sizes in units of 0.1 MB, as BM_CudaStreamRead's
  const size_t layer_sizes[4] = {295 * mb, 236 * mb, 354 * mb, 177 * mb};
  std::vector<DeviceBuffer> bufs;
  size_t total = 0;
  for (int l = 0; l < 24; ++l)
    for (size_t b : layer_sizes) bufs.emplace_back(b), total += b;
  bufs.emplace_back(11580 * mb), total += 11580 * mb;
  DeviceBuffer sink(size_t(mind4::cuda::stream_read_sink_words()) * 4);
  mind4::cuda::Stream stream;
  const cudaStream_t s = stream.get();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  mind4::cuda::check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "capture");
  for (auto& b : bufs) mind4::cuda::stream_read(b.data(), b.bytes(), sink.data<unsigned>(), s);
  mind4::cuda::check(cudaStreamEndCapture(s, &graph), "capture");
  mind4::cuda::check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  // Captured on its own stream (the legacy one cannot capture), replayed on the legacy stream,
  // where time_launches records its events.
  cb::time_launches(state, 5, [&] { cudaGraphLaunch(exec, nullptr); });
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cb::set_bytes_per_second(state, double(total));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CudaStreamReadStep)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

#endif  // MIND4_HAVE_CUDA
