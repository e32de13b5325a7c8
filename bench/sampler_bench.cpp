// Sampler speed: the Philox generator (bytes of random output per second) and one full sample()
// on gpt-oss's 201088-token vocabulary. The bound printed beside sample() is the time to read the
// logits once at the machine's memory bandwidth (MIND4_MEM_BW_GBS, default 20 GB/s per core): a
// sampler cannot beat one pass over its input, and every pass it adds shows up against that.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>
#include <vector>

#include "mind4/sampler.h"
#include "sampler/philox.h"

namespace {

double memory_bandwidth_bytes_per_s() {
  const char* env = std::getenv("MIND4_MEM_BW_GBS");
  double gbs = env ? std::atof(env) : 20.0;
  return (gbs > 0 ? gbs : 20.0) * 1e9;
}

void BM_PhiloxU32(benchmark::State& state) {
  mind4::philox::Stream stream(42);
  const int n = 4096;
  std::vector<uint32_t> out(n);
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) out[i] = stream.next_u32();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * n * sizeof(uint32_t));
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_PhiloxU32);

void BM_PhiloxBlocks(benchmark::State& state) {
  // Counter-indexed blocks, as a parallel (or GPU) caller would evaluate them.
  const auto key = mind4::philox::key_from_seed(42);
  const int n = 1024;
  std::vector<mind4::philox::Counter> out(n);
  uint64_t base = 0;
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) {
      uint64_t c = base + i;
      out[i] = mind4::philox::block(
          {static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0, 0}, key);
    }
    base += n;
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * n * 16);
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_PhiloxBlocks);

void BM_PhiloxF32(benchmark::State& state) {
  mind4::philox::Stream stream(42);
  const int n = 4096;
  std::vector<float> out(n);
  for (auto _ : state) {
    for (int i = 0; i < n; ++i) out[i] = stream.next_f32();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * n * sizeof(float));
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_PhiloxF32);

std::vector<float> model_like_logits(int n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  for (int i = 0; i < 40; ++i) v[(i * 7919) % n] += 9.0f;
  return v;
}

void run_sample(benchmark::State& state, mind4::SamplingConfig config, int history_len) {
  const int vocab = 201088;
  std::vector<float> logits = model_like_logits(vocab);
  std::vector<int> history(history_len);
  for (int i = 0; i < history_len; ++i) history[i] = (i * 104729) % vocab;
  mind4::Sampler sampler(config);
  for (auto _ : state) benchmark::DoNotOptimize(sampler.sample(logits, history));
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * vocab * sizeof(float));
  const double bound_s = vocab * sizeof(float) / memory_bandwidth_bytes_per_s();
  state.counters["bound_us"] = bound_s * 1e6;
  state.counters["x_bound"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * bound_s,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_SampleTopP09(benchmark::State& state) {
  mind4::SamplingConfig c;
  c.top_p = 0.9f;
  run_sample(state, c, 0);
}
BENCHMARK(BM_SampleTopP09)->Unit(benchmark::kMicrosecond);

void BM_SampleTopP09Penalties(benchmark::State& state) {
  mind4::SamplingConfig c;
  c.top_p = 0.9f;
  c.temperature = 0.8f;
  c.repetition_penalty = 1.1f;
  c.frequency_penalty = 0.2f;
  run_sample(state, c, 4096);
}
BENCHMARK(BM_SampleTopP09Penalties)->Unit(benchmark::kMicrosecond);

void BM_SampleTopP09Logprobs20(benchmark::State& state) {
  // The server's logprobs path: processed log-softmax over the vocabulary and the top 20.
  const int vocab = 201088;
  std::vector<float> logits = model_like_logits(vocab);
  mind4::SamplingConfig c;
  c.top_p = 0.9f;
  mind4::Sampler sampler(c);
  mind4::SampleResult result;
  for (auto _ : state) {
    sampler.sample_with_logprobs(logits, {}, 20, mind4::LogprobMode::kProcessed, result);
    benchmark::DoNotOptimize(result.token);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SampleTopP09Logprobs20)->Unit(benchmark::kMicrosecond);

void BM_SampleTopK50(benchmark::State& state) {
  mind4::SamplingConfig c;
  c.top_k = 50;
  run_sample(state, c, 0);
}
BENCHMARK(BM_SampleTopK50)->Unit(benchmark::kMicrosecond);

void BM_SampleMinP(benchmark::State& state) {
  mind4::SamplingConfig c;
  c.min_p = 0.05f;
  run_sample(state, c, 0);
}
BENCHMARK(BM_SampleMinP)->Unit(benchmark::kMicrosecond);

void BM_SamplePlain(benchmark::State& state) {
  run_sample(state, mind4::SamplingConfig{}, 0);
}
BENCHMARK(BM_SamplePlain)->Unit(benchmark::kMicrosecond);

void BM_SampleGreedy(benchmark::State& state) {
  mind4::SamplingConfig c;
  c.temperature = 0.0f;
  run_sample(state, c, 0);
}
BENCHMARK(BM_SampleGreedy)->Unit(benchmark::kMicrosecond);

}  // namespace
