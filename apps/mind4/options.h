// Flags every model-facing subcommand shares, and how they combine with the config files:
//   the project config (--config, default config.json) supplies the runtime fields,
//   the checkpoint's own config.json supplies the model fields (when the checkpoint exists),
//   command-line flags override both.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "mind4/config.h"

namespace mind4::cli {

struct CommonOptions {
  std::string config_path = "config.json";
  std::optional<std::string> checkpoint, tokenizer, backend, dtype, device, log_level;
  std::optional<int> threads, top_k, max_new_tokens;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty,
      frequency_penalty;
  std::optional<uint64_t> seed;
};

// Adds --config, --checkpoint, --tokenizer, --backend, --dtype, --device, --threads, the sampling
// flags and --log-level to `app`, storing into `options` (which must outlive parsing).
void add_common_options(CLI::App& app, CommonOptions& options);

struct ResolvedConfig {
  Config config;
  bool checkpoint_exists = false;  // when false, config.model is the project file's model block
};

// Loads the project config, overlays the checkpoint's model config when the checkpoint exists, then
// the flags, and validates the result (messages name the field, the file and the flag).
ResolvedConfig resolve_config(const CommonOptions& options);

// Throws Error(kIoError) with a clear next step when the resolved checkpoint does not exist.
void require_checkpoint(const ResolvedConfig& resolved);

}  // namespace mind4::cli

namespace mind4::cli {
// "2GB", "500MB", "64KiB", "1048576", "0" -> bytes (GB = 10^9, GiB = 2^30). Throws
// Error(kInvalidArgument) naming `flag` for anything else.
uint64_t parse_byte_size(const std::string& text, const std::string& flag);
}  // namespace mind4::cli
