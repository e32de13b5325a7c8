// The training loop of `mind4 train`: data, model, AdamW with warmup and decay, gradient
// accumulation and clipping, evaluation, checkpoints with exact resume, and logging (a progress
// line, metrics.jsonl and loss.svg in the checkpoint directory).
#pragma once

#include <cstdint>
#include <string>

#include "train/train_config.h"

namespace mind4::train {

struct TrainRunOptions {
  bool resume = true;      // continue from checkpoint_dir/latest when it exists
  int64_t stop_after = 0;  // > 0: stop (after checkpointing) once this step is reached
  int step_pause_ms = 0;   // sleep after each step (tests that kill a run mid-way)
};

struct TrainResult {
  int64_t steps = 0;
  double train_loss = 0.0;  // mean cross-entropy of the last step
  double val_loss = 0.0;    // last evaluation
  double tokens_per_s = 0.0, mfu = 0.0, seconds = 0.0;
};

// Throws Error with a message naming the problem: a bad or too small dataset, a vocabulary that
// does not match the model, a corrupt checkpoint, a NaN/inf loss (the last good checkpoint stays).
TrainResult run_training(const TrainConfig& config, const TrainRunOptions& options = {});

// The loss curve (train loss per logged step, validation loss per evaluation) of a metrics.jsonl
// as an SVG document.
std::string loss_curve_svg(const std::string& metrics_jsonl);

// FLOPs of one trained token (forward + backward: 6 per active matmul parameter plus attention
// over the keys each query sees). windowed = false counts every causal key, also in the sliding
// window layers (with the embedding table in active_params: the plain 6N convention).
double train_flops_per_token(const TrainConfig& config, int64_t active_params,
                             bool windowed = true);

}  // namespace mind4::train
