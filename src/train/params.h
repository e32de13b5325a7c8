// The trainable parameters of a gpt-oss model carved out of one flat array (as llm.c does): the
// optimizer, gradient clipping and checkpointing see one buffer; the model sees offsets. Names
// and shapes are those of the original gpt-oss checkpoint layout with plain (not MXFP4) experts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mind4/config.h"

namespace mind4::train {

struct ParamTensor {
  std::string name;  // original layout name, e.g. "block.0.attn.qkv.weight"
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
  bool decay = false;  // AdamW weight decay applies (matrices, not norms/biases/sinks)
};

struct LayerOffsets {
  int64_t attn_norm, qkv_w, qkv_b, sinks, out_w, out_b;
  int64_t mlp_norm, gate_w, gate_b, mlp1_w, mlp1_b, mlp2_w, mlp2_b;
};

struct ParamLayout {
  ModelConfig config;
  std::vector<ParamTensor> tensors;  // in offset order
  int64_t total = 0;
  int64_t embedding = 0, norm = 0, unembedding = 0;
  std::vector<LayerOffsets> layers;

  const ParamTensor* find(const std::string& name) const;
  // Parameters a token's forward multiplies (dense matrices, k of E experts, unembedding): the
  // 6*N of the FLOP count.
  int64_t active_matmul_params() const;
};

ParamLayout make_param_layout(const ModelConfig& c);

// A deterministic Gaussian stream (splitmix64 + Box-Muller), the same on every platform (unlike
// std::normal_distribution).
class TrainRng {
 public:
  explicit TrainRng(uint64_t seed = 0) : state_(seed) {}
  uint64_t next_u64();
  double uniform();  // [0, 1)
  double normal();
  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

 private:
  uint64_t state_;
};

// Initial values: matrices ~ N(0, std) (the output projections of each block scaled by
// 1/sqrt(2 * layers), as GPT-2 does for residual branches), norm scales 1, biases and sinks 0.
template <typename T>
void init_params(const ParamLayout& layout, uint64_t seed, float std, T* params);

}  // namespace mind4::train
