// BPE trainer: a small vocabulary from KJV text, written as .tiktoken + sidecar, loaded back,
// deterministic, and the trained file encodes the same in the tiktoken npm package as in mind4.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "mind4/status.h"
#include "mind4/tokenizer.h"
#include "tokenizer/test_util.h"
#include "tokenizer/trainer.h"
#include "tokenizer/vocabulary.h"

namespace {

namespace fs = std::filesystem;

TEST(TokenizerTrainer, TrainsWritesLoadsAndIsDeterministic) {
  const bool sanitizer = std::getenv("MIND4_UNDER_SANITIZER") != nullptr;
  mind4::testing::ScratchDir dir("train");
  fs::path kjv = dir.path() / "kjv.txt";
  ASSERT_TRUE(mind4::testing::write_kjv_text(kjv)) << "bible-kjv missing: bash scripts/setup.sh";
  std::string text = mind4::testing::read_file(kjv).substr(0, sanitizer ? 100000 : 600000);
  fs::path corpus = dir.path() / "corpus.txt";
  mind4::testing::write_file(corpus, text);

  mind4::tok::TrainOptions opt;
  opt.vocab_size = 1000;
  opt.specials = {"<|endoftext|>", "<|pad|>"};
  mind4::tok::TrainStats stats;
  auto v1 = mind4::tok::train_bpe({corpus.string()}, opt, &stats);
  auto v2 = mind4::tok::train_bpe({corpus.string()}, opt);
  EXPECT_EQ(v1.tokens, v2.tokens) << "training is not deterministic";
  EXPECT_EQ(v1.vocab_size(), 1000);
  EXPECT_EQ(stats.merges, 1000 - 256 - 2);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(v1.tokens[b], std::string(1, static_cast<char>(b)));
  // The most frequent pair of English prose under the o200k pattern comes first: " t"/"he"...
  EXPECT_EQ(v1.tokens[256].size(), 2u);

  fs::path out = dir.path() / "kjv.tiktoken";
  mind4::tok::write_tiktoken_file(v1, out.string());
  ASSERT_TRUE(fs::exists(out.string() + ".json"));
  auto tok = mind4::Tokenizer::load(out.string());
  EXPECT_EQ(tok.vocab_size(), 1000);
  EXPECT_EQ(tok.special_id("<|pad|>"), 999);
  std::vector<int> ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_LT(ids.size() * 3, text.size()) << "a 1000-token vocabulary should compress >3x";
  std::string with_special = "In the beginning<|endoftext|>";
  auto sp = tok.encode_allowing_special(with_special);
  EXPECT_EQ(sp.back(), 998);

  // Independent check: the tiktoken npm package encodes with our trained file the same way.
  ASSERT_EQ(std::system("node --version > /dev/null 2>&1"), 0) << "node is missing";
  fs::path sample = dir.path() / "sample.txt";
  std::string sample_text = text.substr(0, 20000) + " Привет, мир! 123456 don't";
  mind4::testing::write_file(sample, sample_text);
  std::string cmd = "node tests/tokenizer/encode_file.js " + out.string() + " " +
                    sample.string() + " > " + (dir.path() / "ids.txt").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::string expected = mind4::testing::read_file(dir.path() / "ids.txt");
  std::string got;
  for (int id : tok.encode(sample_text)) got += std::to_string(id) + " ";
  EXPECT_EQ(got + "\n", expected);
}

TEST(TokenizerTrainer, RejectsTooSmallVocabularyAndMissingFiles) {
  mind4::tok::TrainOptions opt;
  opt.vocab_size = 100;
  EXPECT_THROW(mind4::tok::train_bpe({"/nonexistent"}, opt), mind4::Error);
  opt.vocab_size = 300;
  try {
    mind4::tok::train_bpe({"/nonexistent/file.txt"}, opt);
    ADD_FAILURE() << "no error";
  } catch (const mind4::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/file.txt"), std::string::npos);
  }
}

}  // namespace
