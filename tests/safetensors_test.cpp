// SafeTensors reading and writing. The format facts checked here come from the format's README
// (8-byte LE header length, JSON header, contiguous data section); bad inputs are built by hand.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "io_test_util.h"
#include "mind4/status.h"

namespace mind4 {
namespace {

using testing::raw_safetensors;
using testing::read_file;
using testing::ScratchDir;
using testing::write_file;

// Expects opening `path` to throw Error(status) whose message contains every one of `parts`.
void expect_error(const std::string& path, Status status,
                  std::initializer_list<std::string> parts) {
  try {
    SafeTensorsSet::open(path);
    ADD_FAILURE() << "opening " << path << " did not fail";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

std::string f32_bytes(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * 4);
}

TEST(SafeTensors, ReadsAHandWrittenFile) {
  ScratchDir dir("st");
  // "a" F32 [2] at [0,8), "b" U8 [3] at [8,11), listed out of order, plus metadata.
  std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  write_file(dir / "m.safetensors",
             raw_safetensors(header, f32_bytes({1.5f, -2.0f}) + "\x01\x02\x03"));
  auto set = SafeTensorsSet::open(dir / "m.safetensors");
  ASSERT_EQ(set.size(), 2u);
  const SafeTensor& ta = set.get("a");
  EXPECT_EQ(ta.dtype, DType::kF32);
  EXPECT_EQ(ta.shape, std::vector<int64_t>{2});
  float a1;
  std::memcpy(&a1, ta.data + 4, 4);
  EXPECT_EQ(a1, -2.0f);
  const SafeTensor& tb = set.get("b");
  EXPECT_EQ(tb.nbytes, 3u);
  EXPECT_EQ(tb.data[2], 3);
  EXPECT_EQ(set.files()[0]->metadata().at("format"), "pt");
  EXPECT_EQ(set.find("c"), nullptr);
  try {
    set.get("c");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kMissingTensor);
    EXPECT_NE(std::string(e.what()).find("'c'"), std::string::npos);
  }
}

TEST(SafeTensors, ScalarsAndEmptyTensorsAreValid) {
  ScratchDir dir("st");
  std::string header = R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                       R"("e":{"dtype":"BF16","shape":[0,5],"data_offsets":[4,4]}})";
  write_file(dir / "m.safetensors", raw_safetensors(header, f32_bytes({3.0f})));
  auto set = SafeTensorsSet::open(dir / "m.safetensors");
  EXPECT_EQ(set.get("s").numel(), 1);
  EXPECT_EQ(set.get("e").nbytes, 0u);
}

TEST(SafeTensors, WriterOutputIsReadBackAndFollowsTheFormat) {
  ScratchDir dir("st");
  std::vector<uint8_t> u8 = {9, 8, 7};
  std::vector<uint16_t> bf = {0x3f80, 0xc000};
  std::vector<float> f = {1, 2, 3, 4};
  write_safetensors(dir / "w.safetensors",
                    {{{"u", DType::kU8, {3}}, u8.data()},
                     {{"b", DType::kBF16, {2}}, bf.data()},
                     {{"f", DType::kF32, {2, 2}}, f.data()}},
                    {{"k", "v"}});
  std::string raw = read_file(dir / "w.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section must start 8-byte aligned";
  EXPECT_EQ(raw.size(), 8 + n + 3 + 4 + 16);
  auto set = SafeTensorsSet::open(dir / "w.safetensors");
  EXPECT_EQ(std::memcmp(set.get("f").data, f.data(), 16), 0);
  EXPECT_EQ(std::memcmp(set.get("b").data, bf.data(), 4), 0);
  EXPECT_EQ(std::memcmp(set.get("u").data, u8.data(), 3), 0);
  // Larger elements first keeps every tensor aligned to its element size.
  EXPECT_LT(set.get("f").data, set.get("b").data);
  EXPECT_LT(set.get("b").data, set.get("u").data);
  EXPECT_EQ(set.files()[0]->metadata().at("k"), "v");
  // No temporary file left behind.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.str())) files += (void(e), 1);
  EXPECT_EQ(files, 1);
}

TEST(SafeTensors, AbandonedWriterLeavesNothing) {
  ScratchDir dir("st");
  {
    SafeTensorsWriter w(dir / "x.safetensors", {{"t", DType::kF32, {4}}});
    w.data("t")[0] = 1;
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.str()));
}

TEST(SafeTensorsBadInput, TruncatedFile) {
  ScratchDir dir("st");
  write_file(dir / "a.safetensors", "\x05\x00\x00");
  expect_error(dir / "a.safetensors", Status::kCorruptFile, {"a.safetensors", "too short"});
  // A valid header whose data section was cut off.
  std::string header = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  write_file(dir / "b.safetensors", raw_safetensors(header, f32_bytes({1, 2})));
  expect_error(dir / "b.safetensors", Status::kCorruptFile,
               {"b.safetensors", "'w'", "past the data section"});
}

TEST(SafeTensorsBadInput, HeaderLengthPastEndOfFile) {
  ScratchDir dir("st");
  write_file(dir / "a.safetensors", raw_safetensors("{}", "", 1000));
  expect_error(dir / "a.safetensors", Status::kCorruptFile,
               {"a.safetensors", "header length 1000", "past the end"});
  write_file(dir / "b.safetensors", raw_safetensors("{}", "", uint64_t(1) << 62));
  expect_error(dir / "b.safetensors", Status::kCorruptFile, {"exceeds the limit"});
}

TEST(SafeTensorsBadInput, BadJson) {
  ScratchDir dir("st");
  write_file(dir / "a.safetensors", raw_safetensors(R"({"w": {"dtype": "F32", )", ""));
  expect_error(dir / "a.safetensors", Status::kCorruptFile, {"a.safetensors", "not valid JSON"});
  write_file(dir / "b.safetensors", raw_safetensors("[1,2]", ""));
  expect_error(dir / "b.safetensors", Status::kCorruptFile, {"not a JSON object"});
  std::string dup = R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                    R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  write_file(dir / "c.safetensors", raw_safetensors(dup, "ab"));
  expect_error(dir / "c.safetensors", Status::kCorruptFile, {"'w' twice"});
  write_file(dir / "d.safetensors", raw_safetensors(R"({"__metadata__":{"a":1}})", ""));
  expect_error(dir / "d.safetensors", Status::kCorruptFile, {"__metadata__", "'a'"});
  write_file(dir / "e.safetensors",
             raw_safetensors(R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "a"));
  expect_error(dir / "e.safetensors", Status::kCorruptFile, {"'w'", "negative"});
  write_file(dir / "f.safetensors", raw_safetensors(R"({"w":{"dtype":"U8","shape":[1]}})", "a"));
  expect_error(dir / "f.safetensors", Status::kCorruptFile, {"'w'", "data_offsets"});
}

TEST(SafeTensorsBadInput, UnknownDtype) {
  ScratchDir dir("st");
  write_file(dir / "a.safetensors",
             raw_safetensors(R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,1]}})", "a"));
  expect_error(dir / "a.safetensors", Status::kCorruptFile,
               {"a.safetensors", "'w'", "unknown dtype 'F12'"});
}

TEST(SafeTensorsBadInput, ShapeSpanMismatch) {
  ScratchDir dir("st");
  write_file(dir / "a.safetensors",
             raw_safetensors(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,10]}})",
                             std::string(10, 'x')));
  expect_error(dir / "a.safetensors", Status::kCorruptFile,
               {"'w'", "[2, 3]", "needs 12 bytes", "span 10"});
  // Dimensions whose product overflows 64 bits.
  write_file(
      dir / "b.safetensors",
      raw_safetensors(
          R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", ""));
  expect_error(dir / "b.safetensors", Status::kCorruptFile, {"'w'", "overflows"});
}

TEST(SafeTensorsBadInput, OverlappingSpans) {
  ScratchDir dir("st");
  std::string header = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                       R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})";
  write_file(dir / "a.safetensors", raw_safetensors(header, "abcdef"));
  expect_error(dir / "a.safetensors", Status::kCorruptFile,
               {"a.safetensors", "'b'", "overlaps tensor 'a'"});
}

TEST(SafeTensorsBadInput, OutOfRangeSpanGapAndTrailingBytes) {
  ScratchDir dir("st");
  write_file(dir / "a.safetensors",
             raw_safetensors(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})", "abcd"));
  expect_error(dir / "a.safetensors", Status::kCorruptFile,
               {"'a'", "[8, 12)", "past the data section of 4"});
  write_file(dir / "b.safetensors",
             raw_safetensors(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", "abcd"));
  expect_error(dir / "b.safetensors", Status::kCorruptFile, {"gap of 2 bytes", "'a'"});
  write_file(dir / "c.safetensors",
             raw_safetensors(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "abcd"));
  expect_error(dir / "c.safetensors", Status::kCorruptFile,
               {"data section has 4 bytes", "cover 2"});
  write_file(dir / "d.safetensors",
             raw_safetensors(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[3,2]}})", "abcd"));
  expect_error(dir / "d.safetensors", Status::kCorruptFile, {"'a'", "begin 3 > end 2"});
}

TEST(SafeTensorsBadInput, DuplicateTensorAcrossShards) {
  ScratchDir dir("st");
  std::string h = R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  write_file(dir / "model-1.safetensors", raw_safetensors(h, "a"));
  write_file(dir / "model-2.safetensors", raw_safetensors(h, "b"));
  expect_error(dir.str(), Status::kCorruptFile,
               {"'w'", "model-1.safetensors", "model-2.safetensors"});
}

TEST(SafeTensorsIndex, ReadsShardsThroughTheIndex) {
  ScratchDir dir("st");
  write_file(dir / "s1.safetensors",
             raw_safetensors(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "a"));
  write_file(dir / "s2.safetensors",
             raw_safetensors(R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "b"));
  write_file(
      dir / "model.safetensors.index.json",
      R"({"metadata":{"total_size":2},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  auto set = SafeTensorsSet::open(dir.str());
  EXPECT_EQ(set.size(), 2u);
  EXPECT_EQ(set.get("b").data[0], 'b');
  EXPECT_EQ(SafeTensorsSet::open(dir / "model.safetensors.index.json").size(), 2u);
}

TEST(SafeTensorsBadInput, IndexNamingAMissingFile) {
  ScratchDir dir("st");
  write_file(dir / "s1.safetensors",
             raw_safetensors(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "a"));
  write_file(dir / "model.safetensors.index.json",
             R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  expect_error(dir.str(), Status::kIoError,
               {"model.safetensors.index.json", "'s2.safetensors'", "does not exist"});
}

TEST(SafeTensorsBadInput, IndexInconsistentWithShards) {
  ScratchDir dir("st");
  write_file(dir / "s1.safetensors",
             raw_safetensors(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "a"));
  write_file(dir / "s2.safetensors",
             raw_safetensors(R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "b"));
  // Tensor placed in the wrong shard.
  write_file(dir / "model.safetensors.index.json",
             R"({"weight_map":{"a":"s2.safetensors","b":"s2.safetensors","c":"s1.safetensors"}})");
  expect_error(dir.str(), Status::kCorruptFile, {"'a'", "s2.safetensors", "s1.safetensors"});
  // A tensor in a shard but not in the index.
  write_file(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors"}})");
  write_file(
      dir / "s1.safetensors",
      raw_safetensors(
          R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"z":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
          "az"));
  expect_error(dir.str(), Status::kCorruptFile, {"'z'", "missing from the index"});
  write_file(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"../s1.safetensors"}})");
  expect_error(dir.str(), Status::kCorruptFile, {"'a'", "not a file in the index's directory"});
  write_file(dir / "model.safetensors.index.json", R"({"weight_map": 5})");
  expect_error(dir.str(), Status::kCorruptFile, {"weight_map"});
  write_file(dir / "model.safetensors.index.json", R"({"weight_map": )");
  expect_error(dir.str(), Status::kCorruptFile, {"not valid JSON"});
}

TEST(SafeTensorsBadInput, MissingPathAndEmptyDirectory) {
  ScratchDir dir("st");
  expect_error(dir / "nope", Status::kIoError, {"nope", "does not exist"});
  expect_error(dir.str(), Status::kIoError, {"no *.safetensors"});
}

TEST(SafeTensorsBadInput, RandomCorruptionNeverCrashes) {
  // Flip bytes of a valid file's header: every outcome must be a clean Error or a valid read.
  ScratchDir dir("st");
  std::vector<float> f(8, 1.0f);
  write_safetensors(dir / "ok.safetensors",
                    {{{"t", DType::kF32, {2, 4}}, f.data()}, {{"u", DType::kU8, {3}}, f.data()}});
  std::string good = read_file(dir / "ok.safetensors");
  uint32_t state = 12345;
  for (int trial = 0; trial < 300; ++trial) {
    std::string bad = good;
    for (int k = 0; k < 3; ++k) {
      state = state * 1664525u + 1013904223u;
      size_t pos = (state >> 8) % std::min<size_t>(bad.size(), 120);
      bad[pos] = char(state >> 24);
    }
    write_file(dir / "bad.safetensors", bad);
    try {
      auto set = SafeTensorsSet::open(dir / "bad.safetensors");
      for (const SafeTensor* t : set.tensors()) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < t->nbytes; ++i) sink = sink + t->data[i];  // in bounds under ASan
      }
    } catch (const Error& e) {
      EXPECT_TRUE(e.status() == Status::kCorruptFile) << e.what();
    }
  }
}

}  // namespace
}  // namespace mind4
