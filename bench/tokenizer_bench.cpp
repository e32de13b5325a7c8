// Single-thread encode throughput of the o200k tokenizer on the benchmark text that
// scripts/bench_tokenizer.sh builds (KJV English + Russian prose). The bound this faces is
// not memory bandwidth (3 MB fits in cache) but per-piece work: one regex match, one hash
// lookup and, for multi-token pieces, a cached merge.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "mind4/tokenizer.h"

namespace {

std::string bench_text() {
  const char* file = std::getenv("MIND4_BENCH_TOKENIZER_TEXT");
  std::string text;
  if (file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  if (text.empty()) {  // without the script: a synthetic mixed text so the benchmark still runs
    for (int i = 0; i < 20000; ++i)
      text += "And God said, Let there be light: and there was light. "
              "Аппетит приходит во время еды, а кушать хочется всегда. ";
  }
  return text;
}

void BM_TokenizerEncodeO200k(benchmark::State& state) {
  auto tok = mind4::Tokenizer::load("o200k_base");
  const std::string text = bench_text();
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = tok.encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["text_MB"] = text.size() / 1e6;
}
BENCHMARK(BM_TokenizerEncodeO200k)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_TokenizerLoadO200kHarmony(benchmark::State& state) {
  for (auto _ : state) {
    // The built-in cache would make repeats free; load a file path to measure the parse.
    auto tok = mind4::Tokenizer::from_vocabulary_file(
        MIND4_SOURCE_DIR "/third_party/node_modules/tiktoken/encoders/o200k_base.json");
    benchmark::DoNotOptimize(tok.vocab_size());
  }
}
BENCHMARK(BM_TokenizerLoadO200kHarmony)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
