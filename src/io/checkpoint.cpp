// Binding a checkpoint's tensors to ModelWeights (both layouts), with every tensor checked.
#include "io/checkpoint.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "mind4/status.h"

namespace mind4 {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// The mapped files plus every buffer the views point into; ModelWeights::storage owns it.
struct CheckpointStorage {
  SafeTensorsSet tensors;
  std::vector<std::unique_ptr<void, FreeDeleter>> buffers;

  void* allocate(size_t bytes) {
    // 64-byte aligned (a cache line / an AVX-512 register) and never zero-sized.
    size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    MIND4_CHECK(p, Status::kOutOfMemory, "cannot allocate ", bytes,
                " bytes for checkpoint weights");
    buffers.emplace_back(p);
    return p;
  }
};

class Binder {
 public:
  Binder(CheckpointStorage& storage, const std::string& source) : st_(storage), source_(source) {}

  // Checks presence and shape; dtype is checked by the callers that know which ones they accept.
  const SafeTensor& get(const std::string& name, const std::vector<int64_t>& shape) {
    const SafeTensor& t = st_.tensors.get(name);
    used_.insert(name);
    MIND4_CHECK(t.shape == shape, Status::kShapeMismatch, "tensor '", name, "' in '", *t.file,
                "': expected shape ", shape_str(shape), " (from the config), found ",
                shape_str(t.shape));
    return t;
  }

  void require_dtype(const SafeTensor& t, std::initializer_list<DType> allowed) {
    std::string names;
    for (DType d : allowed) {
      if (t.dtype == d) return;
      names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
    }
    throw Error(Status::kShapeMismatch, "tensor '" + t.name + "' in '" + *t.file +
                                            "': expected dtype " + names + ", found " +
                                            std::string(dtype_name(t.dtype)));
  }

  // A view of the mapped bytes, or an aligned copy when the file left them misaligned for the
  // element type (legal in safetensors, undefined behaviour for a typed load).
  TensorView view(const SafeTensor& t) {
    TensorView v{t.dtype, t.shape, t.data};
    if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
      void* copy = st_.allocate(t.nbytes);
      std::memcpy(copy, t.data, t.nbytes);
      v.data = copy;
    }
    return v;
  }

  TensorView matrix(const std::string& name, std::vector<int64_t> shape) {
    const SafeTensor& t = get(name, shape);
    require_dtype(t, {DType::kBF16, DType::kF32});
    return view(t);
  }

  TensorView u8(const std::string& name, std::vector<int64_t> shape) {
    const SafeTensor& t = get(name, shape);
    require_dtype(t, {DType::kU8});
    return view(t);
  }

  // Small vectors (norm scales, biases, sinks) as owned F32, whatever they were stored as.
  TensorView vector(const std::string& name, std::vector<int64_t> shape) {
    return vectors({name}, {std::move(shape)}, -1);
  }

  // Expert biases, whose stored dtype is tracked apart: a checkpoint may keep them bf16 beside
  // f32 norms and attention vectors, and a conversion must write each group back as it was.
  TensorView expert_bias(const std::string& name, std::vector<int64_t> shape) {
    return vectors({name}, {std::move(shape)}, -1, &any_f32_expert_bias_);
  }

  // Several stored vectors concatenated along their first dimension into one owned F32 vector.
  TensorView vectors(const std::vector<std::string>& names,
                     const std::vector<std::vector<int64_t>>& shapes, int64_t total_rows,
                     bool* any_f32 = nullptr) {
    if (!any_f32) any_f32 = &any_f32_vector_;
    std::vector<const SafeTensor*> parts;
    int64_t n = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      const SafeTensor& t = get(names[i], shapes[i]);
      require_dtype(t, {DType::kBF16, DType::kF32, DType::kF16});
      if (t.dtype != DType::kBF16) *any_f32 = true;
      parts.push_back(&t);
      n += t.numel();
    }
    float* out = static_cast<float*>(st_.allocate(size_t(n) * 4));
    float* dst = out;
    for (const SafeTensor* t : parts) {
      for (int64_t i = 0; i < t->numel(); ++i) {
        const uint8_t* p = t->data + i * dtype_size(t->dtype);
        uint16_t h;
        switch (t->dtype) {
          case DType::kF32:
            std::memcpy(dst + i, p, 4);
            break;
          case DType::kBF16:
            std::memcpy(&h, p, 2), dst[i] = bf16_to_f32(h);
            break;
          default:
            std::memcpy(&h, p, 2), dst[i] = f16_to_f32(h);
            break;
        }
      }
      dst += t->numel();
    }
    std::vector<int64_t> shape = shapes[0];
    if (total_rows >= 0) shape[0] = total_rows;
    return TensorView{DType::kF32, shape, out};
  }

  // q, k, v matrices stacked row-wise into one owned matrix of their common dtype.
  TensorView stacked_rows(const std::vector<std::string>& names,
                          const std::vector<std::vector<int64_t>>& shapes) {
    std::vector<const SafeTensor*> parts;
    size_t bytes = 0;
    int64_t rows = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      const SafeTensor& t = get(names[i], shapes[i]);
      require_dtype(t, {DType::kBF16, DType::kF32});
      if (!parts.empty() && t.dtype != parts[0]->dtype)
        throw Error(Status::kShapeMismatch,
                    "tensor '" + t.name + "' is " + std::string(dtype_name(t.dtype)) + " but '" +
                        parts[0]->name + "' is " + std::string(dtype_name(parts[0]->dtype)) +
                        "; q/k/v must share a dtype");
      parts.push_back(&t);
      bytes += t.nbytes;
      rows += t.shape[0];
    }
    uint8_t* out = static_cast<uint8_t*>(st_.allocate(bytes));
    size_t at = 0;
    for (const SafeTensor* t : parts) std::memcpy(out + at, t->data, t->nbytes), at += t->nbytes;
    return TensorView{parts[0]->dtype, {rows, shapes[0][1]}, out};
  }

  // HF BF16 experts [E, cols, rows] -> owned original orientation [E, rows, cols].
  TensorView transposed_experts(const std::string& name, int64_t experts, int64_t rows,
                                int64_t cols) {
    const SafeTensor& t = get(name, {experts, cols, rows});
    require_dtype(t, {DType::kBF16, DType::kF32});
    size_t es = dtype_size(t.dtype);
    uint8_t* out = static_cast<uint8_t*>(st_.allocate(t.nbytes));
    parallel_for(experts, 0, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        const uint8_t* src = t.data + size_t(e * rows * cols) * es;
        uint8_t* dst = out + size_t(e * rows * cols) * es;
        constexpr int64_t kTile = 32;  // keeps both the read and the write side in cache
        for (int64_t c0 = 0; c0 < cols; c0 += kTile)
          for (int64_t r0 = 0; r0 < rows; r0 += kTile)
            for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c)
              for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
                std::memcpy(dst + size_t(r * cols + c) * es, src + size_t(c * rows + r) * es, es);
      }
    });
    return TensorView{t.dtype, {experts, rows, cols}, out};
  }

  void check_all_used() {
    for (const SafeTensor* t : st_.tensors.tensors())
      MIND4_CHECK(used_.count(t->name), Status::kShapeMismatch, "checkpoint '", source_,
                  "' has tensor '", t->name, "' (in '", *t->file,
                  "') that a model with this config does not use: do config.json and the "
                  "weights disagree (e.g. num_hidden_layers)?");
  }

  bool any_f32_vector() const { return any_f32_vector_; }
  bool any_f32_expert_bias() const { return any_f32_expert_bias_; }

 private:
  CheckpointStorage& st_;
  std::string source_;
  std::set<std::string> used_;
  bool any_f32_vector_ = false;
  bool any_f32_expert_bias_ = false;
};

}  // namespace

CheckpointFormat detect_checkpoint_format(const SafeTensorsSet& t) {
  CheckpointFormat f;
  if (t.find("embedding.weight") || t.find("block.0.attn.qkv.weight")) {
    f.layout = CheckpointLayout::kOriginal;
    f.mxfp4_experts =
        t.find("block.0.mlp.mlp1_weight.blocks") || !t.find("block.0.mlp.mlp1_weight");
  } else if (t.find("model.embed_tokens.weight") ||
             t.find("model.layers.0.self_attn.q_proj.weight")) {
    f.layout = CheckpointLayout::kHuggingFace;
    f.mxfp4_experts = t.find("model.layers.0.mlp.experts.gate_up_proj_blocks") ||
                      !t.find("model.layers.0.mlp.experts.gate_up_proj");
  } else {
    throw Error(Status::kMissingTensor,
                "checkpoint '" + t.source() +
                    "' is in neither known layout: it has no 'embedding.weight' (original "
                    "gpt-oss) and no 'model.embed_tokens.weight' (Hugging Face)");
  }
  return f;
}

ModelWeights bind_checkpoint(SafeTensorsSet tensors, const ModelConfig& c,
                             const std::string& source) {
  auto storage = std::make_shared<CheckpointStorage>();
  storage->tensors = std::move(tensors);
  const SafeTensorsSet& set = storage->tensors;
  CheckpointFormat format = detect_checkpoint_format(set);
  validate_model_config(c, source, format.mxfp4_experts);

  const int64_t H = c.hidden_size, NH = c.num_attention_heads, NKV = c.num_key_value_heads,
                D = c.head_dim;
  const int64_t E = c.num_experts, I = c.intermediate_size, V = c.vocab_size,
                QKV = (NH + 2 * NKV) * D;
  Binder b(*storage, source);
  ModelWeights w;
  w.config = c;
  w.experts_mxfp4 = format.mxfp4_experts;
  w.layers.resize(size_t(c.num_hidden_layers));

  if (format.layout == CheckpointLayout::kOriginal) {
    w.embedding = b.matrix("embedding.weight", {V, H});
    w.norm = b.vector("norm.scale", {H});
    w.unembedding = b.matrix("unembedding.weight", {V, H});
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "block." + std::to_string(l) + ".";
      LayerWeights& L = w.layers[size_t(l)];
      L.attn_norm = b.vector(p + "attn.norm.scale", {H});
      L.qkv_w = b.matrix(p + "attn.qkv.weight", {QKV, H});
      L.qkv_b = b.vector(p + "attn.qkv.bias", {QKV});
      L.sinks = b.vector(p + "attn.sinks", {NH});
      L.out_w = b.matrix(p + "attn.out.weight", {H, NH * D});
      L.out_b = b.vector(p + "attn.out.bias", {H});
      L.mlp_norm = b.vector(p + "mlp.norm.scale", {H});
      L.gate_w = b.matrix(p + "mlp.gate.weight", {E, H});
      L.gate_b = b.vector(p + "mlp.gate.bias", {E});
      if (format.mxfp4_experts) {
        L.mlp1_blocks = b.u8(p + "mlp.mlp1_weight.blocks", {E, 2 * I, H / 32, 16});
        L.mlp1_scales = b.u8(p + "mlp.mlp1_weight.scales", {E, 2 * I, H / 32});
        L.mlp2_blocks = b.u8(p + "mlp.mlp2_weight.blocks", {E, H, I / 32, 16});
        L.mlp2_scales = b.u8(p + "mlp.mlp2_weight.scales", {E, H, I / 32});
      } else {
        L.mlp1_blocks = b.matrix(p + "mlp.mlp1_weight", {E, 2 * I, H});
        L.mlp2_blocks = b.matrix(p + "mlp.mlp2_weight", {E, H, I});
      }
      L.mlp1_b = b.expert_bias(p + "mlp.mlp1_bias", {E, 2 * I});
      L.mlp2_b = b.expert_bias(p + "mlp.mlp2_bias", {E, H});
    }
  } else {
    w.embedding = b.matrix("model.embed_tokens.weight", {V, H});
    w.norm = b.vector("model.norm.weight", {H});
    w.unembedding = b.matrix("lm_head.weight", {V, H});
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const std::string a = p + "self_attn.", x = p + "mlp.experts.";
      LayerWeights& L = w.layers[size_t(l)];
      L.attn_norm = b.vector(p + "input_layernorm.weight", {H});
      L.qkv_w = b.stacked_rows({a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"},
                               {{NH * D, H}, {NKV * D, H}, {NKV * D, H}});
      L.qkv_b = b.vectors({a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"},
                          {{NH * D}, {NKV * D}, {NKV * D}}, QKV);
      L.sinks = b.vector(a + "sinks", {NH});
      L.out_w = b.matrix(a + "o_proj.weight", {H, NH * D});
      L.out_b = b.vector(a + "o_proj.bias", {H});
      L.mlp_norm = b.vector(p + "post_attention_layernorm.weight", {H});
      L.gate_w = b.matrix(p + "mlp.router.weight", {E, H});
      L.gate_b = b.vector(p + "mlp.router.bias", {E});
      if (format.mxfp4_experts) {
        L.mlp1_blocks = b.u8(x + "gate_up_proj_blocks", {E, 2 * I, H / 32, 16});
        L.mlp1_scales = b.u8(x + "gate_up_proj_scales", {E, 2 * I, H / 32});
        L.mlp2_blocks = b.u8(x + "down_proj_blocks", {E, H, I / 32, 16});
        L.mlp2_scales = b.u8(x + "down_proj_scales", {E, H, I / 32});
      } else {
        L.mlp1_blocks = b.transposed_experts(x + "gate_up_proj", E, 2 * I, H);
        L.mlp2_blocks = b.transposed_experts(x + "down_proj", E, H, I);
      }
      L.mlp1_b = b.expert_bias(x + "gate_up_proj_bias", {E, 2 * I});
      L.mlp2_b = b.expert_bias(x + "down_proj_bias", {E, H});
    }
  }
  b.check_all_used();
  w.vector_dtype = b.any_f32_vector() ? DType::kF32 : DType::kBF16;
  w.expert_bias_dtype = b.any_f32_expert_bias() ? DType::kF32 : DType::kBF16;
  w.storage = storage;
  return w;
}

ModelWeights load_checkpoint(const std::string& path) {
  ModelConfig config = load_model_config(path);
  return bind_checkpoint(SafeTensorsSet::open(path), config, path);
}

}  // namespace mind4
