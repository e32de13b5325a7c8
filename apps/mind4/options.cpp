#include "options.h"

#include <cctype>
#include <filesystem>

#include "mind4/status.h"

namespace mind4::cli {

namespace {

// Optional flags: unset means "whatever the config files say", which --help shows as the default.
template <typename T>
void optional_flag(CLI::App& app, const std::string& name, std::optional<T>& target,
                   const std::string& help) {
  app.add_option_function<T>(
         name, [&target](const T& v) { target = v; }, help)
      ->default_str("from --config");
}

}  // namespace

void add_common_options(CLI::App& app, CommonOptions& o) {
  app.add_option("--config", o.config_path,
                 "Project config file (runtime settings; see docs/config.md)");
  optional_flag(app, "--checkpoint", o.checkpoint, "Checkpoint directory or .safetensors file");
  optional_flag(app, "--tokenizer", o.tokenizer,
                "Tokenizer: auto (the checkpoint's own tokenizer.tiktoken, else o200k_harmony), "
                "o200k_harmony, o200k_base or a vocabulary file");
  optional_flag(app, "--backend", o.backend, "Execution backend: cpu | cuda");
  optional_flag(app, "--dtype", o.dtype, "Activation dtype: float32 | bfloat16 | float16");
  optional_flag(app, "--device", o.device, "Device: cpu | cuda | auto");
  optional_flag(app, "--threads", o.threads, "CPU threads (0 = all cores)");
  optional_flag(app, "--temperature", o.temperature, "Sampling temperature (0 = greedy)");
  optional_flag(app, "--top-k", o.top_k, "Keep the k most likely tokens (0 = off)");
  optional_flag(app, "--top-p", o.top_p, "Nucleus sampling mass in (0, 1] (1 = off)");
  optional_flag(app, "--min-p", o.min_p, "Drop tokens below min_p * p(max) (0 = off)");
  optional_flag(app, "--max-new-tokens", o.max_new_tokens, "Tokens to generate at most");
  optional_flag(app, "--repetition-penalty", o.repetition_penalty, "Repetition penalty (1 = off)");
  optional_flag(app, "--presence-penalty", o.presence_penalty, "Presence penalty (0 = off)");
  optional_flag(app, "--frequency-penalty", o.frequency_penalty, "Frequency penalty (0 = off)");
  optional_flag(app, "--seed", o.seed, "Sampling seed");
  optional_flag(app, "--log-level", o.log_level, "Log level: debug | info | warning | error");
}

ResolvedConfig resolve_config(const CommonOptions& o) {
  ResolvedConfig r;
  r.config = load_config(o.config_path);
  Config& c = r.config;
  if (o.checkpoint) c.paths.checkpoint = *o.checkpoint;
  if (o.tokenizer) c.paths.tokenizer = *o.tokenizer;
  std::error_code ec;
  r.checkpoint_exists =
      !c.paths.checkpoint.empty() && std::filesystem::exists(c.paths.checkpoint, ec);
  if (r.checkpoint_exists) c.model = load_model_config(c.paths.checkpoint);
  if (o.backend) c.execution.backend = parse_backend(*o.backend, "--backend");
  if (o.dtype) c.execution.dtype = parse_activation_dtype(*o.dtype, "--dtype");
  if (o.device) c.execution.device = parse_device(*o.device, "--device");
  if (o.log_level) c.log_level = parse_log_level(*o.log_level, "--log-level");
  if (o.threads) c.execution.threads = *o.threads;
  SamplingConfig& s = c.sampling;
  if (o.temperature) s.temperature = *o.temperature;
  if (o.top_k) s.top_k = *o.top_k;
  if (o.top_p) s.top_p = *o.top_p;
  if (o.min_p) s.min_p = *o.min_p;
  if (o.max_new_tokens) s.max_new_tokens = *o.max_new_tokens;
  if (o.repetition_penalty) s.repetition_penalty = *o.repetition_penalty;
  if (o.presence_penalty) s.presence_penalty = *o.presence_penalty;
  if (o.frequency_penalty) s.frequency_penalty = *o.frequency_penalty;
  if (o.seed) s.seed = *o.seed;
  // Field paths in the message map to flags by name (sampling.top_p <-> --top-p).
  validate_config(c,
                  o.config_path + " with command-line flags" +
                      (r.checkpoint_exists ? " and checkpoint '" + c.paths.checkpoint + "'" : ""));
  c.source = o.config_path;
  return r;
}

void require_checkpoint(const ResolvedConfig& r) {
  const std::string& path = r.config.paths.checkpoint;
  MIND4_CHECK(
      r.checkpoint_exists, Status::kIoError, "checkpoint '", path,
      "' does not exist. Pass --checkpoint DIR (a directory with config.json and *.safetensors, or "
      "one "
      ".safetensors file), or set paths.checkpoint in ",
      r.config.source.empty() ? "config.json" : r.config.source,
      ". For a random model of the right shape: mind4 random-checkpoint --out DIR --preset 20b");
}

}  // namespace mind4::cli

namespace mind4::cli {

uint64_t parse_byte_size(const std::string& text, const std::string& flag) {
  size_t digits = 0;
  while (digits < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.'))
    ++digits;
  std::string unit = text.substr(digits);
  for (auto& ch : unit) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  struct Unit {
    const char* name;
    double bytes;
  };
  static constexpr Unit kUnits[] = {{"", 1},
                                    {"B", 1},
                                    {"KB", 1e3},
                                    {"MB", 1e6},
                                    {"GB", 1e9},
                                    {"TB", 1e12},
                                    {"KIB", 1024.0},
                                    {"MIB", 1048576.0},
                                    {"GIB", 1073741824.0},
                                    {"TIB", 1099511627776.0}};
  double value = 0;
  bool ok = digits > 0;
  try {
    if (ok) value = std::stod(text.substr(0, digits));
  } catch (const std::exception&) {
    ok = false;
  }
  for (const Unit& u : kUnits)
    if (ok && unit == u.name && value >= 0 && value * u.bytes < 1.8e19)
      return uint64_t(value * u.bytes);
  throw Error(Status::kInvalidArgument,
              flag + " '" + text + "' is not a size (examples: 2GB, 500MB, 4GiB, 0)");
}

}  // namespace mind4::cli
