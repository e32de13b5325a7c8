// The project's config.json (shape documented in docs/config.md) and the range checks shared by
// every way a Config can be assembled (file, checkpoint, command line).
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/mapped_file.h"
#include "io/json_fields.h"
#include "io/model_config.h"
#include "mind4/config.h"
#include "mind4/status.h"

namespace mind4 {

using json = nlohmann::json;
using io::JsonFields;

namespace {

template <typename E>
struct Spelling {
  E value;
  const char* name;
};
constexpr Spelling<Backend> kBackends[] = {{Backend::kCpu, "cpu"}, {Backend::kCuda, "cuda"}};
constexpr Spelling<ActivationDType> kDTypes[] = {{ActivationDType::kFloat32, "float32"},
                                                 {ActivationDType::kBFloat16, "bfloat16"},
                                                 {ActivationDType::kFloat16, "float16"}};
constexpr Spelling<Device> kDevices[] = {
    {Device::kCpu, "cpu"}, {Device::kCuda, "cuda"}, {Device::kAuto, "auto"}};
constexpr Spelling<LogLevel> kLogLevels[] = {{LogLevel::kDebug, "debug"},
                                             {LogLevel::kInfo, "info"},
                                             {LogLevel::kWarning, "warning"},
                                             {LogLevel::kError, "error"}};

template <typename E, size_t N>
const char* name_of(const Spelling<E> (&table)[N], E v) {
  for (const auto& s : table)
    if (s.value == v) return s.name;
  return "?";
}

template <typename E, size_t N>
E parse_spelling(const Spelling<E> (&table)[N], const std::string& s, const std::string& what) {
  std::vector<std::string> names;
  for (const auto& t : table) {
    if (s == t.name) return t.value;
    names.push_back(t.name);
  }
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  std::string near = io::closest_match(s, names);
  throw Error(Status::kInvalidConfig, what + " is '" + s + "'; expected one of " + list +
                                          (near.empty() ? "" : " (did you mean '" + near + "'?)"));
}

// Range check helper: `field` is the dotted path, `source` where the value came from.
void require(bool ok, const std::string& source, const std::string& field, const std::string& value,
             const std::string& rule) {
  if (!ok)
    throw Error(Status::kInvalidConfig,
                source + ": field '" + field + "' = " + value + " is out of range: " + rule);
}

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

const char* backend_name(Backend b) {
  return name_of(kBackends, b);
}
const char* activation_dtype_name(ActivationDType d) {
  return name_of(kDTypes, d);
}
const char* device_name(Device d) {
  return name_of(kDevices, d);
}
const char* log_level_name(LogLevel l) {
  return name_of(kLogLevels, l);
}
Backend parse_backend(const std::string& s, const std::string& what) {
  return parse_spelling(kBackends, s, what);
}
ActivationDType parse_activation_dtype(const std::string& s, const std::string& what) {
  return parse_spelling(kDTypes, s, what);
}
Device parse_device(const std::string& s, const std::string& what) {
  return parse_spelling(kDevices, s, what);
}
LogLevel parse_log_level(const std::string& s, const std::string& what) {
  return parse_spelling(kLogLevels, s, what);
}

void validate_model_config(const ModelConfig& m, const std::string& source, bool mxfp4_experts) {
  auto positive = [&](int v, const char* field) {
    require(v > 0, source, field, std::to_string(v), "must be > 0");
  };
  positive(m.hidden_size, "model.hidden_size");
  positive(m.num_hidden_layers, "model.num_hidden_layers");
  positive(m.num_attention_heads, "model.num_attention_heads");
  positive(m.num_key_value_heads, "model.num_key_value_heads");
  positive(m.head_dim, "model.head_dim");
  positive(m.intermediate_size, "model.intermediate_size");
  positive(m.vocab_size, "model.vocab_size");
  positive(m.initial_context_length, "model.initial_context_length");
  positive(m.max_context_length, "model.max_context_length");
  positive(m.num_experts, "model.num_experts");
  require(
      m.num_attention_heads % m.num_key_value_heads == 0, source, "model.num_attention_heads",
      std::to_string(m.num_attention_heads),
      "must be a multiple of model.num_key_value_heads = " + std::to_string(m.num_key_value_heads));
  // RoPE rotates the pairs (i, i + head_dim/2).
  require(m.head_dim % 2 == 0, source, "model.head_dim", std::to_string(m.head_dim),
          "must be even (RoPE)");
  require(m.sliding_window >= 0, source, "model.sliding_window", std::to_string(m.sliding_window),
          "must be >= 0 (0 = full attention)");
  require(m.experts_per_token >= 1 && m.experts_per_token <= m.num_experts, source,
          "model.experts_per_token", std::to_string(m.experts_per_token),
          "must be in [1, model.num_experts = " + std::to_string(m.num_experts) + "]");
  require(m.rope_theta > 1.0f, source, "model.rope_theta", num(m.rope_theta), "must be > 1");
  require(m.rope_scaling_factor >= 1.0f, source, "model.rope_scaling_factor",
          num(m.rope_scaling_factor), "must be >= 1 (1 = plain RoPE)");
  require(m.rope_ntk_alpha > 0.0f, source, "model.rope_ntk_alpha", num(m.rope_ntk_alpha),
          "must be > 0");
  require(m.rope_ntk_beta > 0.0f, source, "model.rope_ntk_beta", num(m.rope_ntk_beta),
          "must be > 0");
  require(m.swiglu_limit > 0.0f, source, "model.swiglu_limit", num(m.swiglu_limit), "must be > 0");
  if (mxfp4_experts) {
    require(m.hidden_size % 32 == 0, source, "model.hidden_size", std::to_string(m.hidden_size),
            "must be a multiple of 32 (the MXFP4 block) for MXFP4 experts");
    require(m.intermediate_size % 32 == 0, source, "model.intermediate_size",
            std::to_string(m.intermediate_size),
            "must be a multiple of 32 (the MXFP4 block) for MXFP4 experts");
  }
}

void validate_config(const Config& c, const std::string& source) {
  validate_model_config(c.model, source);
  const ExecutionConfig& e = c.execution;
  require(e.threads >= 0, source, "execution.threads", std::to_string(e.threads),
          "must be >= 0 (0 = all cores)");
  require(e.backend != Backend::kCpu || e.device != Device::kCuda, source, "execution.device",
          "cuda", "the cpu backend runs on device cpu (or auto)");
  require(e.backend != Backend::kCuda || e.device != Device::kCpu, source, "execution.device",
          "cpu", "the cuda backend runs on device cuda (or auto)");
  const SamplingConfig& s = c.sampling;
  require(s.temperature >= 0.0f, source, "sampling.temperature", num(s.temperature),
          "must be >= 0 (0 = greedy)");
  require(s.top_k >= 0, source, "sampling.top_k", std::to_string(s.top_k),
          "must be >= 0 (0 = off)");
  require(s.top_p > 0.0f && s.top_p <= 1.0f, source, "sampling.top_p", num(s.top_p),
          "must be in (0, 1] (1 = off)");
  require(s.min_p >= 0.0f && s.min_p <= 1.0f, source, "sampling.min_p", num(s.min_p),
          "must be in [0, 1] (0 = off)");
  require(s.max_new_tokens > 0, source, "sampling.max_new_tokens", std::to_string(s.max_new_tokens),
          "must be > 0");
  require(s.repetition_penalty > 0.0f, source, "sampling.repetition_penalty",
          num(s.repetition_penalty), "must be > 0 (1 = off)");
}

Config parse_config(const std::string& text, const std::string& source) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(Status::kInvalidConfig, source + ": not valid JSON: " + e.what());
  }
  Config c;
  c.source = source;
  JsonFields top(root, "", source);

  JsonFields model(top.get_object("model"), "model", source);
  c.model = io::read_model_fields(model, false);
  model.finish(true);

  JsonFields exec(top.get_object("execution"), "execution", source);
  c.execution.backend =
      parse_backend(exec.get_string("backend"), source + ": field 'execution.backend'");
  c.execution.dtype =
      parse_activation_dtype(exec.get_string("dtype"), source + ": field 'execution.dtype'");
  c.execution.device =
      parse_device(exec.get_string("device"), source + ": field 'execution.device'");
  c.execution.threads = exec.get_int("threads");
  exec.finish(true);

  JsonFields paths(top.get_object("paths"), "paths", source);
  c.paths.checkpoint = paths.get_string("checkpoint");
  c.paths.tokenizer = paths.get_string("tokenizer");
  paths.finish(true);

  JsonFields s(top.get_object("sampling"), "sampling", source);
  c.sampling.temperature = s.get_float("temperature");
  c.sampling.top_k = s.get_int("top_k");
  c.sampling.top_p = s.get_float("top_p");
  c.sampling.min_p = s.get_float("min_p");
  c.sampling.max_new_tokens = s.get_int("max_new_tokens");
  c.sampling.repetition_penalty = s.get_float("repetition_penalty");
  c.sampling.presence_penalty = s.get_float("presence_penalty");
  c.sampling.frequency_penalty = s.get_float("frequency_penalty");
  c.sampling.seed = s.get_u64("seed");
  s.finish(true);

  JsonFields log(top.get_object("logging"), "logging", source);
  c.log_level =
      parse_log_level(log.get_string("log_level"), source + ": field 'logging.log_level'");
  log.finish(true);

  top.finish(true);
  validate_config(c, source);
  return c;
}

std::string config_to_json(const Config& c) {
  const ModelConfig& m = c.model;
  const SamplingConfig& s = c.sampling;
  // ordered_json keeps the documented group and field order.
  nlohmann::ordered_json j;
  j["model"] = {{"hidden_size", m.hidden_size},
                {"num_hidden_layers", m.num_hidden_layers},
                {"num_attention_heads", m.num_attention_heads},
                {"num_key_value_heads", m.num_key_value_heads},
                {"head_dim", m.head_dim},
                {"intermediate_size", m.intermediate_size},
                {"vocab_size", m.vocab_size},
                {"initial_context_length", m.initial_context_length},
                {"max_context_length", m.max_context_length},
                {"sliding_window", m.sliding_window},
                {"rope_theta", m.rope_theta},
                {"rope_scaling_factor", m.rope_scaling_factor},
                {"rope_ntk_alpha", m.rope_ntk_alpha},
                {"rope_ntk_beta", m.rope_ntk_beta},
                {"num_experts", m.num_experts},
                {"experts_per_token", m.experts_per_token},
                {"swiglu_limit", m.swiglu_limit}};
  j["execution"] = {{"backend", backend_name(c.execution.backend)},
                    {"dtype", activation_dtype_name(c.execution.dtype)},
                    {"device", device_name(c.execution.device)},
                    {"threads", c.execution.threads}};
  j["paths"] = {{"checkpoint", c.paths.checkpoint}, {"tokenizer", c.paths.tokenizer}};
  j["sampling"] = {{"temperature", s.temperature},
                   {"top_k", s.top_k},
                   {"top_p", s.top_p},
                   {"min_p", s.min_p},
                   {"max_new_tokens", s.max_new_tokens},
                   {"repetition_penalty", s.repetition_penalty},
                   {"presence_penalty", s.presence_penalty},
                   {"frequency_penalty", s.frequency_penalty},
                   {"seed", s.seed}};
  j["logging"] = {{"log_level", log_level_name(c.log_level)}};
  return j.dump(2) + "\n";
}

Config load_config(const std::string& path) {
  std::error_code ec;
  MIND4_CHECK(
      std::filesystem::is_regular_file(path, ec), Status::kIoError, "config file '", path,
      "' does not exist (pass --config FILE; the repository's config.json documents every field)");
  return parse_config(read_text_file(path), path);
}

}  // namespace mind4
