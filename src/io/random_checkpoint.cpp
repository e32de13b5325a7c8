#include "io/random_checkpoint.h"

#include <cmath>
#include <cstring>
#include <numbers>

#include "mind4/status.h"

namespace mind4 {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// wyrand: one multiply per 64 random bits, plenty for filling weights.
struct Rng {
  uint64_t s;
  uint64_t next() {
    s += 0xa0761d6478bd642full;
    __uint128_t m = __uint128_t(s) * (s ^ 0xe7037ed1a0b428dbull);
    return uint64_t(m >> 64) ^ uint64_t(m);
  }
};

// A fixed sample of standard normals (Box-Muller), indexed by 16 random bits: four normals per
// 64-bit draw instead of a log and a cosine per element.
struct NormalTable {
  float v[65536];
  NormalTable() {
    Rng r{0x6d696e6434ull};
    for (int i = 0; i < 65536; i += 2) {
      double u1 = (double(r.next() >> 11) + 0.5) * 0x1p-53, u2 = double(r.next() >> 11) * 0x1p-53;
      double radius = std::sqrt(-2.0 * std::log(u1));
      v[i] = float(radius * std::cos(2 * std::numbers::pi * u2));
      v[i + 1] = float(radius * std::sin(2 * std::numbers::pi * u2));
    }
  }
};
const NormalTable& normals() {
  static const NormalTable table;
  return table;
}

// Real MXFP4 blocks: N(0, 0.02) values quantised by the OCP MX rule. A random block is one of
// these with random element signs and a random rotation of its bytes, so packed values and scales
// have the distribution of quantised normals at the cost of a copy.
struct Mxfp4Table {
  static constexpr int kBlocks = 4096;
  uint8_t packed[kBlocks][16];
  uint8_t scale[kBlocks];
  Mxfp4Table() {
    Rng r{0x6d78667034ull};
    const NormalTable& n = normals();
    for (int b = 0; b < kBlocks; ++b) {
      float x[32];
      for (int i = 0; i < 32; ++i) x[i] = 0.02f * n.v[r.next() & 0xffff];
      quantize_mxfp4_block(x, packed[b], &scale[b]);
    }
  }
};
const Mxfp4Table& mxfp4_blocks() {
  static const Mxfp4Table table;
  return table;
}

enum class Fill { kNormal, kNormAroundOne, kMxfp4Blocks, kMxfp4Scales };

struct Generator {
  Fill kind;
  float sigma = 0;
  uint64_t seed = 0;  // per tensor; blocks and scales of one expert set share it so they match
};

constexpr int64_t kChunk = 1 << 16;  // elements (or MXFP4 blocks) per independently seeded chunk

void fill_random(const Generator& g, DType dtype, std::span<uint8_t> dst) {
  const NormalTable& n = normals();
  const Mxfp4Table& mx = mxfp4_blocks();
  const bool blocks = g.kind == Fill::kMxfp4Blocks || g.kind == Fill::kMxfp4Scales;
  const int64_t count = blocks
                            ? int64_t(g.kind == Fill::kMxfp4Blocks ? dst.size() / 16 : dst.size())
                            : int64_t(dst.size() / dtype_size(dtype));
  const int64_t chunks = (count + kChunk - 1) / kChunk;
  parallel_for(chunks, 0, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      Rng r{splitmix64(g.seed ^ splitmix64(uint64_t(c)))};
      const int64_t begin = c * kChunk, end = std::min(count, begin + kChunk);
      if (blocks) {
        for (int64_t b = begin; b < end; ++b) {
          uint64_t bits = r.next();
          int index = int(bits & (Mxfp4Table::kBlocks - 1));
          if (g.kind == Fill::kMxfp4Scales) {
            dst[size_t(b)] = mx.scale[index];
            continue;
          }
          uint64_t signs = bits >> 12;  // 32 bits: bit 3 and 7 of each byte flip element signs
          int rotate = int(bits >> 44) & 15;
          uint8_t* out = dst.data() + size_t(b) * 16;
          for (int k = 0; k < 16; ++k) {
            uint8_t flip =
                uint8_t(((signs >> (2 * k)) & 1) << 3 | ((signs >> (2 * k + 1)) & 1) << 7);
            out[k] = mx.packed[index][(k + rotate) & 15] ^ flip;
          }
        }
        continue;
      }
      const float offset = g.kind == Fill::kNormAroundOne ? 1.0f : 0.0f;
      for (int64_t i = begin; i < end; i += 4) {
        uint64_t bits = r.next();
        for (int64_t k = i; k < std::min(end, i + 4); ++k, bits >>= 16) {
          float v = offset + g.sigma * n.v[bits & 0xffff];
          if (dtype == DType::kBF16) {
            uint16_t h = f32_to_bf16(v);
            std::memcpy(dst.data() + 2 * k, &h, 2);
          } else {
            std::memcpy(dst.data() + 4 * k, &v, 4);
          }
        }
      }
    }
  });
}

}  // namespace

ModelConfig model_preset(const std::string& name) {
  ModelConfig c;  // the defaults are gpt-oss-20b
  if (name == "20b") return c;
  if (name == "120b") {
    c.num_hidden_layers = 36;
    c.num_experts = 128;
    return c;
  }
  if (name == "tiny") {
    c.hidden_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.intermediate_size = 64;
    c.vocab_size = 1024;
    c.initial_context_length = 128;
    c.max_context_length = 4096;
    c.sliding_window = 8;
    c.num_experts = 4;
    c.experts_per_token = 2;
    return c;
  }
  throw Error(Status::kInvalidArgument,
              "unknown preset '" + name + "'; expected 20b, 120b or tiny");
}

std::vector<CheckpointTensor> random_checkpoint_tensors(const ModelConfig& c, bool mxfp4,
                                                        uint64_t seed) {
  const int64_t H = c.hidden_size, NH = c.num_attention_heads, NKV = c.num_key_value_heads,
                D = c.head_dim;
  const int64_t E = c.num_experts, I = c.intermediate_size, V = c.vocab_size,
                QKV = (NH + 2 * NKV) * D;
  std::vector<CheckpointTensor> out;
  uint64_t tensor_id = 0;
  auto add = [&](std::string name, DType dtype, std::vector<int64_t> shape, Fill kind, float sigma,
                 bool same_seed_as_previous = false) {
    if (!same_seed_as_previous) ++tensor_id;
    Generator g{kind, sigma, splitmix64(seed * 0x100000001b3ull + tensor_id)};
    out.push_back({{std::move(name), dtype, std::move(shape)},
                   [g, dtype](std::span<uint8_t> dst) { fill_random(g, dtype, dst); }});
  };
  auto dense = [&](std::string name, std::vector<int64_t> shape) {
    add(std::move(name), DType::kBF16, std::move(shape), Fill::kNormal, 0.02f);
  };
  auto experts = [&](const std::string& base, int64_t rows, int64_t cols) {
    if (mxfp4) {
      add(base + ".blocks", DType::kU8, {E, rows, cols / 32, 16}, Fill::kMxfp4Blocks, 0);
      add(base + ".scales", DType::kU8, {E, rows, cols / 32}, Fill::kMxfp4Scales, 0, true);
    } else {
      dense(base, {E, rows, cols});
    }
  };
  dense("embedding.weight", {V, H});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "block." + std::to_string(l) + ".";
    add(p + "attn.norm.scale", DType::kBF16, {H}, Fill::kNormAroundOne, 0.05f);
    dense(p + "attn.qkv.weight", {QKV, H});
    dense(p + "attn.qkv.bias", {QKV});
    add(p + "attn.sinks", DType::kBF16, {NH}, Fill::kNormal, 0.5f);
    dense(p + "attn.out.weight", {H, NH * D});
    dense(p + "attn.out.bias", {H});
    add(p + "mlp.norm.scale", DType::kBF16, {H}, Fill::kNormAroundOne, 0.05f);
    dense(p + "mlp.gate.weight", {E, H});
    dense(p + "mlp.gate.bias", {E});
    experts(p + "mlp.mlp1_weight", 2 * I, H);
    dense(p + "mlp.mlp1_bias", {E, 2 * I});
    experts(p + "mlp.mlp2_weight", H, I);
    dense(p + "mlp.mlp2_bias", {E, H});
  }
  add("norm.scale", DType::kBF16, {H}, Fill::kNormAroundOne, 0.05f);
  dense("unembedding.weight", {V, H});
  return out;
}

void write_random_checkpoint(const std::string& dir, const ModelConfig& config, bool mxfp4,
                             uint64_t seed, uint64_t shard_bytes) {
  validate_model_config(config, "random-checkpoint", mxfp4);
  write_checkpoint(dir, config, CheckpointLayout::kOriginal, mxfp4,
                   random_checkpoint_tensors(config, mxfp4, seed), shard_bytes);
}

}  // namespace mind4
