// `mind4 bench-train`: training throughput on synthetic tokens (no data, no checkpoints), the
// figure docs/perf-notes.md compares with PyTorch (scripts/bench_train_torch.py).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/train_config.h"

namespace mind4::train {

struct TrainBenchResult {
  std::string engine;                // TrainEngine::describe()
  std::vector<double> step_seconds;  // each timed optimizer step, synchronised
  double median_seconds = 0.0;
  double tokens_per_s = 0.0;     // tokens of a step / median step time
  double flops_per_token = 0.0;  // train_flops_per_token
  double peak_flops = 0.0;       // the engine's measured peak
  double mfu = 0.0;
  // The plain 6N convention, for comparison with figures counted that way: 6 x every active
  // parameter (the input embedding table too, though its lookup does no product) plus attention
  // over every causal key (the sliding window ignored).
  double flops_per_token_6n = 0.0, mfu_6n = 0.0;
  double first_loss = 0.0, last_loss = 0.0;
};

// Runs `warmup` untimed then `steps` timed optimizer steps of config (its model, micro_batch,
// seq_len, grad_accum, optimizer and execution; data and checkpoint fields are not used) on
// uniformly random tokens.
TrainBenchResult bench_training(const TrainConfig& config, int warmup, int steps);

}  // namespace mind4::train
