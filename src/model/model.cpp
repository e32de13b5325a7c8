// Model: takes a ModelWeights, checks every tensor against the configuration once, so that the
// forward pass can trust shapes and dtypes without checks in the token loop.
#include <string>

#include "mind4/status.h"
#include "model/backend.h"
#include "model/model_impl.h"

namespace mind4 {
namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

enum class Kind { kVector, kMatrix, kU8 };

void check_tensor(const TensorView& t, const std::string& name, Kind kind,
                  std::vector<int64_t> shape) {
  MIND4_CHECK(!t.empty(), Status::kMissingTensor, "tensor ", name, " is missing");
  switch (kind) {
    case Kind::kVector:
      MIND4_CHECK(t.dtype == DType::kF32, Status::kShapeMismatch, "tensor ", name, " has dtype ",
                  dtype_name(t.dtype), ", expected F32 (vectors are converted when loaded)");
      break;
    case Kind::kMatrix:
      MIND4_CHECK(t.dtype == DType::kBF16 || t.dtype == DType::kF32, Status::kShapeMismatch,
                  "tensor ", name, " has dtype ", dtype_name(t.dtype), ", expected BF16 or F32");
      break;
    case Kind::kU8:
      MIND4_CHECK(t.dtype == DType::kU8, Status::kShapeMismatch, "tensor ", name, " has dtype ",
                  dtype_name(t.dtype), ", expected U8 (packed MXFP4)");
      break;
  }
  MIND4_CHECK(t.shape == shape, Status::kShapeMismatch, "tensor ", name, " has shape ",
              shape_text(t.shape), ", expected ", shape_text(shape));
}

void check_config(const ModelConfig& c) {
  auto positive = [](int v, const char* field) {
    MIND4_CHECK(v > 0, Status::kInvalidConfig, "model config: ", field, " = ", v,
                " must be positive");
  };
  positive(c.hidden_size, "hidden_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.num_key_value_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.vocab_size, "vocab_size");
  positive(c.num_experts, "num_experts");
  positive(c.experts_per_token, "experts_per_token");
  positive(c.max_context_length, "max_context_length");
  positive(c.initial_context_length, "initial_context_length");
  MIND4_CHECK(c.head_dim % 2 == 0 && c.head_dim <= 1024, Status::kInvalidConfig,
              "model config: head_dim = ", c.head_dim, " must be even and at most 1024");
  MIND4_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, Status::kInvalidConfig,
              "model config: num_attention_heads = ", c.num_attention_heads,
              " is not a multiple of num_key_value_heads = ", c.num_key_value_heads);
  MIND4_CHECK(c.experts_per_token <= c.num_experts, Status::kInvalidConfig,
              "model config: experts_per_token = ", c.experts_per_token,
              " exceeds num_experts = ", c.num_experts);
  MIND4_CHECK(c.sliding_window >= 0, Status::kInvalidConfig, "model config: sliding_window = ",
              c.sliding_window, " must be >= 0");
  MIND4_CHECK(c.rope_theta > 1.0f, Status::kInvalidConfig, "model config: rope_theta = ",
              c.rope_theta, " must be > 1");
  MIND4_CHECK(c.rope_scaling_factor <= 1.0f || c.rope_ntk_alpha != c.rope_ntk_beta,
              Status::kInvalidConfig, "model config: rope_ntk_alpha and rope_ntk_beta are equal (",
              c.rope_ntk_alpha, "); YaRN needs two distinct bounds");
}

void check_weights(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  check_config(c);
  const int64_t H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
                NKV = c.num_key_value_heads, E = c.num_experts, I = c.intermediate_size,
                V = c.vocab_size, QKV = (NH + 2 * NKV) * D;
  MIND4_CHECK(int64_t(w.layers.size()) == c.num_hidden_layers, Status::kMissingTensor,
              "weights have ", w.layers.size(), " blocks but num_hidden_layers = ",
              c.num_hidden_layers);
  check_tensor(w.embedding, "embedding.weight", Kind::kMatrix, {V, H});
  check_tensor(w.norm, "norm.scale", Kind::kVector, {H});
  check_tensor(w.unembedding, "unembedding.weight", Kind::kMatrix, {V, H});
  if (w.experts_mxfp4) {
    MIND4_CHECK(H % 32 == 0 && I % 32 == 0, Status::kInvalidConfig,
                "MXFP4 experts need hidden_size (", H, ") and intermediate_size (", I,
                ") to be multiples of 32");
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string p = "block." + std::to_string(l) + ".";
    check_tensor(lw.attn_norm, p + "attn.norm.scale", Kind::kVector, {H});
    check_tensor(lw.qkv_w, p + "attn.qkv.weight", Kind::kMatrix, {QKV, H});
    check_tensor(lw.qkv_b, p + "attn.qkv.bias", Kind::kVector, {QKV});
    check_tensor(lw.sinks, p + "attn.sinks", Kind::kVector, {NH});
    check_tensor(lw.out_w, p + "attn.out.weight", Kind::kMatrix, {H, NH * D});
    check_tensor(lw.out_b, p + "attn.out.bias", Kind::kVector, {H});
    check_tensor(lw.mlp_norm, p + "mlp.norm.scale", Kind::kVector, {H});
    check_tensor(lw.gate_w, p + "mlp.gate.weight", Kind::kMatrix, {E, H});
    check_tensor(lw.gate_b, p + "mlp.gate.bias", Kind::kVector, {E});
    if (w.experts_mxfp4) {
      check_tensor(lw.mlp1_blocks, p + "mlp.mlp1_weight.blocks", Kind::kU8, {E, 2 * I, H / 32, 16});
      check_tensor(lw.mlp1_scales, p + "mlp.mlp1_weight.scales", Kind::kU8, {E, 2 * I, H / 32});
      check_tensor(lw.mlp2_blocks, p + "mlp.mlp2_weight.blocks", Kind::kU8, {E, H, I / 32, 16});
      check_tensor(lw.mlp2_scales, p + "mlp.mlp2_weight.scales", Kind::kU8, {E, H, I / 32});
    } else {
      check_tensor(lw.mlp1_blocks, p + "mlp.mlp1_weight", Kind::kMatrix, {E, 2 * I, H});
      check_tensor(lw.mlp2_blocks, p + "mlp.mlp2_weight", Kind::kMatrix, {E, H, I});
    }
    check_tensor(lw.mlp1_b, p + "mlp.mlp1_bias", Kind::kVector, {E, 2 * I});
    check_tensor(lw.mlp2_b, p + "mlp.mlp2_bias", Kind::kVector, {E, H});
  }
}

int64_t matrix_bytes(const TensorView& t, int64_t rows, int64_t cols) {
  return rows * cols * int64_t(dtype_size(t.dtype));
}

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::shared_ptr<const Model> Model::from_weights(ModelWeights weights,
                                                const ExecutionConfig& execution) {
  check_weights(weights);
  auto impl = std::make_unique<Impl>();
  const ModelConfig& c = weights.config;
  impl->qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim;
  impl->execution = execution;
  if (execution.backend == Backend::kCuda) impl->device = cuda_upload_model(weights, execution);
  impl->weights = std::move(weights);
  return std::shared_ptr<const Model>(new Model(std::move(impl)));
}

const ModelConfig& Model::config() const { return impl_->weights.config; }
const ModelWeights& Model::weights() const { return impl_->weights; }
const ExecutionConfig& Model::execution() const { return impl_->execution; }

int64_t Model::decode_weight_bytes() const {
  const ModelWeights& w = impl_->weights;
  const ModelConfig& c = w.config;
  const int64_t H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
                E = c.num_experts, I = c.intermediate_size, V = c.vocab_size,
                k = c.experts_per_token, QKV = impl_->qkv_rows;
  // One expert: both matrices (MXFP4: 17 bytes per 32 weights) and both biases.
  auto expert_bytes = [&](const LayerWeights& lw) -> int64_t {
    int64_t m = w.experts_mxfp4 ? (2 * I * H + H * I) / 32 * 17
                                : matrix_bytes(lw.mlp1_blocks, 2 * I, H) +
                                      matrix_bytes(lw.mlp2_blocks, H, I);
    return m + (2 * I + H) * 4;
  };
  int64_t total = matrix_bytes(w.embedding, 1, H) + matrix_bytes(w.unembedding, V, H) + H * 4;
  for (const LayerWeights& lw : w.layers) {
    total += matrix_bytes(lw.qkv_w, QKV, H) + matrix_bytes(lw.out_w, H, NH * D) +
             matrix_bytes(lw.gate_w, E, H);
    total += (QKV + NH + 3 * H + E) * 4;  // biases, sinks, norm scales
    total += k * expert_bytes(lw);
  }
  return total;
}

}  // namespace mind4
