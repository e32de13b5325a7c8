#include "train/params.h"

#include <cmath>
#include <numbers>

namespace mind4::train {

const ParamTensor* ParamLayout::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

int64_t ParamLayout::active_matmul_params() const {
  const ModelConfig& c = config;
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t qkv = int64_t(c.num_attention_heads + 2 * c.num_key_value_heads) * D;
  const int64_t per_layer = qkv * H + H * c.num_attention_heads * D + int64_t(c.num_experts) * H +
                            int64_t(c.experts_per_token) * 3 * I * H;
  return per_layer * c.num_hidden_layers + int64_t(c.vocab_size) * H;
}

ParamLayout make_param_layout(const ModelConfig& c) {
  ParamLayout p;
  p.config = c;
  const int64_t H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
                NKV = c.num_key_value_heads, E = c.num_experts, I = c.intermediate_size,
                V = c.vocab_size;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
    ParamTensor t{name, std::move(shape), p.total, 1, decay};
    for (int64_t d : t.shape) t.numel *= d;
    // 16-float alignment keeps every tensor on a 64-byte boundary for the vector kernels.
    p.total += (t.numel + 15) / 16 * 16;
    p.tensors.push_back(t);
    return t.offset;
  };
  p.embedding = add("embedding.weight", {V, H}, true);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string b = "block." + std::to_string(l) + ".";
    LayerOffsets o;
    o.attn_norm = add(b + "attn.norm.scale", {H}, false);
    o.qkv_w = add(b + "attn.qkv.weight", {(NH + 2 * NKV) * D, H}, true);
    o.qkv_b = add(b + "attn.qkv.bias", {(NH + 2 * NKV) * D}, false);
    o.sinks = add(b + "attn.sinks", {NH}, false);
    o.out_w = add(b + "attn.out.weight", {H, NH * D}, true);
    o.out_b = add(b + "attn.out.bias", {H}, false);
    o.mlp_norm = add(b + "mlp.norm.scale", {H}, false);
    o.gate_w = add(b + "mlp.gate.weight", {E, H}, true);
    o.gate_b = add(b + "mlp.gate.bias", {E}, false);
    o.mlp1_w = add(b + "mlp.mlp1_weight", {E, 2 * I, H}, true);
    o.mlp1_b = add(b + "mlp.mlp1_bias", {E, 2 * I}, false);
    o.mlp2_w = add(b + "mlp.mlp2_weight", {E, H, I}, true);
    o.mlp2_b = add(b + "mlp.mlp2_bias", {E, H}, false);
    p.layers.push_back(o);
  }
  p.norm = add("norm.scale", {H}, false);
  p.unembedding = add("unembedding.weight", {V, H}, true);
  return p;
}

uint64_t TrainRng::next_u64() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double TrainRng::uniform() {
  return double(next_u64() >> 11) * 0x1.0p-53;
}

double TrainRng::normal() {
  // One value per call (the second Box-Muller value is dropped): the state alone is the stream.
  const double u1 = 1.0 - uniform(), u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

template <typename T>
void init_params(const ParamLayout& layout, uint64_t seed, float std, T* params) {
  TrainRng rng(seed);
  const double out_std = std / std::sqrt(2.0 * layout.config.num_hidden_layers);
  for (int64_t i = 0; i < layout.total; ++i) params[i] = T(0);
  for (const auto& t : layout.tensors) {
    T* p = params + t.offset;
    const bool scale = t.name.ends_with(".scale");
    const bool residual_out =
        t.name.ends_with("attn.out.weight") || t.name.ends_with("mlp.mlp2_weight");
    if (scale) {
      for (int64_t i = 0; i < t.numel; ++i) p[i] = T(1);
    } else if (t.decay) {
      const double s = residual_out ? out_std : std;
      for (int64_t i = 0; i < t.numel; ++i) p[i] = T(rng.normal() * s);
    }
  }
}

template void init_params<float>(const ParamLayout&, uint64_t, float, float*);
template void init_params<double>(const ParamLayout&, uint64_t, float, double*);

}  // namespace mind4::train
