// gpt-oss checkpoints: detecting the layout (original gpt-oss or Hugging Face) and the expert
// format (MXFP4 or BF16), checking every tensor against the config, and binding ModelWeights.
//
// Original layout: big matrices and MXFP4 experts are zero-copy views into the mapped files (no
// page is touched while loading, so a 13 GB checkpoint loads in well under a second from a warm
// page cache). HF layout: q/k/v are concatenated into one owned qkv matrix and BF16 experts are
// transposed into the original orientation; MXFP4 experts are views (same orientation).
// Norm scales, biases and sinks become owned F32 vectors in either layout.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/weights.h"

namespace mind4 {

// What a checkpoint is, from its tensor names.
struct CheckpointFormat {
  CheckpointLayout layout = CheckpointLayout::kOriginal;
  bool mxfp4_experts = true;
};
// Throws Error(kMissingTensor) when the names match neither layout.
CheckpointFormat detect_checkpoint_format(const SafeTensorsSet& tensors);

// `path` is a checkpoint directory (config.json + *.safetensors, optionally an index) or one
// .safetensors file with config.json beside it. A missing tensor is Error(kMissingTensor) naming
// it; a wrong dtype or shape is Error(kShapeMismatch) naming the tensor, the expected and the found
// shape; a tensor the config does not account for is Error(kShapeMismatch) too.
ModelWeights load_checkpoint(const std::string& path);

// The same with the tensors already open and the config given (used by convert and tests).
ModelWeights bind_checkpoint(SafeTensorsSet tensors, const ModelConfig& config,
                             const std::string& source);

// One tensor to write for a checkpoint: its name, dtype, shape and a function that fills its bytes.
struct CheckpointTensor {
  TensorSpec spec;
  std::function<void(std::span<uint8_t>)> fill;
};

// The tensors of `weights` in `layout` with experts `mxfp4_experts` (converting between MXFP4 and
// BF16, transposing HF's BF16 experts, splitting or joining q/k/v as needed). Fill functions read
// `weights`, which must outlive them.
std::vector<CheckpointTensor> checkpoint_tensors(const ModelWeights& weights,
                                                 CheckpointLayout layout, bool mxfp4_experts);

// Writes `tensors` into `dir` as model.safetensors, or as model-0000i-of-0000n.safetensors shards
// of at most `shard_bytes` each plus model.safetensors.index.json, and config.json for `layout`.
// Each file appears atomically (written under a temporary name, then renamed).
void write_checkpoint(const std::string& dir, const ModelConfig& config, CheckpointLayout layout,
                      bool mxfp4_experts, std::vector<CheckpointTensor> tensors,
                      uint64_t shard_bytes);

// Loads `from` and writes it to `to` in `layout` with `mxfp4_experts`.
void convert_checkpoint(const std::string& from, const std::string& to, CheckpointLayout layout,
                        bool mxfp4_experts, uint64_t shard_bytes);

// Runs fn(begin, end) over [0, n) split across up to `threads` threads (0 = all cores).
void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace mind4
