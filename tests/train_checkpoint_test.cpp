// Training checkpoint integrity: the CRC-32 against the standard's check values (and zlib's on a
// long buffer), and a step directory whose files are damaged inside their data (not only
// truncated), which must be named and refused before any state is used.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/crc32.h"
#include "io/safetensors.h"
#include "io_test_util.h"
#include "mind4/status.h"
#include "train/checkpoint.h"
#include "train/params.h"

namespace mind4::train {
namespace {

using mind4::testing::read_file;
using mind4::testing::ScratchDir;
using mind4::testing::write_file;

TEST(Crc32, MatchesTheStandardCheckValues) {
  // The CRC catalogue's check value for CRC-32/ISO-HDLC and two values from Python's zlib.crc32.
  EXPECT_EQ(crc32_update(0, "123456789", 9), 0xCBF43926u);
  EXPECT_EQ(crc32_update(0, "", 0), 0u);
  EXPECT_EQ(crc32_update(0, "a", 1), 0xE8B7BE43u);
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(crc32_update(0, fox.data(), fox.size()), 0x414FA339u);
  // zlib.crc32(bytes((i*7+3)%256 for i in range(1000003))): the 8-byte path, a 3-byte tail.
  std::string big(1000003, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char((i * 7 + 3) % 256);
  EXPECT_EQ(crc32_update(0, big.data(), big.size()), 0x095D6E8Au);
  // Continuation at any split equals one pass.
  for (size_t cut : {size_t(1), size_t(7), size_t(8), size_t(4097), size_t(999999)})
    EXPECT_EQ(crc32_update(crc32_update(0, big.data(), cut), big.data() + cut, big.size() - cut),
              0x095D6E8Au)
        << cut;
  ScratchDir dir("crc32");
  write_file(dir / "f", big);
  uint64_t size = 0;
  EXPECT_EQ(crc32_file(dir / "f", &size), 0x095D6E8Au);
  EXPECT_EQ(size, big.size());
  EXPECT_THROW(crc32_file(dir / "missing"), Error);
}

ModelConfig tck_model() {
  ModelConfig m;
  m.hidden_size = 32, m.num_hidden_layers = 1, m.num_attention_heads = 2;
  m.num_key_value_heads = 1, m.head_dim = 16, m.intermediate_size = 32, m.vocab_size = 40;
  m.initial_context_length = 16, m.max_context_length = 32, m.sliding_window = 8;
  m.num_experts = 2, m.experts_per_token = 1;
  return m;
}

// The message of the Error that f throws ("" and a failure when it does not throw).
template <typename F>
std::string tck_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kCorruptFile) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected Error(kCorruptFile)";
  return "";
}

TEST(TrainCheckpoint, FlippedByteInsideTheDataIsNamedAndRefused) {
  const ParamLayout layout = make_param_layout(tck_model());
  const size_t n = size_t(layout.total);
  std::vector<float> p(n), m(n), v(n);
  init_params(layout, 5, 0.1f, p.data());
  for (size_t i = 0; i < n; ++i) m[i] = 1e-3f * float(i % 17), v[i] = 1e-6f * float(i % 5);
  ScratchDir dir("train_ckpt_crc");
  TrainState st{.step = 3, .sampler_state = 99, .tokens_seen = 300, .fingerprint = "fp"};
  save_checkpoint(dir.str(), layout, p.data(), m.data(), v.data(), st, 2, {});
  const std::string step = latest_checkpoint(dir.str());
  ASSERT_EQ(step, dir / "step_00000003");
  ASSERT_TRUE(std::filesystem::exists(step + "/checksums.crc32"));
  std::vector<float> p2(n), m2(n), v2(n);
  EXPECT_EQ(load_checkpoint_state(step, layout, p2.data(), m2.data(), v2.data()).step, 3);
  EXPECT_EQ(v2, v);

  const std::string state = step + "/state.safetensors", model = step + "/model.safetensors";
  const std::string good_state = read_file(state), good_model = read_file(model);
  // One byte inside adam_v's data (the file's last tensor): the safetensors header and sizes stay
  // valid, so only the checksum can tell.
  std::string bad = good_state;
  bad[bad.size() - 6] ^= 0x01;
  write_file(state, bad);
  EXPECT_NO_THROW(SafeTensorsFile::open(state));
  std::string msg =
      tck_error([&] { load_checkpoint_state(step, layout, p2.data(), m2.data(), v2.data()); });
  EXPECT_NE(msg.find(state), std::string::npos) << msg;
  EXPECT_NE(msg.find("corrupt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("will not start"), std::string::npos) << msg;
  EXPECT_EQ(v2, v);  // nothing was loaded from the damaged file

  // The model file of the step is covered too.
  write_file(state, good_state);
  bad = good_model;
  bad[bad.size() / 2] ^= 0x40;
  write_file(model, bad);
  msg = tck_error([&] { verify_checkpoint_files(step); });
  EXPECT_NE(msg.find(model), std::string::npos) << msg;
  write_file(model, good_model);
  EXPECT_NO_THROW(verify_checkpoint_files(step));

  // Truncation, a damaged checksums line, a missing checksums file.
  write_file(state, good_state.substr(0, good_state.size() - 4));
  msg = tck_error([&] { verify_checkpoint_files(step); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  write_file(state, good_state);
  const std::string sums = read_file(step + "/checksums.crc32");
  write_file(step + "/checksums.crc32", sums + "zz\n");
  msg = tck_error([&] { verify_checkpoint_files(step); });
  EXPECT_NE(msg.find("checksums.crc32"), std::string::npos) << msg;
  std::filesystem::remove(step + "/checksums.crc32");
  msg = tck_error([&] { load_checkpoint_state(step, layout, p2.data(), m2.data(), v2.data()); });
  EXPECT_NE(msg.find("no checksums.crc32"), std::string::npos) << msg;
}

}  // namespace
}  // namespace mind4::train
