// Context::truncate: a sequence cut back and processed again gives the logits of a fresh one,
// also when the sliding window (8 here) reaches back across the cut.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "mind4/model.h"
#include "mind4/status.h"

namespace mind4 {
namespace {

std::shared_ptr<const Model> truncate_model() {
  static auto model = [] {
    Config config;
    config.paths.checkpoint = std::string(MIND4_SOURCE_DIR) + "/tests/fixtures/yarn_mxfp4_gqa";
    return Model::load(config);
  }();
  return model;
}

std::vector<float> fresh_logits(std::span<const int> tokens) {
  Context ctx(truncate_model(), {.context_length = 64});
  int s = ctx.new_sequence();
  ctx.append(s, tokens);
  ctx.process();
  auto l = ctx.logits(s);
  return {l.begin(), l.end()};
}

TEST(ContextTruncate, CutAndReprocessedMatchesAFreshSequence) {
  std::vector<int> first, second;
  for (int i = 0; i < 40; ++i) first.push_back((i * 37 + 11) % 1000);
  Context ctx(truncate_model(), {.context_length = 64, .max_batch_tokens = 7});
  int s = ctx.new_sequence();
  ctx.append(s, first);
  ctx.process();
  // Dropping only queued tokens keeps the last processed token's logits.
  const std::vector<float> last(ctx.logits(s).begin(), ctx.logits(s).end());
  ctx.append(s, std::vector<int>{5, 6, 7});
  ctx.truncate(s, 40);
  EXPECT_EQ(ctx.processed(s), 40);
  EXPECT_TRUE(std::ranges::equal(ctx.logits(s), last));
  // Keep 25 tokens (past the window of 8), then go on differently.
  ctx.truncate(s, 25);
  EXPECT_EQ(ctx.processed(s), 25);
  EXPECT_THROW(ctx.logits(s), Error);
  second.assign(first.begin(), first.begin() + 25);
  for (int i = 0; i < 12; ++i) second.push_back((i * 53 + 7) % 1000);
  ctx.append(s, std::span<const int>(second).subspan(25));
  ctx.process();
  auto got = ctx.logits(s);
  auto want = fresh_logits(second);
  float max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_abs = std::max(max_abs, std::fabs(want[i]));
    max_diff = std::max(max_diff, std::fabs(want[i] - got[i]));
  }
  EXPECT_LE(max_diff, 1e-5f * max_abs) << "max |diff| " << max_diff;
  // Queued tokens can be cut too, and the bounds are checked.
  ctx.append(s, std::vector<int>{1, 2, 3});
  ctx.truncate(s, int(second.size()) + 1);
  EXPECT_EQ(ctx.tokens(s).size(), second.size() + 1);
  EXPECT_THROW(ctx.truncate(s, 1000), Error);
  EXPECT_THROW(ctx.truncate(s, -1), Error);
}

}  // namespace
}  // namespace mind4
