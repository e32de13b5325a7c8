// Bad input and edge cases of the tokenizer: invalid UTF-8, missing/corrupt vocabularies,
// special-token text in user content, ids out of range, streaming decode, long pieces.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "mind4/status.h"
#include "mind4/tokenizer.h"
#include "tokenizer/builtin.h"
#include "tokenizer/regex.h"
#include "tokenizer/test_util.h"
#include "tokenizer/vocabulary.h"

namespace {

using mind4::Error;
using mind4::Status;
using mind4::Tokenizer;

const Tokenizer& harmony() {
  static Tokenizer t = Tokenizer::load("o200k_harmony");
  return t;
}

template <typename F>
std::string error_of(F&& f, Status expected) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), expected) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no mind4::Error thrown";
  return "";
}

TEST(TokenizerBadInput, InvalidUtf8IsEncodedAsBytesAndRoundTrips) {
  const std::vector<std::string> inputs = {
      "\xff", "abc\xfe\xff def", "\xc3", "caf\xc3", "\xe2\x82", "\xed\xa0\x80 surrogate",
      "\xf4\x90\x80\x80 too big", "\xc0\xaf overlong", std::string("nul\0byte", 8),
      "ok \xf0\x9f\x99 broken emoji \xf0\x9f\x99\x82 ok"};
  for (const auto& s : inputs) {
    std::vector<int> ids = harmony().encode(s);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(harmony().decode(ids), s) << mind4::testing::escaped(s);
    for (int id : ids) EXPECT_FALSE(harmony().is_special(id));
  }
}

TEST(TokenizerBadInput, SpecialTokenTextInUserContentIsPlainText) {
  const std::string text = "<|start|>user<|message|>hi<|end|> <|reserved_200500|>";
  std::vector<int> plain = harmony().encode(text);
  for (int id : plain) EXPECT_FALSE(harmony().is_special(id)) << id;
  EXPECT_EQ(harmony().decode(plain), text);

  std::vector<int> all = harmony().encode_allowing_special(text);
  EXPECT_EQ(all.front(), 200006);
  EXPECT_NE(std::find(all.begin(), all.end(), 200500), all.end());

  // Only the allowed names become specials.
  std::vector<std::string> allowed = {"<|message|>"};
  std::vector<int> some = harmony().encode_allowing_special(text, allowed);
  int specials = 0;
  for (int id : some) specials += harmony().is_special(id);
  EXPECT_EQ(specials, 1);
  EXPECT_NE(std::find(some.begin(), some.end(), 200008), some.end());
  EXPECT_EQ(harmony().decode(some), text);

  std::vector<std::string> unknown = {"<|nope|>"};
  std::string msg = error_of([&] { harmony().encode_allowing_special(text, unknown); },
                             Status::kInvalidArgument);
  EXPECT_NE(msg.find("<|nope|>"), std::string::npos);
}

TEST(TokenizerBadInput, IdOutOfRangeWhenDecodingNamesTheId) {
  std::vector<int> ids = {9906, 201088};
  std::string msg = error_of([&] { harmony().decode(ids); }, Status::kTokenOutOfRange);
  EXPECT_NE(msg.find("201088"), std::string::npos) << msg;
  std::vector<int> negative = {-3};
  msg = error_of([&] { harmony().decode(negative); }, Status::kTokenOutOfRange);
  EXPECT_NE(msg.find("-3"), std::string::npos) << msg;
}

TEST(TokenizerBadInput, MissingVocabularyFileIsNamed) {
  std::string msg = error_of([] { Tokenizer::load("/nonexistent/dir/vocab.tiktoken"); },
                             Status::kIoError);
  EXPECT_NE(msg.find("/nonexistent/dir/vocab.tiktoken"), std::string::npos) << msg;
}

TEST(TokenizerBadInput, CorruptVocabularyFilesAreNamed) {
  mind4::testing::ScratchDir dir("corrupt");
  struct Case {
    const char* name;
    std::string content;
  };
  const std::vector<Case> cases = {
      {"bad_base64.tiktoken", "YQ== 0\n#$%^ 1\n"},
      {"no_rank.tiktoken", "YQ==\n"},
      {"dup_rank.tiktoken", "YQ== 0\nYg== 0\n"},
      {"dup_bytes.tiktoken", "YQ== 0\nYQ== 1\n"},
      {"empty.tiktoken", ""},
      {"truncated.json", "{\"bpe_ranks\": \"! 0 YQ== Yg"},
      {"no_pattern.json", "{\"bpe_ranks\": \"! 0 YQ==\", \"special_tokens\": {}}"},
      {"hf_bad.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}"},
  };
  for (const auto& c : cases) {
    auto path = (dir.path() / c.name).string();
    mind4::testing::write_file(path, c.content);
    std::string msg = error_of([&] { Tokenizer::load(path); }, Status::kCorruptFile);
    EXPECT_NE(msg.find(path), std::string::npos) << c.name << ": " << msg;
  }
}

TEST(TokenizerBadInput, MissingBuiltinVocabularySaysHowToGetIt) {
  // MIND4_DATA_DIR, when set, is the only place searched: an empty one makes the file missing.
  mind4::testing::ScratchDir dir("nodata");
  setenv("MIND4_DATA_DIR", dir.path().c_str(), 1);
  std::string msg = error_of([] { mind4::tok::find_o200k_base_json(); }, Status::kIoError);
  unsetenv("MIND4_DATA_DIR");
  EXPECT_NE(msg.find("o200k_base.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bash scripts/setup.sh"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.path().string()), std::string::npos) << msg;
}

TEST(TokenizerBadInput, Utf8StreamDecoderNeverEmitsHalfACharacter) {
  const std::string text = "Привет, 世界! 🙂 done";
  mind4::Utf8StreamDecoder d;
  std::string out;
  for (char c : text) {
    std::string part = d.push(std::string_view(&c, 1));
    // Every emitted part is whole characters: it never ends with a lead or continuation byte
    // that starts an unfinished character.
    out += part;
  }
  out += d.flush();
  EXPECT_EQ(out, text);

  mind4::Utf8StreamDecoder e;
  EXPECT_EQ(e.push("a\xe4\xb8"), "a");  // held back: maybe the start of 世
  EXPECT_EQ(e.push("\x96"), "\xe4\xb8\x96");
  EXPECT_EQ(e.push("\xff" "b"), "\xEF\xBF\xBD" "b");  // clearly invalid: replaced at once
  EXPECT_EQ(e.push("\xe4\xb8"), "");
  EXPECT_EQ(e.flush(), "\xEF\xBF\xBD");  // unfinished at the end
  EXPECT_EQ(e.push("\xe4" "x"), "\xEF\xBF\xBD" "x");
}

TEST(TokenizerBadInput, StreamingTokensDecodeToTheSameText) {
  const std::string text = "Ünïcödé 🙂‍↔️ ✓ текст 東京 नमस्ते";
  std::vector<int> ids = harmony().encode(text);
  mind4::Utf8StreamDecoder d;
  std::string out;
  for (int id : ids) out += d.push(harmony().token_bytes(id));
  out += d.flush();
  EXPECT_EQ(out, text);
}

TEST(TokenizerBadInput, LongSingleClassPiecesAreFastAndRoundTrip) {
  // One 200 KB piece: the heap merge keeps this well under a second even under sanitizers.
  for (std::string s : {std::string(200000, 'a'), std::string(100000, ' '),
                        std::string(50000, '\xd0') }) {
    if (s[0] == '\xd0') {
      s.clear();
      for (int i = 0; i < 50000; ++i) s += "Я";
    }
    std::vector<int> ids = harmony().encode(s);
    EXPECT_EQ(harmony().decode(ids), s);
    // At least two bytes per token: "Я" (2 bytes) is one token and does not merge with itself.
    EXPECT_LE(ids.size(), s.size() / 2);
  }
}

TEST(TokenizerBadInput, HarmonySpecialsAndVocabSize) {
  EXPECT_EQ(harmony().vocab_size(), 201088);
  EXPECT_EQ(harmony().special_id("<|start|>"), 200006);
  EXPECT_EQ(harmony().special_id("<|channel|>"), 200005);
  EXPECT_EQ(harmony().special_id("<|message|>"), 200008);
  EXPECT_EQ(harmony().special_id("<|end|>"), 200007);
  EXPECT_EQ(harmony().special_id("<|return|>"), 200002);
  EXPECT_EQ(harmony().special_id("<|call|>"), 200012);
  EXPECT_EQ(harmony().special_id("<|constrain|>"), 200003);
  EXPECT_EQ(harmony().special_id("<|startoftext|>"), 199998);
  EXPECT_EQ(harmony().special_id("<|endoftext|>"), 199999);
  EXPECT_EQ(harmony().special_id("<|reserved_200013|>"), 200013);
  EXPECT_EQ(harmony().special_id("<|reserved_201087|>"), 201087);
  EXPECT_FALSE(harmony().special_id("<|endofprompt|>").has_value());
  EXPECT_EQ(harmony().token_bytes(200006), "<|start|>");
  auto base = Tokenizer::load("o200k_base");
  EXPECT_EQ(base.vocab_size(), 200019);
  EXPECT_EQ(base.special_id("<|endofprompt|>"), 200018);
}

TEST(TokenizerBadInput, PatternRewriteUsesUnicodeWhiteSpace) {
  std::string r = mind4::tok::rewrite_pattern_for_pcre2(R"(\s+(?!\S)|[^\s\p{L}]|[\]\s])");
  EXPECT_EQ(r.find("\\s"), std::string::npos) << r;
  EXPECT_EQ(r.find("\\S"), std::string::npos) << r;
  mind4::tok::Regex re(R"(\s+)", "test");
  size_t b, e;
  std::string nel = "a\xc2\x85\xc2\xa0 b";  // U+0085 and U+00A0 are White_Space in Rust
  ASSERT_TRUE(re.find(nel, 0, b, e));
  EXPECT_EQ(b, 1u);
  EXPECT_EQ(e, 6u);
  EXPECT_THROW(mind4::tok::Regex("(unclosed", "test"), Error);
}

}  // namespace
