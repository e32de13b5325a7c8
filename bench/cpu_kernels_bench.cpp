// CPU kernels at gpt-oss-20b shapes, single thread, on the path cpu::active_isa() picks
// (MIND4_CPU_ISA=scalar|avx2|avx512 to compare). Each reports bytes/s of the data it must read
// (weights as stored + activations), to set beside the machine's read bandwidth, which the
// MemoryRead benchmark measures the same way (one thread, a buffer far beyond the caches).
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "cpu/matmul.h"
#include "cpu/membw.h"
#include "cpu/ops.h"

namespace mind4::cpu {
namespace {

constexpr int kHidden = 2880;  // gpt-oss-20b hidden_size = intermediate_size

std::vector<uint8_t> random_bytes(size_t n, int lo = 0, int hi = 255) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(d(rng));
  return v;
}
std::vector<float> random_floats(size_t n) {
  std::mt19937 rng(2);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void set_rate(benchmark::State& state, double bytes_per_iteration) {
  state.counters["bytes/s"] = benchmark::Counter(bytes_per_iteration * state.iterations(),
                                                 benchmark::Counter::kIsRate,
                                                 benchmark::Counter::kIs1024);
}

void BM_MemoryRead(benchmark::State& state) {
  const size_t n = size_t(256) << 20 >> 2;  // 256 MiB
  std::vector<float> x(n, 1.0f);
  for (auto _ : state) benchmark::DoNotOptimize(stream_sum(x.data(), n));
  set_rate(state, double(n) * 4);
}
BENCHMARK(BM_MemoryRead)->Unit(benchmark::kMillisecond);

// mf4 -> f32 conversion of one expert's mlp1 ([5760, 2880] as MXFP4).
void BM_Mf4ToF32(benchmark::State& state) {
  const int64_t blocks = int64_t(2 * kHidden) * kHidden / 32;
  auto packed = random_bytes(blocks * 16), scales = random_bytes(blocks, 118, 130);
  std::vector<float> out(blocks * 32);
  for (auto _ : state) {
    mf4_to_f32(packed.data(), scales.data(), blocks, out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, double(blocks) * (17 + 128));  // read 17 B, write 128 B per block
}
BENCHMARK(BM_Mf4ToF32)->Unit(benchmark::kMillisecond);

// bf16-weight matvec: rows x 2880 (5120 = qkv rows of 20b; 201088 = unembedding, too big here).
void BM_Bf16Matvec(benchmark::State& state) {
  const int rows = int(state.range(0)), tokens = int(state.range(1));
  std::vector<uint16_t> w(size_t(rows) * kHidden);
  for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(float(int(i % 17) - 8) * 0.01f);
  auto x = random_floats(size_t(tokens) * kHidden), bias = random_floats(rows);
  std::vector<float> out(size_t(tokens) * rows);
  for (auto _ : state) {
    f32_bf16w_matmul(x.data(), kHidden, tokens, w.data(), kHidden, bias.data(), out.data(), rows,
                     0, rows);
    benchmark::ClobberMemory();
  }
  set_rate(state, double(rows) * kHidden * 2);
  state.counters["flop/s"] = benchmark::Counter(2.0 * rows * kHidden * tokens * state.iterations(),
                                                benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Bf16Matvec)->Args({5120, 1})->Args({5120, 16})->Args({5120, 128})
    ->Unit(benchmark::kMillisecond);

// MXFP4 matvec: one expert's mlp1 [5760, 2880].
void BM_Mf4Matvec(benchmark::State& state) {
  const int rows = 2 * kHidden, tokens = int(state.range(0));
  const int64_t nb = kHidden / 32;
  auto packed = random_bytes(size_t(rows) * nb * 16), scales = random_bytes(size_t(rows) * nb, 118, 130);
  auto x = random_floats(size_t(tokens) * kHidden), bias = random_floats(rows);
  std::vector<float> xd(x.size()), out(size_t(tokens) * rows);
  for (int t = 0; t < tokens; ++t) mf4_deinterleave(x.data() + t * kHidden, kHidden, xd.data() + t * kHidden);
  for (auto _ : state) {
    f32_mf4w_matmul(xd.data(), kHidden, tokens, packed.data(), scales.data(), kHidden,
                    bias.data(), out.data(), rows, 0, rows);
    benchmark::ClobberMemory();
  }
  set_rate(state, double(rows) * nb * 17);
  state.counters["flop/s"] = benchmark::Counter(2.0 * rows * kHidden * tokens * state.iterations(),
                                                benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Mf4Matvec)->Arg(1)->Arg(16)->Arg(128)->Unit(benchmark::kMillisecond);

void BM_RmsNorm(benchmark::State& state) {
  const int rows = int(state.range(0));
  auto x = random_floats(size_t(rows) * kHidden), scale = random_floats(kHidden);
  std::vector<float> out(x.size());
  for (auto _ : state) {
    for (int r = 0; r < rows; ++r)
      rmsnorm(x.data() + r * kHidden, scale.data(), kHidden, 1e-5f, out.data() + r * kHidden);
    benchmark::ClobberMemory();
  }
  set_rate(state, double(rows) * kHidden * 8);
}
BENCHMARK(BM_RmsNorm)->Arg(1)->Arg(128);

// One decode step of attention for one layer of 20b: 64 query heads over 8 kv heads, head_dim
// 64, `context` cached positions (fp32 cache, [pos][kv head][dim]).
void BM_AttentionDecode(benchmark::State& state) {
  const int context = int(state.range(0)), heads = 64, kv_heads = 8, d = 64;
  auto q = random_floats(heads * d);
  auto k = random_floats(size_t(context) * kv_heads * d), v = random_floats(k.size());
  std::vector<float> scores(context), out(heads * d);
  for (auto _ : state) {
    for (int h = 0; h < heads; ++h) {
      const int g = h / (heads / kv_heads);
      attention_head(q.data() + h * d, k.data() + g * d, v.data() + g * d, kv_heads * d, context,
                     d, 0.5f, 0.125f, scores.data(), out.data() + h * d);
    }
    benchmark::ClobberMemory();
  }
  set_rate(state, double(k.size() + v.size()) * 4);
}
BENCHMARK(BM_AttentionDecode)->Arg(128)->Arg(4096)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace mind4::cpu
