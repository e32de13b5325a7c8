// Internals shared by model.cpp (loading, validation), context.cpp (sequences, batching) and
// forward.cpp (the layer loop). Not part of the public API.
#pragma once

#include <memory>
#include <vector>

#include "core/thread_pool.h"
#include "mind4/model.h"
#include "model/weights.h"

namespace mind4 {

namespace cuda {
struct DeviceModel;  // src/cuda/device_model.h: the weights uploaded to the GPU
}

struct Model::Impl {
  ModelWeights weights;
  int qkv_rows = 0;  // (NH + 2 NKV) * D
  ExecutionConfig execution;  // backend and activation dtype every Context of this model uses
  std::shared_ptr<const cuda::DeviceModel> device;  // set when execution.backend is kCuda
};

// Owned, uninitialised fp32 storage (RAII); sized once, never resized in the token loop.
class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(size_t n) : data_(std::make_unique_for_overwrite<float[]>(n)), size_(n) {}
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  size_t size() const { return size_; }
  float& operator[](size_t i) { return data_[i]; }
  float operator[](size_t i) const { return data_[i]; }

 private:
  std::unique_ptr<float[]> data_;
  size_t size_ = 0;
};

// One row of a forward step: a token of a sequence at a position.
struct StepRow {
  int slot;   // KV slot of the sequence
  int pos;    // position in the sequence
  int token;
};

// Everything one forward step needs besides the weights, sized at Context creation for
// max_batch_tokens rows (B) and `threads` workers.
struct Workspace {
  int max_rows = 0;
  FloatBuffer x;        // [B, H] residual stream
  FloatBuffer t;        // [B, H] normed activations
  FloatBuffer qkv;      // [B, (NH + 2 NKV) D]
  FloatBuffer attn;     // [B, NH D]
  FloatBuffer proj;     // [B, H] out projection, then the experts' weighted sum
  FloatBuffer gate;     // [B, E] router logits
  std::vector<int> topk_expert;    // [B, k]
  FloatBuffer topk_weight;         // [B, k]
  std::vector<int> expert_count;   // [E] rows routed to each expert
  std::vector<int> expert_offset;  // [E + 1] start of each expert's group in the lists below
  std::vector<int> active_experts; // experts with at least one row, ascending
  std::vector<int> group_row;      // [B k] row of each (expert-grouped) assignment
  std::vector<int> assignment_at;  // [B, k] position of (row, slot) in the grouped lists
  FloatBuffer expert_in;   // [B k, H] gathered rows of t (deinterleaved for MXFP4)
  FloatBuffer expert_act;  // [B k, I] SwiGLU output (deinterleaved for MXFP4)
  FloatBuffer expert_out;  // [B k, H]
  FloatBuffer mlp1_tile;   // [threads, B, kMlp1Chunk] a chunk of mlp1 rows before SwiGLU
  FloatBuffer scores;      // [threads, context_length] attention scores
  FloatBuffer rope_cos, rope_sin;  // [context_length, D/2]
  FloatBuffer final_hidden;        // [L, H] normed rows that need logits
  FloatBuffer logits;              // [L, V]
  int max_logit_rows = 0;          // L
};

// Rows of mlp1 (gate/linear pairs) per work unit; even so that every pair stays in one unit.
inline constexpr int kMlp1Chunk = 64;

// KV cache: [slot][layer][position][NKV * D] for keys and the same for values, fp32.
struct KvCache {
  FloatBuffer k, v;
  int layers = 0, positions = 0, width = 0;  // width = NKV * D
  float* key(int slot, int layer, int pos) {
    return k.data() + ((int64_t(slot) * layers + layer) * positions + pos) * width;
  }
  float* value(int slot, int layer, int pos) {
    return v.data() + ((int64_t(slot) * layers + layer) * positions + pos) * width;
  }
};

void workspace_init(Workspace& ws, const ModelConfig& c, int max_rows, int max_logit_rows,
                    int threads, int context_length);

// One forward step over rows (all sequences mixed, at most ws.max_rows). Writes K/V of every row
// into the cache. For each i in [0, logit_rows.size()), logits of row logit_rows[i] go to
// ws.logits row i.
void forward_step(const Model::Impl& model, Workspace& ws, KvCache& kv, ThreadPool& pool,
                  std::span<const StepRow> rows, std::span<const int> logit_rows);

}  // namespace mind4
