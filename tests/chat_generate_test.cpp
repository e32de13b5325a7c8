// The shared token loop (chat::Generator): stop tokens and strings, limits, cancel, context
// overflow, KV-cache reuse across calls, and the vocabulary check.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>

#include "chat/generator.h"
#include "chat_test_util.h"
#include "mind4/status.h"

namespace mind4 {
namespace {

using chat::GenerateLimits;
using chat::Generator;
using chat::StopCause;
using chat::TokenEvent;

SamplingConfig greedy_sampling() {
  SamplingConfig s;
  s.temperature = 0;
  return s;
}

std::vector<int> gen_prompt() {
  return testing::harmony_tokenizer().encode("The quick brown fox");
}

// The greedy continuation computed directly with a Context: the oracle for the loop's mechanics.
std::vector<int> greedy_by_hand(std::span<const int> prompt, int n) {
  Context ctx(testing::tiny_harmony_model(), {.context_length = 128});
  int seq = ctx.new_sequence();
  ctx.append(seq, prompt);
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    ctx.process();
    auto logits = ctx.logits(seq);
    int t = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(t);
    ctx.append(seq, std::span<const int>(&t, 1));
  }
  return out;
}

TEST(ChatGenerate, GreedyMatchesAHandWrittenLoopAndStreamsEveryToken) {
  Generator gen(testing::tiny_harmony_model(), testing::harmony_tokenizer(), greedy_sampling(),
                {.context_length = 128});
  std::vector<int> streamed;
  std::string text;
  auto stats = gen.generate(gen_prompt(), {.max_new_tokens = 12}, [&](const TokenEvent& e) {
    if (e.token >= 0) streamed.push_back(e.token);
    text += e.text;
  });
  EXPECT_EQ(streamed, greedy_by_hand(gen_prompt(), 12));
  EXPECT_EQ(stats.generated, 12);
  EXPECT_EQ(stats.stop, StopCause::kMaxTokens);
  EXPECT_EQ(text, stats.text);
  EXPECT_EQ(text, testing::harmony_tokenizer().decode(streamed));
  EXPECT_GT(stats.decode_tok_s(), 0);
}

TEST(ChatGenerate, ReusesTheCachedPrefixAndGivesTheSameTokensAsAFreshStart) {
  Generator gen(testing::tiny_harmony_model(), testing::harmony_tokenizer(), greedy_sampling(),
                {.context_length = 128});
  auto first = gen.generate(gen_prompt(), {.max_new_tokens = 5}, nullptr);
  std::vector<int> next(gen.tokens().begin(), gen.tokens().end());
  auto more = testing::harmony_tokenizer().encode(" jumps over");
  next.insert(next.end(), more.begin(), more.end());
  std::vector<int> reused_out, fresh_out;
  auto stats = gen.generate(next, {.max_new_tokens = 6},
                            [&](const TokenEvent& e) { reused_out.push_back(e.token); });
  // Everything but the last sampled token (never fed back) was in the cache.
  EXPECT_EQ(stats.reused_tokens, first.prompt_tokens + first.generated - 1);
  Generator fresh(testing::tiny_harmony_model(), testing::harmony_tokenizer(), greedy_sampling(),
                  {.context_length = 128});
  fresh.generate(next, {.max_new_tokens = 6},
                 [&](const TokenEvent& e) { fresh_out.push_back(e.token); });
  EXPECT_EQ(reused_out, fresh_out);
  // A prompt that diverges from the cache starts again.
  auto other = testing::harmony_tokenizer().encode("Something else entirely");
  auto s3 = gen.generate(other, {.max_new_tokens = 1}, nullptr);
  EXPECT_EQ(s3.reused_tokens, 0);
}

TEST(ChatGenerate, StopsAtAStopTokenWithoutShowingIt) {
  auto expected = greedy_by_hand(gen_prompt(), 6);
  Generator gen(testing::tiny_harmony_model(), testing::harmony_tokenizer(), greedy_sampling(),
                {.context_length = 128});
  GenerateLimits limits{.max_new_tokens = 50, .stop_tokens = {expected[3]}};
  auto stats = gen.generate(gen_prompt(), limits, nullptr);
  EXPECT_EQ(stats.stop, StopCause::kStopToken);
  EXPECT_EQ(stats.stop_token, expected[3]);
  auto first = std::find(expected.begin(), expected.end(), expected[3]) - expected.begin();
  EXPECT_EQ(stats.generated, first + 1);
  std::vector<int> before(expected.begin(), expected.begin() + first);
  EXPECT_EQ(stats.text, testing::harmony_tokenizer().decode(before));
}

TEST(ChatGenerate, StopStringEndsTheTextBeforeItEvenAcrossTokens) {
  auto expected = greedy_by_hand(gen_prompt(), 8);
  const std::string full = testing::harmony_tokenizer().decode(expected);
  ASSERT_GT(full.size(), 6u);
  // A stop string made of the end of one token's text and the start of the next one's.
  const std::string first_two =
      testing::harmony_tokenizer().decode(std::vector<int>(expected.begin(), expected.begin() + 2));
  const size_t boundary = testing::harmony_tokenizer().decode(std::span<const int>(expected.data(), 1)).size();
  ASSERT_GE(boundary, 1u);
  ASSERT_GT(first_two.size(), boundary);
  const std::string stop = first_two.substr(boundary - 1, 2);
  Generator gen(testing::tiny_harmony_model(), testing::harmony_tokenizer(), greedy_sampling(),
                {.context_length = 128});
  std::string streamed;
  auto stats = gen.generate(gen_prompt(), {.max_new_tokens = 8, .stop_strings = {stop}},
                            [&](const TokenEvent& e) { streamed += e.text; });
  EXPECT_EQ(stats.stop, StopCause::kStopString);
  EXPECT_EQ(stats.stop_string, stop);
  EXPECT_EQ(streamed, full.substr(0, full.find(stop)));
  EXPECT_EQ(streamed.find(stop), std::string::npos);
}

TEST(ChatGenerate, FindStopStringHoldsBackPossibleStarts) {
  std::vector<std::string> stops = {"</end>", "\n\n"};
  size_t hold = 99;
  EXPECT_EQ(chat::find_stop_string("abc</e", stops, &hold), std::string::npos);
  EXPECT_EQ(hold, 3u);
  EXPECT_EQ(chat::find_stop_string("abc\n", stops, &hold), std::string::npos);
  EXPECT_EQ(hold, 1u);
  EXPECT_EQ(chat::find_stop_string("a\n\nb</end>", stops, &hold), 1u);
  EXPECT_EQ(chat::find_stop_string("plain", stops, &hold), std::string::npos);
  EXPECT_EQ(hold, 0u);
  EXPECT_EQ(chat::find_stop_string("x", std::vector<std::string>{""}, &hold), std::string::npos);
}

TEST(ChatGenerate, CancelStopsBeforeTheNextToken) {
  Generator gen(testing::tiny_harmony_model(), testing::harmony_tokenizer(), greedy_sampling(),
                {.context_length = 128});
  std::atomic<bool> cancel{false};
  GenerateLimits limits{.max_new_tokens = 100, .cancel = &cancel};
  int seen = 0;
  auto stats = gen.generate(gen_prompt(), limits, [&](const TokenEvent& e) {
    if (e.token >= 0 && ++seen == 3) cancel = true;
  });
  EXPECT_EQ(stats.stop, StopCause::kCancelled);
  EXPECT_EQ(stats.generated, 3);
}

TEST(ChatGenerate, ContextLimitsArePlainErrorsOrStops) {
  Generator gen(testing::tiny_harmony_model(), testing::harmony_tokenizer(), greedy_sampling(),
                {.context_length = 16});
  std::vector<int> long_prompt(16, 1000);
  try {
    gen.generate(long_prompt, {.max_new_tokens = 4}, nullptr);
    FAIL() << "a prompt as long as the context must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kContextOverflow);
    EXPECT_NE(std::string(e.what()).find("16"), std::string::npos) << e.what();
  }
  std::vector<int> prompt(10, 1000);
  auto stats = gen.generate(prompt, {.max_new_tokens = 100}, nullptr);
  EXPECT_EQ(stats.stop, StopCause::kContextFull);
  EXPECT_EQ(stats.generated, 7);  // positions 10..15 fed back, the 7th sampled from the last
}

TEST(ChatGenerate, RefusesATokenizerThatDoesNotMatchTheModel) {
  Config config;
  config.paths.checkpoint = std::string(MIND4_SOURCE_DIR) + "/tests/fixtures/yarn32_mxfp4_mha";
  auto model = Model::load(config);
  try {
    Generator gen(model, testing::harmony_tokenizer(), greedy_sampling());
    FAIL() << "o200k_harmony with a 1536-token model must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("201088"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1536"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace mind4
