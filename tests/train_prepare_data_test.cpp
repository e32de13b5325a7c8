// `mind4 prepare-data` on inputs it cannot make a dataset of: an empty file and a text too small
// for a train/validation split are named, with what to change, and an earlier output stays as it
// was. A text just large enough is the positive control.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "io_test_util.h"
#include "train/data.h"

namespace mind4::train {
namespace {

using mind4::testing::read_file;
using mind4::testing::ScratchDir;
using mind4::testing::write_file;

struct PdRun {
  int rc = 0;
  std::string out;
};

PdRun pd_run(const std::string& args) {
  const std::string bin = mind4::testing::mind4_binary();
  const std::string tok = std::string(MIND4_SOURCE_DIR) + "/models/default/tokenizer.tiktoken";
  PdRun r;
  FILE* p = popen(
      ("MIND4_NO_PROGRESS=1 " + bin + " prepare-data --tokenizer " + tok + " " + args + " 2>&1")
          .c_str(),
      "r");
  char buf[512];
  while (fgets(buf, sizeof buf, p)) r.out += buf;
  r.rc = pclose(p);
  return r;
}

TEST(PrepareData, EmptyInputIsNamedAndAnEarlierOutputIsKept) {
  ScratchDir dir("pd_empty");
  const std::string empty = dir / "empty.txt", out = dir / "out";
  write_file(empty, "");
  std::filesystem::create_directories(out);
  write_token_shard(out + "/train_0000.bin", {1, 2, 3}, 4096);
  const std::string before = read_file(out + "/train_0000.bin");
  PdRun r = pd_run("--input " + empty + " --out " + out);
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find(empty), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("is empty"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(out + "/train_0000.bin"), before);
  // An empty file among good ones is named too (not silently skipped).
  write_file(dir / "good.txt", std::string(4000, 'a') + "\n");
  r = pd_run("--input " + (dir / "good.txt") + " " + empty + " --out " + out);
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find(empty), std::string::npos) << r.out;
}

TEST(PrepareData, TooSmallInputIsNamedWithTheFix) {
  ScratchDir dir("pd_small");
  const std::string small = dir / "small.txt", out = dir / "out";
  std::string text;
  for (int i = 0; i < 40; ++i) text += "And God saw the light, that it was good.\n";  // 1640 bytes
  write_file(small, text);
  // 16 KiB chunks: one chunk, so no validation chunk (1 in 20).
  PdRun r = pd_run("--input " + small + " --out " + out);
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find(small), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("too small"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--chunk-bytes"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(out + "/train_0000.bin"));
  // The fix the message gives works: 40 one-line chunks, 2 of them validation.
  r = pd_run("--input " + small + " --out " + out + " --chunk-bytes 40");
  ASSERT_EQ(r.rc, 0) << r.out;
  const TokenSplit train = read_token_split(out, "train"), val = read_token_split(out, "val");
  EXPECT_GT(val.tokens.size(), 0u);
  EXPECT_GT(train.tokens.size(), 10 * val.tokens.size());
}

}  // namespace
}  // namespace mind4::train
