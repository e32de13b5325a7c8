// Conversions between layouts and expert formats. Oracles: the source bytes themselves (round
// trips must be bit-exact), a per-block MXFP4 reference written here from the OCP MX definition,
// and the E2M1 table for dequantisation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "io/checkpoint.h"
#include "io/random_checkpoint.h"
#include "io_test_util.h"
#include "mind4/status.h"
#include "weights_compare.h"

namespace mind4 {
namespace {

using testing::ScratchDir;

void expect_same_files(const std::string& a, const std::string& b) {
  SafeTensorsSet x = SafeTensorsSet::open(a), y = SafeTensorsSet::open(b);
  ASSERT_EQ(x.size(), y.size());
  for (const SafeTensor* t : x.tensors()) {
    const SafeTensor* u = y.find(t->name);
    ASSERT_NE(u, nullptr) << t->name;
    EXPECT_EQ(t->dtype, u->dtype) << t->name;
    EXPECT_EQ(t->shape, u->shape) << t->name;
    ASSERT_EQ(t->nbytes, u->nbytes) << t->name;
    EXPECT_EQ(std::memcmp(t->data, u->data, t->nbytes), 0) << t->name;
  }
}

// OCP MX v1.0, written independently of core/dtype: X = 2^(floor(log2(amax)) - emax_elem), emax of
// e2m1 = 2; each element is x / X rounded to the nearest e2m1 value, ties to the even mantissa,
// clamped to +-6.
void reference_quantize(const float* x, uint8_t* packed, uint8_t* scale) {
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  int e = 0;
  if (amax > 0) {
    int exponent;
    std::frexp(amax, &exponent);  // amax = m * 2^exponent, m in [0.5, 1)
    e = exponent - 1 - 2;
  }
  *scale = uint8_t(e + 127);
  static const float grid[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  uint8_t codes[32];
  for (int i = 0; i < 32; ++i) {
    double v = std::fabs(double(x[i]) / std::ldexp(1.0, e));
    int best = 0;
    for (int k = 1; k < 8; ++k) {
      double d = std::fabs(v - grid[k]), db = std::fabs(v - grid[best]);
      if (d < db || (d == db && (k & 1) == 0)) best = k;  // tie: even code = even mantissa
    }
    codes[i] = uint8_t(best | (std::signbit(x[i]) ? 8 : 0));
  }
  for (int i = 0; i < 16; ++i) packed[i] = uint8_t(codes[2 * i] | (codes[2 * i + 1] << 4));
}

TEST(Convert, Mxfp4OriginalToHfAndBackIsBitExact) {
  ScratchDir a("conv"), b("conv"), c("conv");
  write_random_checkpoint(a.str(), model_preset("tiny"), true, 11);
  convert_checkpoint(a.str(), b.str(), CheckpointLayout::kHuggingFace, true, 0);
  SafeTensorsSet hf = SafeTensorsSet::open(b.str());
  EXPECT_EQ(detect_checkpoint_format(hf).layout, CheckpointLayout::kHuggingFace);
  EXPECT_NE(hf.find("model.layers.1.mlp.experts.gate_up_proj_blocks"), nullptr);
  EXPECT_NE(hf.find("model.layers.0.self_attn.k_proj.bias"), nullptr);
  convert_checkpoint(b.str(), c.str(), CheckpointLayout::kOriginal, true, 0);
  expect_same_files(a.str(), c.str());
  EXPECT_EQ(load_model_config(c.str()).rope_scaling_factor,
            model_preset("tiny").rope_scaling_factor);
  // Loading either layout gives the same weights.
  testing::expect_same_weights(load_checkpoint(a.str()), load_checkpoint(b.str()));
}

TEST(Convert, Bf16ExpertsRoundTripThroughHfTransposedLayout) {
  ScratchDir a("conv"), b("conv"), c("conv");
  write_random_checkpoint(a.str(), model_preset("tiny"), false, 5);
  convert_checkpoint(a.str(), b.str(), CheckpointLayout::kHuggingFace, false, 0);
  // HF stores gate_up_proj as [E, H, 2I]: element (e, h, j) is original mlp1 (e, j, h).
  SafeTensorsSet orig = SafeTensorsSet::open(a.str()), hf = SafeTensorsSet::open(b.str());
  const SafeTensor& o = orig.get("block.0.mlp.mlp1_weight");
  const SafeTensor& h = hf.get("model.layers.0.mlp.experts.gate_up_proj");
  ASSERT_EQ(h.shape, (std::vector<int64_t>{4, 64, 128}));
  for (int64_t e : {0, 3})
    for (int64_t row : {0, 5, 127})
      for (int64_t col : {0, 31, 63}) {
        uint16_t x, y;
        std::memcpy(&x, o.data + 2 * ((e * 128 + row) * 64 + col), 2);
        std::memcpy(&y, h.data + 2 * ((e * 64 + col) * 128 + row), 2);
        EXPECT_EQ(x, y) << e << " " << row << " " << col;
      }
  testing::expect_same_weights(load_checkpoint(a.str()), load_checkpoint(b.str()));
  convert_checkpoint(b.str(), c.str(), CheckpointLayout::kOriginal, false, 0);
  expect_same_files(a.str(), c.str());
}

TEST(Convert, Bf16ToMxfp4MatchesThePerBlockReference) {
  ScratchDir a("conv"), b("conv");
  write_random_checkpoint(a.str(), model_preset("tiny"), false, 9);
  convert_checkpoint(a.str(), b.str(), CheckpointLayout::kOriginal, true, 0);
  SafeTensorsSet src = SafeTensorsSet::open(a.str()), dst = SafeTensorsSet::open(b.str());
  for (const char* name : {"block.0.mlp.mlp1_weight", "block.1.mlp.mlp2_weight"}) {
    const SafeTensor& w = src.get(name);
    const SafeTensor& blocks = dst.get(std::string(name) + ".blocks");
    const SafeTensor& scales = dst.get(std::string(name) + ".scales");
    int64_t nblocks = w.numel() / 32;
    ASSERT_EQ(scales.numel(), nblocks);
    for (int64_t k = 0; k < nblocks; ++k) {
      float x[32];
      for (int i = 0; i < 32; ++i) {
        uint16_t h;
        std::memcpy(&h, w.data + 2 * (32 * k + i), 2);
        x[i] = bf16_to_f32(h);
      }
      uint8_t packed[16], scale;
      reference_quantize(x, packed, &scale);
      ASSERT_EQ(scales.data[k], scale) << name << " block " << k;
      ASSERT_EQ(std::memcmp(blocks.data + 16 * k, packed, 16), 0) << name << " block " << k;
    }
  }
  // Dense tensors and vectors are untouched.
  EXPECT_EQ(std::memcmp(src.get("embedding.weight").data, dst.get("embedding.weight").data,
                        src.get("embedding.weight").nbytes),
            0);
}

TEST(Convert, Mxfp4ToBf16DequantisesExactly) {
  ScratchDir a("conv"), b("conv");
  write_random_checkpoint(a.str(), model_preset("tiny"), true, 4);
  convert_checkpoint(a.str(), b.str(), CheckpointLayout::kOriginal, false, 0);
  SafeTensorsSet src = SafeTensorsSet::open(a.str()), dst = SafeTensorsSet::open(b.str());
  const SafeTensor& blocks = src.get("block.1.mlp.mlp2_weight.blocks");
  const SafeTensor& scales = src.get("block.1.mlp.mlp2_weight.scales");
  const SafeTensor& w = dst.get("block.1.mlp.mlp2_weight");
  ASSERT_EQ(w.dtype, DType::kBF16);
  for (int64_t j = 0; j < w.numel(); ++j) {
    uint8_t byte = blocks.data[j / 2];
    float expected = kE2M1Values[j % 2 ? byte >> 4 : byte & 15] *
                     std::ldexp(1.0f, int(scales.data[j / 32]) - 127);
    uint16_t h;
    std::memcpy(&h, w.data + 2 * j, 2);
    ASSERT_EQ(bf16_to_f32(h), expected) << j;
  }
  // And back to MXFP4: the same values (the scale may drop when a block's largest code is below 4,
  // but every e2m1 value times 2 or 4 is again an e2m1 value, so nothing is lost).
  ScratchDir c("conv");
  convert_checkpoint(b.str(), c.str(), CheckpointLayout::kOriginal, true, 0);
  SafeTensorsSet back = SafeTensorsSet::open(c.str());
  const SafeTensor& s2 = back.get("block.1.mlp.mlp2_weight.scales");
  const SafeTensor& b2 = back.get("block.1.mlp.mlp2_weight.blocks");
  for (int64_t k = 0; k < scales.numel(); ++k) {
    float x[32], y[32];
    dequantize_mxfp4_block(blocks.data + 16 * k, scales.data[k], x);
    dequantize_mxfp4_block(b2.data + 16 * k, s2.data[k], y);
    for (int i = 0; i < 32; ++i) ASSERT_EQ(x[i], y[i]) << k << " " << i;
  }
}

TEST(Convert, ShardedOutputWithIndexLoads) {
  ScratchDir a("conv"), b("conv");
  write_random_checkpoint(a.str(), model_preset("tiny"), true, 2);
  convert_checkpoint(a.str(), b.str(), CheckpointLayout::kHuggingFace, true, 200000);
  EXPECT_TRUE(std::filesystem::exists(b / "model.safetensors.index.json"));
  EXPECT_GT(SafeTensorsSet::open(b.str()).files().size(), 1u);
  testing::expect_same_weights(load_checkpoint(a.str()), load_checkpoint(b.str()));
}

TEST(Convert, RefusesToMixWithOtherFilesOrOverwriteTheSource) {
  ScratchDir a("conv"), b("conv");
  write_random_checkpoint(a.str(), model_preset("tiny"), true, 2);
  testing::write_file(b / "other.safetensors", "x");
  try {
    convert_checkpoint(a.str(), b.str(), CheckpointLayout::kHuggingFace, true, 0);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("other.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(convert_checkpoint(a.str(), a.str(), CheckpointLayout::kHuggingFace, true, 0),
               Error);
}

TEST(RandomCheckpoint, SameSeedSameBytesDifferentSeedDifferentBytes) {
  ScratchDir a("rand"), b("rand"), c("rand");
  write_random_checkpoint(a.str(), model_preset("tiny"), true, 42);
  write_random_checkpoint(b.str(), model_preset("tiny"), true, 42);
  write_random_checkpoint(c.str(), model_preset("tiny"), true, 43);
  EXPECT_EQ(testing::read_file(a / "model.safetensors"),
            testing::read_file(b / "model.safetensors"));
  EXPECT_NE(testing::read_file(a / "model.safetensors"),
            testing::read_file(c / "model.safetensors"));
  // MXFP4 scales stay in the range quantised N(0, 0.02) values produce (2^-9 .. 2^-6).
  SafeTensorsSet set = SafeTensorsSet::open(a.str());
  const SafeTensor& s = set.get("block.0.mlp.mlp1_weight.scales");
  for (int64_t i = 0; i < s.numel(); ++i) {
    EXPECT_GE(s.data[i], 127 - 10);
    EXPECT_LE(s.data[i], 127 - 5);
  }
}

int run(const std::string& args) {
  std::string cmd = mind4::testing::mind4_binary() + " " + args;
  return std::system(cmd.c_str());
}

TEST(ConvertCli, RandomConvertInspect) {
  ScratchDir a("cli"), b("cli");
  ASSERT_EQ(
      run("random-checkpoint --preset tiny --seed 3 --out " + a.str() + " > " + (a / "log.txt")),
      0);
  ASSERT_EQ(run("convert --from " + a.str() + " --to " + b.str() +
                " --layout hf --experts bf16 > /dev/null"),
            0);
  ASSERT_EQ(run("inspect " + b.str() + " > " + (a / "inspect.txt")), 0);
  std::string out = testing::read_file(a / "inspect.txt");
  EXPECT_NE(out.find("layout: hf"), std::string::npos) << out;
  EXPECT_NE(out.find("experts: bf16"), std::string::npos) << out;
  EXPECT_NE(out.find("model.layers.1.mlp.experts.gate_up_proj "), std::string::npos) << out;
  EXPECT_NE(out.find("check: every tensor present"), std::string::npos) << out;
  // Errors are reported with exit status 1 and a message naming the problem.
  EXPECT_NE(run("inspect " + (a / "nope") + " 2> " + (a / "err.txt")), 0);
  EXPECT_NE(testing::read_file(a / "err.txt").find("does not exist"), std::string::npos);
}

TEST(ConvertCli, MissingConfiguredCheckpointSaysHowToPassOne) {
  ScratchDir a("cli");
  // The repository's config.json with paths.checkpoint pointing where nothing is.
  std::string config = testing::read_file("config.json");
  const std::string from = "\"models/default\"";
  ASSERT_NE(config.find(from), std::string::npos);
  config.replace(config.find(from), from.size(), "\"" + (a / "no-model") + "\"");
  testing::write_file(a / "config.json", config);
  std::string err = a / "err.txt";
  EXPECT_NE(run("inspect --config " + (a / "config.json") + " 2> " + err + " > /dev/null"), 0);
  std::string msg = testing::read_file(err);
  EXPECT_NE(msg.find(a / "no-model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--checkpoint"), std::string::npos) << msg;
  // A bad flag value names the flag.
  EXPECT_NE(run("inspect --top-p 2 2> " + err + " > /dev/null"), 0);
  msg = testing::read_file(err);
  EXPECT_NE(msg.find("sampling.top_p"), std::string::npos) << msg;
  // Flags reach the resolved config.
  ScratchDir ck("cli");
  ASSERT_EQ(run("random-checkpoint --preset tiny --out " + ck.str() + " > /dev/null"), 0);
  ASSERT_EQ(run("inspect --summary --checkpoint " + ck.str() + " --top-k 7 > " + (a / "out.txt")),
            0);
  std::string out = testing::read_file(a / "out.txt");
  EXPECT_NE(out.find("\"top_k\": 7"), std::string::npos) << out;
  EXPECT_NE(out.find("\"hidden_size\": 64"), std::string::npos)
      << out;  // from the checkpoint's config
}

}  // namespace
}  // namespace mind4
