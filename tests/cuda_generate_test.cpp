// chat::Generator on the CUDA line, where each token is drawn on the GPU into its own step
// (Context::append_sampled) and the host learns it while that step runs: the tokens must be the
// CPU line's loop's, and the cache must stay right when a reply ends by a stop token, the token
// limit or a cancel, with a draw already queued.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "chat/generator.h"
#include "chat_test_util.h"
#include "mind4/status.h"

#ifdef MIND4_HAVE_CUDA
#include "cuda_test_util.h"
#endif

namespace mind4 {
namespace {

#ifdef MIND4_HAVE_CUDA

using chat::GenerateLimits;
using chat::Generator;
using chat::StopCause;
using chat::TokenEvent;

std::shared_ptr<const Model> tiny_harmony_model_on_gpu() {
  static std::shared_ptr<const Model> model = [] {
    Config config;
    config.paths.checkpoint = testing::tiny_harmony_checkpoint();
    config.execution.backend = Backend::kCuda;
    config.execution.dtype = ActivationDType::kFloat32;
    return Model::load(config);
  }();
  return model;
}

std::vector<int> cuda_gen_prompt() {
  return testing::harmony_tokenizer().encode("The quick brown fox");
}

std::vector<int> run(Generator& gen, std::span<const int> prompt, const GenerateLimits& limits,
                     chat::GenerateStats* stats = nullptr) {
  std::vector<int> out;
  auto s = gen.generate(prompt, limits, [&](const TokenEvent& e) {
    if (e.token >= 0) out.push_back(e.token);
  });
  if (stats) *stats = s;
  return out;
}

// No top-k or top-p: with them the two lines draw the same law but walk their kept tokens in
// different orders (docs/cuda.md), so the tokens would differ.
SamplingConfig cuda_gen_sampling(float temperature) {
  SamplingConfig s;
  s.temperature = temperature;
  s.min_p = 0.01f;
  s.seed = 3;
  return s;
}

TEST(CudaGenerate, TokensDrawnAheadAreTheCpuLoops) {
  MIND4_REQUIRE_GPU();
  const Tokenizer& tok = testing::harmony_tokenizer();
  for (const float t : {0.0f, 0.8f}) {
    SCOPED_TRACE("temperature " + std::to_string(t));
    Generator cpu(testing::tiny_harmony_model(), tok, cuda_gen_sampling(t),
                  {.context_length = 128});
    Generator gpu(tiny_harmony_model_on_gpu(), tok, cuda_gen_sampling(t), {.context_length = 128});
    chat::GenerateStats stats;
    const auto want = run(cpu, cuda_gen_prompt(), {.max_new_tokens = 24});
    const auto got = run(gpu, cuda_gen_prompt(), {.max_new_tokens = 24}, &stats);
    EXPECT_EQ(got, want);
    EXPECT_EQ(stats.stop, StopCause::kMaxTokens);
    // The last token needs no step: the cache holds all but it, as on the CPU line.
    auto more = tok.encode(" jumps over");
    std::vector<int> next(gpu.tokens().begin(), gpu.tokens().end());
    next.insert(next.end(), more.begin(), more.end());
    const auto again = run(gpu, next, {.max_new_tokens = 6}, &stats);
    EXPECT_EQ(stats.reused_tokens, int(cuda_gen_prompt().size()) + 24 - 1);
    EXPECT_EQ(again, run(cpu, next, {.max_new_tokens = 6}));
  }
}

TEST(CudaGenerate, StopTokenAndCancelLeaveTheCacheRight) {
  MIND4_REQUIRE_GPU();
  const Tokenizer& tok = testing::harmony_tokenizer();
  Generator cpu(testing::tiny_harmony_model(), tok, cuda_gen_sampling(0.0f),
                {.context_length = 128});
  const auto greedy = run(cpu, cuda_gen_prompt(), {.max_new_tokens = 8});
  Generator gpu(tiny_harmony_model_on_gpu(), tok, cuda_gen_sampling(0.0f), {.context_length = 128});
  // A stop token: its step already ran (it was queued before the token was known).
  chat::GenerateStats stats;
  const auto stopped =
      run(gpu, cuda_gen_prompt(), {.max_new_tokens = 50, .stop_tokens = {greedy[3]}}, &stats);
  EXPECT_EQ(stats.stop, StopCause::kStopToken);
  const size_t first = std::find(greedy.begin(), greedy.end(), greedy[3]) - greedy.begin();
  EXPECT_EQ(stats.generated, int(first) + 1);
  EXPECT_EQ(stopped, std::vector<int>(greedy.begin(), greedy.begin() + first + 1));  // its event
  ASSERT_EQ(gpu.tokens().size(), cuda_gen_prompt().size() + first + 1);
  // A cancel with the next draw queued: that token leaves the sequence again.
  std::atomic<bool> cancel{false};
  int seen = 0;
  gpu.generate(cuda_gen_prompt(), {.max_new_tokens = 100, .cancel = &cancel},
               [&](const TokenEvent& e) {
                 if (e.token >= 0 && ++seen == 3) cancel = true;
               });
  ASSERT_EQ(gpu.tokens().size(), cuda_gen_prompt().size() + 3);
  // Both continue as a fresh start on the CPU line would.
  std::vector<int> next(gpu.tokens().begin(), gpu.tokens().end());
  const auto more = tok.encode(" and");
  next.insert(next.end(), more.begin(), more.end());
  EXPECT_EQ(run(gpu, next, {.max_new_tokens = 5}), run(cpu, next, {.max_new_tokens = 5}));
}

#else

TEST(CudaGenerate, SkippedWithoutTheCudaLine) {
  GTEST_SKIP() << "CUDA generate tests skipped: the CUDA line is not compiled into this build";
}

#endif  // MIND4_HAVE_CUDA

}  // namespace
}  // namespace mind4
