// o200k_base ids compared with the tiktoken npm package (the independent oracle) on generated
// strings of many scripts plus KJV prose, and decode(encode(x)) == x on all of them.
// The node script writes strings and expected ids in bulk; the comparison runs in-process.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mind4/tokenizer.h"
#include "tokenizer/test_util.h"

namespace {

namespace fs = std::filesystem;

std::vector<std::string> read_strings(const fs::path& file) {
  std::string data = mind4::testing::read_file(file);
  std::vector<std::string> out;
  for (size_t pos = 0; pos + 4 <= data.size();) {
    uint32_t n;
    std::memcpy(&n, data.data() + pos, 4);
    out.push_back(data.substr(pos + 4, n));
    pos += 4 + n;
  }
  return out;
}

std::vector<std::vector<int>> read_ids(const fs::path& file) {
  std::string data = mind4::testing::read_file(file);
  std::vector<std::vector<int>> out;
  for (size_t pos = 0; pos + 4 <= data.size();) {
    uint32_t n;
    std::memcpy(&n, data.data() + pos, 4);
    std::vector<int> ids(n);
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t v;
      std::memcpy(&v, data.data() + pos + 4 + 4 * i, 4);
      ids[i] = static_cast<int>(v);
    }
    out.push_back(std::move(ids));
    pos += 4 + 4 * n;
  }
  return out;
}

std::string show_ids(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  if (ids.size() > 40) s += " ...";
  return s;
}

TEST(TokenizerOracle, SameIdsAsTiktokenNpmOnGeneratedStringsAndProse) {
  // The floor: at least 10,000 generated strings and 1 MB of real prose, in every build.
  const int count = 12000;
  const int prose_bytes = 1200000;

  ASSERT_EQ(std::system("node --version > /dev/null 2>&1"), 0)
      << "node is missing: the tokenizer oracle needs Node.js and the tiktoken npm package "
         "(bash scripts/setup.sh)";
  mind4::testing::ScratchDir dir("oracle");
  fs::path kjv = dir.path() / "kjv.txt";
  ASSERT_TRUE(mind4::testing::write_kjv_text(kjv))
      << "the KJV text (Debian packages bible-kjv and bible-kjv-text) is missing: run "
         "bash scripts/setup.sh";

  std::string cmd = "node tests/tokenizer/oracle.js --count " + std::to_string(count) +
                    " --seed 20261125 --prose " + kjv.string() + " --prose-bytes " +
                    std::to_string(prose_bytes) + " --out " + dir.path().string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "the oracle script failed: " << cmd;

  auto strings = read_strings(dir.path() / "strings.bin");
  auto expected = read_ids(dir.path() / "ids.bin");
  ASSERT_EQ(strings.size(), expected.size());
  ASSERT_GE(strings.size(), static_cast<size_t>(count));

  auto tok = mind4::Tokenizer::load("o200k_base");
  size_t mismatches = 0, bad_roundtrips = 0, total_bytes = 0, prose_strings = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    total_bytes += strings[i].size();
    std::vector<int> got = tok.encode(strings[i]);
    if (got != expected[i] && ++mismatches <= 5) {
      ADD_FAILURE() << "string " << i << " " << mind4::testing::escaped(strings[i])
                    << "\n  tiktoken: " << show_ids(expected[i]) << "\n  mind4:    "
                    << show_ids(got);
    }
    if (tok.decode(got) != strings[i] && ++bad_roundtrips <= 5) {
      ADD_FAILURE() << "decode(encode(x)) != x for string " << i << " "
                    << mind4::testing::escaped(strings[i]);
    }
    if (i >= static_cast<size_t>(count) + 9) ++prose_strings;
  }
  EXPECT_EQ(mismatches, 0u) << "of " << strings.size() << " strings";
  EXPECT_EQ(bad_roundtrips, 0u);
  EXPECT_GE(total_bytes, static_cast<size_t>(prose_bytes));
  EXPECT_GT(prose_strings, 100u);
}

}  // namespace
