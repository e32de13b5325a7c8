// Writing checkpoints: the tensors of ModelWeights in either layout and expert format, sharding,
// the index and config.json. Used by `mind4 convert` and `mind4 random-checkpoint`.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "io/checkpoint.h"
#include "mind4/status.h"

namespace mind4 {

namespace fs = std::filesystem;

void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int t = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  t = int(std::min<int64_t>(t, n));
  if (t == 1) return fn(0, n);
  std::vector<std::thread> pool;
  std::exception_ptr failure;
  std::mutex failure_mutex;
  for (int i = 0; i < t; ++i) {
    pool.emplace_back([&, i] {
      try {
        fn(n * i / t, n * (i + 1) / t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

namespace {

// Copies big spans on several threads: page faults of a fresh mapping are the cost here.
void parallel_copy(std::span<uint8_t> dst, const void* src) {
  constexpr int64_t kChunk = 16 << 20;
  int64_t chunks = (int64_t(dst.size()) + kChunk - 1) / kChunk;
  parallel_for(chunks, 0, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      size_t begin = size_t(c * kChunk), end = std::min(dst.size(), size_t((c + 1) * kChunk));
      std::memcpy(dst.data() + begin, static_cast<const uint8_t*>(src) + begin, end - begin);
    }
  });
}

CheckpointTensor copy_of(std::string name, const TensorView& v) {
  return {{std::move(name), v.dtype, v.shape},
          [v](std::span<uint8_t> dst) { parallel_copy(dst, v.data); }};
}

// Rows [row0, row0 + rows) of a matrix view.
CheckpointTensor rows_of(std::string name, const TensorView& v, int64_t row0, int64_t rows) {
  size_t row_bytes = size_t(v.shape[1]) * dtype_size(v.dtype);
  const uint8_t* src = v.u8() + size_t(row0) * row_bytes;
  return {{std::move(name), v.dtype, {rows, v.shape[1]}},
          [src](std::span<uint8_t> dst) { parallel_copy(dst, src); }};
}

// An owned F32 vector (or a slice of one) written back in `dtype`.
CheckpointTensor vector_of(std::string name, const TensorView& v, DType dtype, int64_t offset = 0,
                           std::vector<int64_t> shape = {}) {
  if (shape.empty()) shape = v.shape;
  const float* src = v.f32() + offset;
  return {{std::move(name), dtype, shape}, [src, dtype](std::span<uint8_t> dst) {
            size_t n = dst.size() / dtype_size(dtype);
            for (size_t i = 0; i < n; ++i) {
              if (dtype == DType::kF32) {
                std::memcpy(dst.data() + 4 * i, src + i, 4);
              } else {
                uint16_t h = dtype == DType::kBF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
                std::memcpy(dst.data() + 2 * i, &h, 2);
              }
            }
          }};
}

// One expert matrix set (mlp1 or mlp2) in original orientation, readable row by row as floats.
struct ExpertSource {
  TensorView blocks, scales;  // scales empty = dense BF16/F32 [E, rows, cols]
  int64_t experts, rows, cols;

  void row(int64_t e, int64_t r, float* out) const {
    int64_t index = e * rows + r;
    if (!scales.empty()) {
      const uint8_t* b = blocks.u8() + size_t(index) * size_t(cols / 2);
      const uint8_t* s = scales.u8() + size_t(index) * size_t(cols / 32);
      for (int64_t k = 0; k < cols / 32; ++k)
        dequantize_mxfp4_block(b + 16 * k, s[k], out + 32 * k);
    } else if (blocks.dtype == DType::kBF16) {
      const uint16_t* p = blocks.bf16() + size_t(index * cols);
      for (int64_t c = 0; c < cols; ++c) out[c] = bf16_to_f32(p[c]);
    } else {
      std::memcpy(out, blocks.f32() + size_t(index * cols), size_t(cols) * 4);
    }
  }
};

// Appends the tensors of one expert set named `base` (HF: "…gate_up_proj", original:
// "…mlp1_weight").
void add_experts(std::vector<CheckpointTensor>& out, const std::string& base,
                 CheckpointLayout layout, bool mxfp4, const ExpertSource& src) {
  const int64_t E = src.experts, R = src.rows, C = src.cols;
  const bool hf = layout == CheckpointLayout::kHuggingFace;
  const std::string blocks_name = base + (hf ? "_blocks" : ".blocks"),
                    scales_name = base + (hf ? "_scales" : ".scales");
  if (mxfp4) {
    if (!src.scales.empty()) {  // MXFP4 to MXFP4: the bytes as they are, bit for bit
      out.push_back(copy_of(blocks_name, src.blocks));
      out.push_back(copy_of(scales_name, src.scales));
      return;
    }
    // Quantise; both tensors come from the same per-block rule, computed once for each.
    auto quantise = [src, R, C](std::span<uint8_t> dst, bool want_blocks) {
      parallel_for(src.experts * R, 0, [&](int64_t i0, int64_t i1) {
        std::vector<float> row(static_cast<size_t>(C));
        uint8_t packed[16], scale;
        for (int64_t i = i0; i < i1; ++i) {
          src.row(i / R, i % R, row.data());
          for (int64_t k = 0; k < C / 32; ++k) {
            quantize_mxfp4_block(row.data() + 32 * k, packed, &scale);
            if (want_blocks)
              std::memcpy(dst.data() + size_t(i * (C / 2) + 16 * k), packed, 16);
            else
              dst[size_t(i * (C / 32) + k)] = scale;
          }
        }
      });
    };
    out.push_back({{blocks_name, DType::kU8, {E, R, C / 32, 16}},
                   [quantise](std::span<uint8_t> d) { quantise(d, true); }});
    out.push_back({{scales_name, DType::kU8, {E, R, C / 32}},
                   [quantise](std::span<uint8_t> d) { quantise(d, false); }});
    return;
  }
  if (!hf && src.scales.empty() && src.blocks.dtype == DType::kBF16) {
    out.push_back(copy_of(base, src.blocks));
    return;
  }
  // BF16 target from MXFP4 or F32, or HF's transposed orientation [E, cols, rows].
  std::vector<int64_t> shape = hf ? std::vector<int64_t>{E, C, R} : std::vector<int64_t>{E, R, C};
  out.push_back({{base, DType::kBF16, shape}, [src, hf, R, C](std::span<uint8_t> dst) {
                   uint16_t* d = reinterpret_cast<uint16_t*>(dst.data());
                   parallel_for(src.experts * R, 0, [&](int64_t i0, int64_t i1) {
                     std::vector<float> row(static_cast<size_t>(C));
                     for (int64_t i = i0; i < i1; ++i) {
                       int64_t e = i / R, r = i % R;
                       src.row(e, r, row.data());
                       for (int64_t c = 0; c < C; ++c) {
                         size_t at = hf ? size_t((e * C + c) * R + r) : size_t(i * C + c);
                         d[at] = f32_to_bf16(row[size_t(c)]);
                       }
                     }
                   });
                 }});
}

}  // namespace

std::vector<CheckpointTensor> checkpoint_tensors(const ModelWeights& w, CheckpointLayout layout,
                                                 bool mxfp4) {
  const ModelConfig& c = w.config;
  const int64_t H = c.hidden_size, NH = c.num_attention_heads, NKV = c.num_key_value_heads,
                D = c.head_dim;
  const int64_t E = c.num_experts, I = c.intermediate_size;
  const DType vd = w.vector_dtype, bd = w.expert_bias_dtype;
  std::vector<CheckpointTensor> out;
  const bool hf = layout == CheckpointLayout::kHuggingFace;
  out.push_back(copy_of(hf ? "model.embed_tokens.weight" : "embedding.weight", w.embedding));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    ExpertSource mlp1{L.mlp1_blocks, L.mlp1_scales, E, 2 * I, H};
    ExpertSource mlp2{L.mlp2_blocks, L.mlp2_scales, E, H, I};
    if (!hf) {
      const std::string p = "block." + std::to_string(l) + ".";
      out.push_back(vector_of(p + "attn.norm.scale", L.attn_norm, vd));
      out.push_back(copy_of(p + "attn.qkv.weight", L.qkv_w));
      out.push_back(vector_of(p + "attn.qkv.bias", L.qkv_b, vd));
      out.push_back(vector_of(p + "attn.sinks", L.sinks, vd));
      out.push_back(copy_of(p + "attn.out.weight", L.out_w));
      out.push_back(vector_of(p + "attn.out.bias", L.out_b, vd));
      out.push_back(vector_of(p + "mlp.norm.scale", L.mlp_norm, vd));
      out.push_back(copy_of(p + "mlp.gate.weight", L.gate_w));
      out.push_back(vector_of(p + "mlp.gate.bias", L.gate_b, vd));
      add_experts(out, p + "mlp.mlp1_weight", layout, mxfp4, mlp1);
      out.push_back(vector_of(p + "mlp.mlp1_bias", L.mlp1_b, bd));
      add_experts(out, p + "mlp.mlp2_weight", layout, mxfp4, mlp2);
      out.push_back(vector_of(p + "mlp.mlp2_bias", L.mlp2_b, bd));
    } else {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const std::string a = p + "self_attn.", x = p + "mlp.experts.";
      out.push_back(vector_of(p + "input_layernorm.weight", L.attn_norm, vd));
      out.push_back(rows_of(a + "q_proj.weight", L.qkv_w, 0, NH * D));
      out.push_back(rows_of(a + "k_proj.weight", L.qkv_w, NH * D, NKV * D));
      out.push_back(rows_of(a + "v_proj.weight", L.qkv_w, (NH + NKV) * D, NKV * D));
      out.push_back(vector_of(a + "q_proj.bias", L.qkv_b, vd, 0, {NH * D}));
      out.push_back(vector_of(a + "k_proj.bias", L.qkv_b, vd, NH * D, {NKV * D}));
      out.push_back(vector_of(a + "v_proj.bias", L.qkv_b, vd, (NH + NKV) * D, {NKV * D}));
      out.push_back(vector_of(a + "sinks", L.sinks, vd));
      out.push_back(copy_of(a + "o_proj.weight", L.out_w));
      out.push_back(vector_of(a + "o_proj.bias", L.out_b, vd));
      out.push_back(vector_of(p + "post_attention_layernorm.weight", L.mlp_norm, vd));
      out.push_back(copy_of(p + "mlp.router.weight", L.gate_w));
      out.push_back(vector_of(p + "mlp.router.bias", L.gate_b, vd));
      add_experts(out, x + "gate_up_proj", layout, mxfp4, mlp1);
      out.push_back(vector_of(x + "gate_up_proj_bias", L.mlp1_b, bd));
      add_experts(out, x + "down_proj", layout, mxfp4, mlp2);
      out.push_back(vector_of(x + "down_proj_bias", L.mlp2_b, bd));
    }
  }
  out.push_back(vector_of(hf ? "model.norm.weight" : "norm.scale", w.norm, vd));
  out.push_back(copy_of(hf ? "lm_head.weight" : "unembedding.weight", w.unembedding));
  return out;
}

void write_checkpoint(const std::string& dir, const ModelConfig& config, CheckpointLayout layout,
                      bool mxfp4, std::vector<CheckpointTensor> tensors, uint64_t shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  MIND4_CHECK(fs::is_directory(dir, ec), Status::kIoError, "cannot create directory '", dir, "'");
  // Group tensors into shards in order; a tensor bigger than a shard gets a shard of its own.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint64_t n = tensors[i].spec.nbytes();
    if (shard_bytes > 0 && in_shard > 0 && in_shard + n > shard_bytes)
      shards.emplace_back(), in_shard = 0;
    shards.back().push_back(i);
    in_shard += n;
    total += n;
  }
  const size_t count = shards.size();
  auto shard_name = [count](size_t s) {
    char name[64];
    if (count == 1)
      std::snprintf(name, sizeof name, "model.safetensors");
    else
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, count);
    return std::string(name);
  };
  // Other *.safetensors files in `dir` would be read together with the new ones.
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".safetensors") continue;
    bool ours = false;
    for (size_t s = 0; s < count; ++s) ours |= e.path().filename() == shard_name(s);
    MIND4_CHECK(
        ours, Status::kInvalidArgument, "directory '", dir, "' already holds '",
        e.path().filename().string(),
        "', which would be read together with the new checkpoint; remove it or write elsewhere");
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < count; ++s) {
    const std::string name = shard_name(s);
    std::vector<TensorSpec> specs;
    for (size_t i : shards[s])
      specs.push_back(tensors[i].spec), weight_map[tensors[i].spec.name] = name;
    SafeTensorsWriter writer((fs::path(dir) / name).string(), std::move(specs), {{"format", "pt"}});
    for (size_t i : shards[s]) tensors[i].fill(writer.data(tensors[i].spec.name));
    writer.commit();
  }
  auto write_text = [&](const std::string& file, const std::string& text) {
    std::string path = (fs::path(dir) / file).string(), temp = path + ".tmp";
    {
      std::ofstream out(temp, std::ios::binary | std::ios::trunc);
      out << text;
      MIND4_CHECK(out.good(), Status::kIoError, "cannot write '", temp, "'");
    }
    MIND4_CHECK(std::rename(temp.c_str(), path.c_str()) == 0, Status::kIoError, "cannot rename '",
                temp, "'");
  };
  // A stale index from an earlier, differently sharded write would shadow the new files.
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (count > 1) {
    nlohmann::json j = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_text("model.safetensors.index.json", j.dump(2) + "\n");
  } else {
    fs::remove(index, ec);
  }
  write_text("config.json", model_config_json(config, layout, mxfp4));
}

void convert_checkpoint(const std::string& from, const std::string& to, CheckpointLayout layout,
                        bool mxfp4, uint64_t shard_bytes) {
  std::error_code ec;
  MIND4_CHECK(!fs::exists(to, ec) || fs::weakly_canonical(from, ec) != fs::weakly_canonical(to, ec),
              Status::kInvalidArgument, "convert: --to '", to, "' is the source checkpoint itself");
  ModelWeights w = load_checkpoint(from);
  if (mxfp4) validate_model_config(w.config, from, true);
  write_checkpoint(to, w.config, layout, mxfp4, checkpoint_tensors(w, layout, mxfp4), shard_bytes);
}

}  // namespace mind4
