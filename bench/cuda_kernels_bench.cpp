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
#include <utility>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/kernels.h"
#include "cuda_bench_util.h"

namespace {

using mind4::cuda::ActType;
using mind4::cuda::DeviceBuffer;

// gpt-oss-20b.
constexpr int kCbH = 2880, kCbI = 2880, kCbE = 32, kCbK = 4, kCbNH = 64, kCbNKV = 8, kCbD = 64;
constexpr int kCbV = 201088;

namespace cb = mind4::cuda_bench;
using cb::Dist;

// The decode expert GEMV (bf16 mode's int8 route): mlp1 + SwiGLU then mlp2 for B rows, four
// experts each. Bytes: the MXFP4 blocks and scales of the experts read.
void BM_CudaMxfp4DecodeGemv(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const int B = int(state.range(0)), A = B * kCbK, max_active = std::min(kCbE, A);
  const int tokens_hint = (A + max_active - 1) / max_active;
  const size_t w1 = size_t(kCbE) * 2 * kCbI * kCbH, w2 = size_t(kCbE) * kCbH * kCbI;
  auto b1 = cb::random_bytes(w1 / 2, 0, 255, 1), s1 = cb::random_bytes(w1 / 32, 124, 128, 2);
  auto b2 = cb::random_bytes(w2 / 2, 0, 255, 3), s2 = cb::random_bytes(w2 / 32, 124, 128, 4);
  auto bias1 = cb::random_f32(size_t(kCbE) * 2 * kCbI, 0.1f, 5, Dist::kNormal);
  auto bias2 = cb::random_f32(size_t(kCbE) * kCbH, 0.1f, 6, Dist::kNormal);
  auto x = cb::random_bf16(size_t(B) * kCbH, 1.0f, 7, Dist::kNormal);
  DeviceBuffer gstore;  // router output: the rows spread evenly over the experts
  auto groups = cb::moe_groups_of(cb::spread_experts(A, kCbE), kCbK, kCbE, gstore);
  DeviceBuffer xq(size_t(B) * kCbH), xd(size_t(B) * kCbH / 32 * 4), act(size_t(A) * kCbI * 2),
      aq(size_t(A) * kCbI), ad(size_t(A) * kCbI / 32 * 4), y(size_t(A) * kCbH * 4);
  cb::time_launches(state, 20, [&] {
    mind4::cuda::quantize_q8_32(ActType::kBF16, x.data(), B, kCbH, xq.data<int8_t>(),
                                xd.data<float>(), nullptr);
    mind4::cuda::moe_mlp1_swiglu_mf4_q8(ActType::kBF16, xq.data<int8_t>(), xd.data<float>(),
                                        b1.data<uint8_t>(), s1.data<uint8_t>(), bias1.data<float>(),
                                        groups, max_active, tokens_hint, kCbH, kCbI, 7.0f,
                                        act.data(), nullptr);
    mind4::cuda::quantize_q8_32(ActType::kBF16, act.data(), A, kCbI, aq.data<int8_t>(),
                                ad.data<float>(), nullptr);
    mind4::cuda::moe_mlp2_mf4_q8(aq.data<int8_t>(), ad.data<float>(), b2.data<uint8_t>(),
                                 s2.data<uint8_t>(), bias2.data<float>(), groups, max_active,
                                 tokens_hint, kCbH, kCbI, y.data<float>(), nullptr);
  });
  const double per_expert = (2.0 * kCbI * kCbH + double(kCbH) * kCbI) * (0.5 + 1.0 / 32);
  cb::set_bytes_per_second(state, per_expert * max_active);
  state.counters["experts"] = max_active;
}
BENCHMARK(BM_CudaMxfp4DecodeGemv)
    ->Arg(1)
    ->Arg(16)
    ->Arg(64)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The expert route at prefill size (the tensor-core route of backend.cu): every expert's mlp1
// expanded from MXFP4 to bf16, then one cuBLAS product per expert over its rows, then the bias and
// SwiGLU. FLOPs: 2 * A * 2I * H of the products.
void BM_CudaExpertRoutePrefill(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const int B = int(state.range(0)), A = B * kCbK, rows = A / kCbE;
  const size_t w1 = size_t(kCbE) * 2 * kCbI * kCbH;
  auto b1 = cb::random_bytes(w1 / 2, 0, 255, 11), s1 = cb::random_bytes(w1 / 32, 124, 128, 12);
  auto bias1 = cb::random_f32(size_t(kCbE) * 2 * kCbI, 0.1f, 13, Dist::kNormal);
  auto xg = cb::random_bf16(size_t(A) * kCbH, 1.0f, 14, Dist::kNormal);
  DeviceBuffer w(w1 * 2), h(size_t(A) * 2 * kCbI * 4), act(size_t(A) * kCbI * 2);
  std::vector<int> ge(A);
  for (int a = 0; a < A; ++a) ge[a] = a / rows;
  auto group_expert = cb::upload(ge);
  mind4::cuda::BlasHandle blas;
  cb::time_launches(state, 3, [&] {
    mind4::cuda::mf4_expand(ActType::kBF16, b1.data<uint8_t>(), s1.data<uint8_t>(), kCbE * 2 * kCbI,
                            kCbH, w.data(), nullptr);
    for (int e = 0; e < kCbE; ++e)
      mind4::cuda::linear(blas.get(), ActType::kBF16, xg.data<char>() + size_t(e) * rows * kCbH * 2,
                          rows, kCbH, w.data<char>() + size_t(e) * 2 * kCbI * kCbH * 2, 2 * kCbI,
                          h.data<float>() + size_t(e) * rows * 2 * kCbI, true);
    mind4::cuda::moe_bias_swiglu(ActType::kBF16, h.data<float>(), bias1.data<float>(),
                                 group_expert.data<int>(), A, kCbI, 7.0f, act.data(), nullptr);
  });
  cb::set_flops_per_second(state, 2.0 * A * 2 * kCbI * kCbH);
}
BENCHMARK(BM_CudaExpertRoutePrefill)->Arg(2048)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Attention decode: B sequences, one query row each, over `keys` cached positions (full
// attention, flash-decoding splits as the backend picks them). Bytes: the K and V rows read once
// (the per-head kernel reads them once per query head, mostly from L2). `grouped` picks a kernel
// that reads each KV head once for its whole group (attention_decode_gqa.cu): `which` of them.
void attention_decode_bench(benchmark::State& state, bool grouped,
                            mind4::cuda::DecodeAttnKernel which = {}) {
  if (!cb::gpu_present(state)) return;
  const int B = int(state.range(0)), keys = int(state.range(1));
  const int QKV = (kCbNH + 2 * kCbNKV) * kCbD;
  const size_t cache = size_t(B) * keys * kCbNKV * kCbD;
  auto k = cb::random_bf16(cache, 1.0f, 21, Dist::kNormal),
       v = cb::random_bf16(cache, 1.0f, 22, Dist::kNormal);
  auto qkv = cb::random_bf16(size_t(B) * QKV, 1.0f, 23, Dist::kNormal);
  auto sinks = cb::random_f32(kCbNH, 1.0f, 24, Dist::kNormal);
  std::vector<int> pos(B, keys - 1), slot(B);
  for (int b = 0; b < B; ++b) slot[b] = b;
  auto d_pos = cb::upload(pos), d_slot = cb::upload(slot);
  const int splits = grouped ? mind4::cuda::attention_decode_gqa_splits(
                                   B, kCbNKV, keys, 64, mind4::cuda::multiprocessor_count())
                             : mind4::cuda::attention_splits(B, kCbNH, keys, 64);
  DeviceBuffer partial(size_t(B) * kCbNH * splits * (kCbD + 2) * 4),
      out(size_t(B) * kCbNH * kCbD * 2);
  const mind4::cuda::KvLayer kv{k.data(), v.data(), keys};
  cb::time_launches(state, 20, [&] {
    if (grouped)
      mind4::cuda::attention_decode_gqa(ActType::kBF16, qkv.data(), kCbNH, kCbNKV, kCbD, kv,
                                        d_pos.data<int>(), d_slot.data<int>(), sinks.data<float>(),
                                        B, 0, 0.125f, splits, partial.data<float>(), out.data(),
                                        nullptr, which);
    else
      mind4::cuda::attention(ActType::kBF16, qkv.data(), kCbNH, kCbNKV, kCbD, kv, d_pos.data<int>(),
                             d_slot.data<int>(), sinks.data<float>(), B, 0, 0.125f, splits,
                             partial.data<float>(), out.data(), nullptr);
  });
  cb::set_bytes_per_second(state, 2.0 * double(cache) * 2);
  state.counters["splits"] = splits;
}

// The (rows, keys) cases of the decode attention benchmarks.
void decode_attention_cases(benchmark::internal::Benchmark* b) {
  for (const auto& [rows, keys] : {std::pair{1, 4096}, {16, 4096}, {64, 4096}, {1, 128}, {64, 128}})
    b->Args({rows, keys});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void BM_CudaAttentionDecode(benchmark::State& state) {
  attention_decode_bench(state, false);
}
BENCHMARK(BM_CudaAttentionDecode)->Apply(decode_attention_cases);

void BM_CudaAttentionDecodeGqa(benchmark::State& state) {
  attention_decode_bench(state, true, mind4::cuda::DecodeAttnKernel::kTensorCores);
}
BENCHMARK(BM_CudaAttentionDecodeGqa)->Apply(decode_attention_cases);

void BM_CudaAttentionDecodeGqaCudaCores(benchmark::State& state) {
  attention_decode_bench(state, true, mind4::cuda::DecodeAttnKernel::kCudaCores);
}
BENCHMARK(BM_CudaAttentionDecodeGqaCudaCores)->Apply(decode_attention_cases);

// Residual add + RMSNorm of B rows (bf16 out). Bytes: x read and written (f32), the delta read
// (bf16), the output written (bf16).
void BM_CudaRmsNorm(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const int B = int(state.range(0));
  auto x = cb::random_f32(size_t(B) * kCbH, 1.0f, 31, Dist::kNormal);
  auto delta = cb::random_bf16(size_t(B) * kCbH, 1.0f, 32, Dist::kNormal);
  auto bias = cb::random_f32(kCbH, 0.1f, 33, Dist::kNormal),
       scale = cb::random_f32(kCbH, 1.0f, 34, Dist::kNormal);
  DeviceBuffer out(size_t(B) * kCbH * 2);
  cb::time_launches(state, 50, [&] {
    mind4::cuda::residual_rmsnorm(ActType::kBF16, x.data<float>(), delta.data(), bias.data<float>(),
                                  scale.data<float>(), B, kCbH, 1e-5f, out.data(), nullptr,
                                  nullptr);
  });
  cb::set_bytes_per_second(state, double(B) * kCbH * (4 + 4 + 2 + 2));
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
// Args: sequences, the config (0: T=1 top-p 0.9, 1: top-k 50 + top-p 0.9, 2: greedy, 3: T=1
// without a cut, the project's default), the blocks a sequence (0: the launcher's choice).
void BM_CudaSampling(benchmark::State& state) {
  if (!cb::gpu_present(state)) return;
  const int n = int(state.range(0)), config = int(state.range(1)), ranks = int(state.range(2));
  auto logits = cb::random_f32(size_t(n) * kCbV, 2.5f, 41, Dist::kNormal);
  std::vector<mind4::cuda::SampleJob> jobs(n);
  for (int j = 0; j < n; ++j) jobs[j] = {j, 42, uint64_t(j), 0, 0};
  auto d_jobs = cb::upload(jobs);
  DeviceBuffer out(size_t(n) * sizeof(mind4::cuda::SampleOut));
  mind4::cuda::SampleParams p;
  p.top_p = config <= 1 ? 0.9f : 1.0f;
  p.top_k = config == 1 ? 50 : 0;
  p.greedy = config == 2;
  cb::time_launches(state, 5, [&] {
    mind4::cuda::sample_tokens(logits.data<float>(), kCbV, d_jobs.data<mind4::cuda::SampleJob>(), n,
                               nullptr, p, nullptr, out.data<mind4::cuda::SampleOut>(), nullptr,
                               ranks);
  });
  cb::set_bytes_per_second(state, double(n) * kCbV * 4);
}
BENCHMARK(BM_CudaSampling)
    ->Args({1, 0, 0})
    ->Args({1, 0, 1})
    ->Args({1, 0, 8})
    ->Args({1, 1, 0})
    ->Args({1, 2, 0})
    ->Args({1, 2, 1})
    ->Args({1, 3, 0})
    ->Args({1, 3, 1})
    ->Args({16, 0, 0})
    ->Args({64, 0, 0})
    ->Args({64, 0, 1})
    ->Args({64, 1, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

#endif  // MIND4_HAVE_CUDA
