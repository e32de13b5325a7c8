// Training checkpoints. A checkpoint directory holds step_NNNNNNNN/ directories and a `latest`
// file naming the newest. Each step directory is complete or absent: it is written under a
// temporary name and renamed, and `latest` is replaced by rename after it, so a run killed at any
// moment leaves the previous checkpoint intact. A step directory holds:
//   config.json + model.safetensors  the model in the original gpt-oss layout (F32), loadable by
//                                    Model::load and `mind4 forward`;
//   state.safetensors                fp32 master weights, AdamW m and v, and in its metadata the
//                                    step, the data sampler's RNG state, tokens seen and the run
//                                    fingerprint, for an exact resume;
//   checksums.crc32                  CRC-32 and size of every other file, verified before a resume
//                                    (a flipped bit inside a tensor is otherwise undetectable).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "train/params.h"

namespace mind4::train {

// Writes config.json and model.safetensors into dir (each file atomically). Matrices in
// `matrix_dtype` (F32 or BF16); norm scales, biases and sinks in F32. With `mxfp4_experts` the
// expert matrices are written as MXFP4 blocks and scales (quantised from the f32 values), as in
// the original gpt-oss checkpoints; hidden_size and intermediate_size must then be multiples of 32
// (Error(kInvalidConfig) otherwise).
void write_model_files(const std::string& dir, const ParamLayout& layout, const float* params,
                       DType matrix_dtype, bool mxfp4_experts = false);

struct TrainState {
  int64_t step = 0;  // optimizer steps done
  uint64_t sampler_state = 0;
  int64_t tokens_seen = 0;
  std::string fingerprint;  // what must match to resume (model shape, batch geometry, seed)
};

// Saves step_<step>/ under ckpt_dir, updates `latest`, then removes all but the newest keep_last
// step directories. `extra_files` are copied into the step directory (the tokenizer).
void save_checkpoint(const std::string& ckpt_dir, const ParamLayout& layout, const float* params,
                     const float* adam_m, const float* adam_v, const TrainState& state,
                     int keep_last, const std::vector<std::string>& extra_files);

// The step directory `latest` names, or "" when there is none.
std::string latest_checkpoint(const std::string& ckpt_dir);

// Checks every file of a step directory against its checksums.crc32. Error(kCorruptFile) naming
// the file for a missing, truncated or altered file, or a missing or malformed checksums file.
void verify_checkpoint_files(const std::string& step_dir);

// Verifies the step directory (above), then loads its state into params/m/v (each layout.total
// floats). Errors name the file: kCorruptFile for a damaged or mismatched state file.
TrainState load_checkpoint_state(const std::string& step_dir, const ParamLayout& layout,
                                 float* params, float* adam_m, float* adam_v);

}  // namespace mind4::train
