// Random gpt-oss checkpoints of any shape, for benchmarks and tests: written straight to disk
// (never the whole model in memory), multi-threaded, deterministic for a seed whatever the thread
// count, with magnitudes like a trained model's so that a forward pass stays finite:
//   dense matrices ~ N(0, 0.02) in BF16, norm scales ~ 1 + N(0, 0.05), biases ~ N(0, 0.02),
//   sinks ~ N(0, 0.5), MXFP4 experts = OCP MX quantisation of N(0, 0.02) blocks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace mind4 {

// "20b" (gpt-oss-20b), "120b" (gpt-oss-120b) or "tiny" (a few MB, for tests).
// Throws Error(kInvalidArgument) listing the presets for another name.
ModelConfig model_preset(const std::string& name);

// The tensors of a random original-layout checkpoint for `config`.
std::vector<CheckpointTensor> random_checkpoint_tensors(const ModelConfig& config,
                                                        bool mxfp4_experts, uint64_t seed);

// Writes it (config.json included) into `dir`.
void write_random_checkpoint(const std::string& dir, const ModelConfig& config, bool mxfp4_experts,
                             uint64_t seed, uint64_t shard_bytes = 0);

}  // namespace mind4
