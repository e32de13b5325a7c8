// config/train.yaml: everything a training run needs. Every field is required (the file is the
// record of how a model was made), strictly typed and range-checked; an error is
// Error(kInvalidConfig) naming the file and the dotted field ("optimizer.beta2"), with a
// "did you mean" for a misspelt key. docs/train.md describes each field.
#pragma once

#include <cstdint>
#include <string>

#include "mind4/config.h"
#include "train/optimizer.h"

namespace mind4::train {

struct TrainConfig {
  ModelConfig model;
  // data
  std::string data_dir;   // holds train_*.bin and val_*.bin from `mind4 prepare-data`
  std::string tokenizer;  // the vocabulary the shards were made with (copied beside the model)
  // training
  int seq_len = 512;    // context length of the training windows
  int micro_batch = 8;  // sequences per forward/backward
  int grad_accum = 1;   // micro-batches per optimizer step
  int64_t steps = 0;    // optimizer steps; or derived from token_budget when steps = 0
  int64_t token_budget = 0;
  uint64_t seed = 1;
  float init_std = 0.02f;
  float aux_loss_coef = 0.01f;
  float grad_clip = 1.0f;  // 0 = off
  // optimizer
  AdamWConfig adamw;
  LrSchedule lr;  // total_steps filled in from steps
  // eval
  int eval_interval = 100;  // steps; 0 = only at the end
  int eval_batches = 8;
  // checkpoints
  std::string checkpoint_dir;
  int checkpoint_interval = 100;
  int keep_last = 3;
  std::string export_dir;     // "" = none; else the final model is written there too
  bool export_mxfp4 = false;  // the exported experts as MXFP4 (else bf16 like other matrices)
  // execution
  ExecutionConfig execution;
  int log_interval = 10;

  std::string source;  // the file, for messages
  int64_t tokens_per_step() const { return int64_t(seq_len) * micro_batch * grad_accum; }
};

// Reads and validates a train.yaml; relative paths are taken relative to the current directory.
TrainConfig load_train_config(const std::string& path);
TrainConfig parse_train_config(const std::string& yaml_text, const std::string& source);

}  // namespace mind4::train
