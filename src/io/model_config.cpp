// Reading and writing a checkpoint's own config.json, original gpt-oss or Hugging Face layout.
#include "io/model_config.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "io/json_fields.h"
#include "mind4/status.h"

namespace mind4 {

namespace fs = std::filesystem;
using json = nlohmann::json;
using io::JsonFields;

namespace {

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(Status::kInvalidConfig, source + ": not valid JSON: " + e.what());
  }
}

ModelConfig parse_original(const json& root, const std::string& source) {
  JsonFields f(root, "", source);
  ModelConfig m = io::read_model_fields(f, true);
  f.finish(false);
  return m;
}

ModelConfig parse_hf(const json& root, const std::string& source) {
  JsonFields f(root, "", source);
  std::string type = f.get_string("model_type");
  MIND4_CHECK(type == "gpt_oss", Status::kUnsupported, source, ": model_type '", type,
              "' is not supported (Mind 4 runs gpt_oss)");
  ModelConfig m;
  m.num_hidden_layers = f.get_int("num_hidden_layers");
  m.num_experts = f.get_int("num_local_experts");
  m.experts_per_token = f.get_int("num_experts_per_tok");
  m.vocab_size = f.get_int("vocab_size");
  m.hidden_size = f.get_int("hidden_size");
  m.intermediate_size = f.get_int("intermediate_size");
  m.swiglu_limit = f.get_float("swiglu_limit");
  m.head_dim = f.get_int("head_dim");
  m.num_attention_heads = f.get_int("num_attention_heads");
  m.num_key_value_heads = f.get_int("num_key_value_heads");
  m.sliding_window = root.contains("sliding_window") && root["sliding_window"].is_null()
                         ? (f.allow("sliding_window"), 0)
                         : f.get_int("sliding_window");
  m.max_context_length = f.get_int("max_position_embeddings");
  m.initial_context_length = m.max_context_length;
  m.rope_scaling_factor = 1.0f;
  // Without YaRN the ntk parameters are unused; keep gpt-oss's values so that a conversion back
  // to the original layout writes sensible numbers.
  m.rope_ntk_alpha = 1.0f;
  m.rope_ntk_beta = 32.0f;
  // transformers 4.x: top-level rope_theta + rope_scaling{...}; 5.x: rope_parameters{rope_theta,
  // ...}.
  f.allow({"rope_scaling", "rope_parameters"});
  std::string rope_key;
  for (const char* key : {"rope_parameters", "rope_scaling"})
    if (rope_key.empty() && root.contains(key) && !root[key].is_null()) rope_key = key;
  if (rope_key.empty()) {
    m.rope_theta = f.get_float("rope_theta");
  } else {
    JsonFields r(f.get_object(rope_key), rope_key, source);
    m.rope_theta = r.has("rope_theta") ? (f.allow("rope_theta"), r.get_float("rope_theta"))
                                       : f.get_float("rope_theta");
    std::string rope_type = r.has("rope_type") ? r.get_string("rope_type")
                            : r.has("type")    ? r.get_string("type")
                                               : "";
    r.allow({"rope_type", "type"});
    if (rope_type == "yarn") {
      m.rope_scaling_factor = r.get_float("factor");
      m.rope_ntk_beta = r.get_float("beta_fast");
      m.rope_ntk_alpha = r.get_float("beta_slow");
      m.initial_context_length = r.get_int("original_max_position_embeddings");
      // HF's truncate=true rounds the YaRN ramp bounds to integers; gpt-oss does not.
      if (r.has("truncate") && r.get_bool("truncate"))
        throw Error(Status::kUnsupported,
                    source + ": " + rope_key +
                        ".truncate is true, but gpt-oss's YaRN (which Mind 4 implements) does "
                        "not truncate the ramp bounds; set it to false");
      r.allow({"truncate", "attention_factor", "mscale", "mscale_all_dim"});
      if (r.has("attention_factor")) {
        float expected = 0.1f * std::log(m.rope_scaling_factor) + 1.0f;
        MIND4_CHECK(std::fabs(r.get_float("attention_factor") - expected) < 1e-4f,
                    Status::kUnsupported, source, ": ", rope_key,
                    ".attention_factor differs from gpt-oss's 0.1*ln(factor)+1 = ", expected);
      }
    } else {
      MIND4_CHECK(rope_type.empty() || rope_type == "default", Status::kUnsupported, source, ": ",
                  rope_key, ".rope_type '", rope_type, "' is not supported (gpt-oss uses 'yarn')");
      r.allow({"factor", "beta_fast", "beta_slow", "original_max_position_embeddings", "truncate"});
    }
    r.finish(false);
  }
  // gpt-oss alternates sliding (even layers) and full attention; a checkpoint that says otherwise
  // would be run wrongly, so refuse it.
  f.allow("layer_types");
  if (root.contains("layer_types") && m.sliding_window > 0) {
    const json& lt = root["layer_types"];
    MIND4_CHECK(lt.is_array() && int(lt.size()) == m.num_hidden_layers, Status::kInvalidConfig,
                source, ": field 'layer_types' must list one type per layer (", m.num_hidden_layers,
                ")");
    for (size_t i = 0; i < lt.size(); ++i) {
      const char* expected = i % 2 == 0 ? "sliding_attention" : "full_attention";
      MIND4_CHECK(lt[i].is_string() && lt[i].get<std::string>() == expected, Status::kUnsupported,
                  source, ": layer_types[", i, "] is ", lt[i].dump(), "; gpt-oss uses ", expected,
                  " there (sliding on even layers)");
    }
  }
  f.allow({"architectures",
           "attention_bias",
           "attention_dropout",
           "eos_token_id",
           "pad_token_id",
           "bos_token_id",
           "hidden_act",
           "initializer_range",
           "output_router_logits",
           "rms_norm_eps",
           "router_aux_loss_coef",
           "tie_word_embeddings",
           "torch_dtype",
           "dtype",
           "transformers_version",
           "use_cache",
           "quantization_config",
           "experts_per_token",
           "num_experts",
           "initial_context_length",
           "sep_token_id",
           "_name_or_path",
           "chunk_size_feed_forward",
           "id2label",
           "label2id",
           "is_encoder_decoder",
           "output_attentions",
           "output_hidden_states",
           "problem_type",
           "return_dict",
           "tokenizer_class"});
  f.finish(false);
  return m;
}

}  // namespace

ModelConfig io::read_model_fields(JsonFields& f, bool max_context_optional) {
  ModelConfig m;
  m.hidden_size = f.get_int("hidden_size");
  m.num_hidden_layers = f.get_int("num_hidden_layers");
  m.num_attention_heads = f.get_int("num_attention_heads");
  m.num_key_value_heads = f.get_int("num_key_value_heads");
  m.head_dim = f.get_int("head_dim");
  m.intermediate_size = f.get_int("intermediate_size");
  m.vocab_size = f.get_int("vocab_size");
  m.initial_context_length = f.get_int("initial_context_length");
  m.sliding_window = f.get_int("sliding_window");
  m.rope_theta = f.get_float("rope_theta");
  m.rope_scaling_factor = f.get_float("rope_scaling_factor");
  m.rope_ntk_alpha = f.get_float("rope_ntk_alpha");
  m.rope_ntk_beta = f.get_float("rope_ntk_beta");
  m.num_experts = f.get_int("num_experts");
  m.experts_per_token = f.get_int("experts_per_token");
  m.swiglu_limit = f.get_float("swiglu_limit");
  if (max_context_optional && !f.has("max_context_length")) {
    m.max_context_length =
        int(std::lround(double(m.initial_context_length) * m.rope_scaling_factor));
  } else {
    m.max_context_length = f.get_int("max_context_length");
  }
  return m;
}

const char* layout_name(CheckpointLayout l) {
  return l == CheckpointLayout::kOriginal ? "original" : "hf";
}

CheckpointLayout detect_config_layout(const std::string& text, const std::string& source) {
  json root = parse_json(text, source);
  MIND4_CHECK(root.is_object(), Status::kInvalidConfig, source, ": must be a JSON object");
  return root.contains("model_type") ? CheckpointLayout::kHuggingFace : CheckpointLayout::kOriginal;
}

ModelConfig parse_model_config(const std::string& text, const std::string& source) {
  json root = parse_json(text, source);
  MIND4_CHECK(root.is_object(), Status::kInvalidConfig, source, ": must be a JSON object");
  ModelConfig m =
      root.contains("model_type") ? parse_hf(root, source) : parse_original(root, source);
  validate_model_config(m, source);
  return m;
}

std::string checkpoint_config_path(const std::string& checkpoint_path) {
  std::error_code ec;
  fs::path p(checkpoint_path);
  if (!fs::is_directory(p, ec)) p = p.parent_path();
  return (p / "config.json").string();
}

ModelConfig load_model_config(const std::string& checkpoint_path) {
  std::error_code ec;
  MIND4_CHECK(fs::exists(checkpoint_path, ec), Status::kIoError, "checkpoint '", checkpoint_path,
              "' does not exist");
  std::string path = checkpoint_config_path(checkpoint_path);
  MIND4_CHECK(fs::is_regular_file(path, ec), Status::kIoError, "checkpoint '", checkpoint_path,
              "' has no config.json (looked for '", path, "')");
  return parse_model_config(read_text_file(path), path);
}

std::string model_config_json(const ModelConfig& m, CheckpointLayout layout, bool mxfp4_experts) {
  json j;
  if (layout == CheckpointLayout::kOriginal) {
    j = {{"num_hidden_layers", m.num_hidden_layers},
         {"num_experts", m.num_experts},
         {"experts_per_token", m.experts_per_token},
         {"vocab_size", m.vocab_size},
         {"hidden_size", m.hidden_size},
         {"intermediate_size", m.intermediate_size},
         {"swiglu_limit", m.swiglu_limit},
         {"head_dim", m.head_dim},
         {"num_attention_heads", m.num_attention_heads},
         {"num_key_value_heads", m.num_key_value_heads},
         {"sliding_window", m.sliding_window},
         {"initial_context_length", m.initial_context_length},
         {"rope_theta", m.rope_theta},
         {"rope_scaling_factor", m.rope_scaling_factor},
         {"rope_ntk_alpha", m.rope_ntk_alpha},
         {"rope_ntk_beta", m.rope_ntk_beta},
         {"max_context_length", m.max_context_length}};
    return j.dump(2) + "\n";
  }
  json layer_types = json::array();
  for (int l = 0; l < m.num_hidden_layers; ++l)
    layer_types.push_back(layer_window(m, l) > 0 ? "sliding_attention" : "full_attention");
  j = {{"architectures", {"GptOssForCausalLM"}},
       {"model_type", "gpt_oss"},
       {"hidden_size", m.hidden_size},
       {"num_hidden_layers", m.num_hidden_layers},
       {"num_attention_heads", m.num_attention_heads},
       {"num_key_value_heads", m.num_key_value_heads},
       {"head_dim", m.head_dim},
       {"intermediate_size", m.intermediate_size},
       {"vocab_size", m.vocab_size},
       {"num_local_experts", m.num_experts},
       {"num_experts_per_tok", m.experts_per_token},
       {"experts_per_token", m.experts_per_token},
       {"swiglu_limit", m.swiglu_limit},
       {"rope_theta", m.rope_theta},
       {"sliding_window", m.sliding_window},
       {"layer_types", layer_types},
       {"max_position_embeddings", m.max_context_length},
       {"rms_norm_eps", 1e-5},
       {"attention_bias", true},
       {"attention_dropout", 0.0},
       {"hidden_act", "silu"},
       {"tie_word_embeddings", false},
       {"torch_dtype", "bfloat16"},
       {"use_cache", true},
       {"initializer_range", 0.02},
       {"router_aux_loss_coef", 0.9},
       {"output_router_logits", false}};
  if (m.rope_scaling_factor > 1.0f) {
    j["rope_scaling"] = {{"rope_type", "yarn"},
                         {"factor", m.rope_scaling_factor},
                         {"beta_fast", m.rope_ntk_beta},
                         {"beta_slow", m.rope_ntk_alpha},
                         {"original_max_position_embeddings", m.initial_context_length},
                         {"truncate", false}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (mxfp4_experts) {
    j["quantization_config"] = {{"quant_method", "mxfp4"},
                                {"modules_to_not_convert",
                                 {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                  "model.embed_tokens", "lm_head"}}};
  }
  return j.dump(2) + "\n";
}

}  // namespace mind4
