// The model against the independent oracle: Hugging Face transformers' GptOssForCausalLM run in
// float64 on small random checkpoints (tests/fixtures, made by scripts/fixtures/make_fixtures.py).
// Each fixture is loaded in both layouts it ships (original gpt-oss and HF); logits of every prompt
// position, decode token by token, and the greedy continuation must agree.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "mind4/model.h"

namespace mind4 {
namespace {

namespace fs = std::filesystem;

// Absolute, so that test discovery (run from the build directory) finds them too.
std::string fixtures_root() { return std::string(MIND4_SOURCE_DIR) + "/tests/fixtures"; }

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  if (!fs::is_directory(fixtures_root())) return names;
  for (const auto& e : fs::directory_iterator(fixtures_root()))
    if (fs::exists(e.path() / "expected.safetensors")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

struct Expected {
  std::vector<int> tokens, greedy;
  std::vector<float> logits;  // [T, V]
  int vocab = 0;
};

Expected read_expected(const std::string& dir) {
  auto file = SafeTensorsFile::open(dir + "/expected.safetensors");
  Expected out;
  for (const SafeTensor& t : file->tensors()) {
    if (t.name == "tokens" || t.name == "greedy") {
      EXPECT_EQ(t.dtype, DType::kI32) << t.name;
      const int32_t* p = reinterpret_cast<const int32_t*>(t.data);
      (t.name == "tokens" ? out.tokens : out.greedy).assign(p, p + t.nbytes / 4);
    } else if (t.name == "logits") {
      EXPECT_EQ(t.dtype, DType::kF32);
      const float* p = reinterpret_cast<const float*>(t.data);
      out.logits.assign(p, p + t.nbytes / 4);
      out.vocab = int(t.shape.at(1));
    }
  }
  return out;
}

double max_abs(std::span<const float> v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::abs(x)));
  return m;
}

int argmax(std::span<const float> v) {
  return int(std::max_element(v.begin(), v.end()) - v.begin());
}

class Fixture : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(Fixture, MatchesTransformers) {
  const auto& [name, layout] = GetParam();
  const std::string dir = fixtures_root() + "/" + name;
  const Expected want = read_expected(dir);
  ASSERT_FALSE(want.tokens.empty());
  Config config;
  config.paths.checkpoint = layout == "original" ? dir : dir + "/hf";
  auto model = Model::load(config);
  const int V = model->config().vocab_size, T = int(want.tokens.size());
  ASSERT_EQ(V, want.vocab);
  const double bound = 1e-3 * max_abs(want.logits);
  const int total = T + int(want.greedy.size());

  // Prefill: every position's logits.
  Context prefill(model, {.context_length = total, .max_batch_tokens = 16, .keep_all_logits = true});
  const int a = prefill.new_sequence();
  prefill.append(a, want.tokens);
  prefill.process();
  auto all = prefill.all_logits(a);
  ASSERT_EQ(all.size(), want.logits.size());
  double worst = 0;
  for (size_t i = 0; i < all.size(); ++i) worst = std::max(worst, double(std::abs(all[i] - want.logits[i])));
  EXPECT_LE(worst, bound) << name << "/" << layout << ": max |logit - HF| over all positions";

  // Decode token by token gives the same logits.
  Context decode(model, {.context_length = total});
  const int b = decode.new_sequence();
  for (int t = 0; t < T; ++t) {
    decode.append(b, std::span<const int>(&want.tokens[t], 1));
    decode.process();
    auto step = decode.logits(b);
    double err = 0;
    for (int v = 0; v < V; ++v) err = std::max(err, double(std::abs(step[v] - want.logits[size_t(t) * V + v])));
    ASSERT_LE(err, bound) << name << "/" << layout << ": decode at position " << t;
  }

  // Greedy continuation identical to HF's generate(do_sample=False).
  std::vector<int> got;
  for (size_t i = 0; i < want.greedy.size(); ++i) {
    const int next = argmax(decode.logits(b));
    got.push_back(next);
    decode.append(b, std::span<const int>(&next, 1));
    decode.process();
  }
  EXPECT_EQ(got, want.greedy) << name << "/" << layout;
}

std::vector<std::tuple<std::string, std::string>> fixture_cases() {
  std::vector<std::tuple<std::string, std::string>> out;
  for (const auto& n : fixture_names())
    for (const char* layout : {"original", "hf"}) out.emplace_back(n, layout);
  return out;
}

INSTANTIATE_TEST_SUITE_P(HfTransformers, Fixture, ::testing::ValuesIn(fixture_cases()),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param);
                         });

TEST(FixtureSet, AllThreeFixturesArePresent) { EXPECT_GE(fixture_names().size(), 3u); }

}  // namespace
}  // namespace mind4
