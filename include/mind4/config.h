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

// Keys a query of block `layer` sees back from itself: sliding_window on even (0-based) blocks,
// 0 (the whole causal prefix) on odd ones or when sliding_window is 0. The one statement of
// gpt-oss's alternating pattern; every line (CPU, CUDA, training) asks here.
inline int layer_window(const ModelConfig& c, int layer) {
  return c.sliding_window > 0 && layer % 2 == 0 ? c.sliding_window : 0;
}

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
  // Whether any penalty is on (they count the sequence's tokens).
  bool has_penalties() const {
    return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
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

// ---- loading (src/io/config.cpp, src/io/model_config.cpp); the JSON shapes are in docs/config.md
// ----

// The project's config.json: groups "model", "execution", "paths", "sampling", "logging", every
// field present and of the right type and range. Throws Error(kInvalidConfig) naming the file and
// the field path (e.g. "sampling.top_p"), with a "did you mean" for a misspelt key; Error(kIoError)
// when the file cannot be read.
Config load_config(const std::string& path);
// The same from text; `source` names it in messages.
Config parse_config(const std::string& text, const std::string& source);

// A checkpoint's own config.json (path = the checkpoint directory, or a .safetensors file whose
// directory holds config.json), in the original gpt-oss layout or Hugging Face's (model_type
// "gpt_oss": num_local_experts, num_experts_per_tok, max_position_embeddings, rope_scaling{...}).
ModelConfig load_model_config(const std::string& checkpoint_path);
ModelConfig parse_model_config(const std::string& text, const std::string& source);

// Range checks; `source` names where the values came from. With MXFP4 experts the hidden and
// intermediate sizes must be multiples of the 32-value block.
void validate_model_config(const ModelConfig& m, const std::string& source,
                           bool mxfp4_experts = false);
// Every range check of a whole Config (model, execution, sampling).
void validate_config(const Config& c, const std::string& source);

// The project config.json text for `c` (the shape load_config reads).
std::string config_to_json(const Config& c);

// Spellings used in config.json and on the command line.
const char* backend_name(Backend b);
const char* activation_dtype_name(ActivationDType d);
const char* device_name(Device d);
const char* log_level_name(LogLevel l);
// Parse a spelling; throw Error(kInvalidConfig) naming `what` and listing the valid spellings.
Backend parse_backend(const std::string& s, const std::string& what);
ActivationDType parse_activation_dtype(const std::string& s, const std::string& what);
Device parse_device(const std::string& s, const std::string& what);
LogLevel parse_log_level(const std::string& s, const std::string& what);

}  // namespace mind4
