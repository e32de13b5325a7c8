// Configuration. config.json (the project's) holds model, paths, execution, sampling and logging
// settings; a checkpoint's own config.json (the original gpt-oss one) supplies the model fields,
// and command-line flags override both. An unknown, missing or ill-typed field is an
// Error(kInvalidConfig) that names the field and the file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace mind4 {

// The gpt-oss architecture's hyper-parameters (names as in the original config.json).
struct ModelConfig {
  int hidden_size = 2880;
  int num_hidden_layers = 24;
  int num_attention_heads = 64;
  int num_key_value_heads = 8;
  int head_dim = 64;
  int intermediate_size = 2880;
  int vocab_size = 201088;
  int initial_context_length = 4096;
  int max_context_length = 131072;
  int sliding_window = 128;  // keys seen by even (0-based) blocks; 0 = full attention everywhere
  float rope_theta = 150000.0f;
  float rope_scaling_factor = 32.0f;  // YaRN factor; 1 = plain RoPE
  float rope_ntk_alpha = 1.0f;
  float rope_ntk_beta = 32.0f;
  int num_experts = 32;
  int experts_per_token = 4;
  float swiglu_limit = 7.0f;
};

enum class Backend { kCpu, kCuda };
enum class ActivationDType { kFloat32, kBFloat16, kFloat16 };
enum class Device { kCpu, kCuda, kAuto };
enum class LogLevel { kDebug, kInfo, kWarning, kError };

struct SamplingConfig {
  float temperature = 1.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  int max_new_tokens = 256;
  float repetition_penalty = 1.0f;  // 1 = off (CTRL-style: divide positive logits)
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
};

struct ExecutionConfig {
  Backend backend = Backend::kCpu;
  ActivationDType dtype = ActivationDType::kFloat32;
  Device device = Device::kAuto;
  int threads = 0;  // 0 = all cores
};

struct PathsConfig {
  std::string checkpoint;  // a directory (config.json + *.safetensors) or one .safetensors file
  std::string tokenizer;   // a built-in name (o200k_harmony, o200k_base) or a vocabulary file
};

struct Config {
  ModelConfig model;
  ExecutionConfig execution;
  PathsConfig paths;
  SamplingConfig sampling;
  LogLevel log_level = LogLevel::kInfo;
  std::string source;  // the file the runtime fields came from, for messages
};

}  // namespace mind4
