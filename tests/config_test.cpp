// The project config and checkpoint configs: the repository's config.json loads; every kind of bad
// field is an Error(kInvalidConfig) naming the field path and the file; HF's field names map to
// the original ones as documented in docs/config.md.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/model_config.h"
#include "io_test_util.h"
#include "mind4/config.h"
#include "mind4/status.h"

namespace mind4 {
namespace {

using nlohmann::json;

json repo_config() {
  return json::parse(testing::read_file("config.json"));
}

// Parses `j` as a project config named "my.json" and expects an error mentioning every part.
void expect_config_error(const json& j, std::initializer_list<std::string> parts,
                         Status status = Status::kInvalidConfig) {
  try {
    parse_config(j.dump(), "my.json");
    ADD_FAILURE() << "accepted: " << j.dump();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    std::string msg = e.what();
    EXPECT_NE(msg.find("my.json"), std::string::npos) << msg;
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
  }
}

TEST(Config, RepositoryConfigLoads) {
  Config c = load_config("config.json");
  EXPECT_EQ(c.model.hidden_size, 2880);
  EXPECT_EQ(c.model.num_hidden_layers, 24);
  EXPECT_EQ(c.model.vocab_size, 201088);
  EXPECT_EQ(c.model.rope_scaling_factor, 32.0f);
  EXPECT_EQ(c.execution.backend, Backend::kCpu);
  EXPECT_EQ(c.execution.dtype, ActivationDType::kBFloat16);
  EXPECT_EQ(c.execution.device, Device::kAuto);
  EXPECT_EQ(c.paths.checkpoint, "models/default");
  EXPECT_EQ(c.paths.tokenizer, "auto");
  EXPECT_EQ(c.sampling.max_new_tokens, 256);
  EXPECT_EQ(c.sampling.top_p, 1.0f);
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
  EXPECT_EQ(c.source, "config.json");
}

TEST(Config, WrittenConfigReadsBack) {
  Config c = load_config("config.json");
  c.sampling.top_k = 40;
  c.sampling.seed = 18446744073709551615ull;
  c.execution.backend = Backend::kCuda;
  c.log_level = LogLevel::kDebug;
  Config back = parse_config(config_to_json(c), "x");
  EXPECT_EQ(back.sampling.top_k, 40);
  EXPECT_EQ(back.sampling.seed, 18446744073709551615ull);
  EXPECT_EQ(back.execution.backend, Backend::kCuda);
  EXPECT_EQ(back.log_level, LogLevel::kDebug);
  EXPECT_EQ(config_to_json(back), config_to_json(c));
}

TEST(Config, MisspeltFieldSuggestsTheRightOne) {
  json j = repo_config();
  j["sampling"]["top_pp"] = j["sampling"]["top_p"];
  j["sampling"].erase("top_p");
  // The missing field is reported first, pointing at the near-miss.
  expect_config_error(j, {"'sampling.top_p'", "missing", "sampling.top_pp"});
  j["sampling"]["top_p"] = 0.9;
  expect_config_error(j, {"'sampling.top_pp'", "unknown", "did you mean 'sampling.top_p'"});
  json k = repo_config();
  k["modle"] = k["model"];
  expect_config_error(k, {"'modle'", "did you mean 'model'"});
  json u = repo_config();
  u["execution"]["colour"] = "blue";
  expect_config_error(u, {"'execution.colour'", "unknown"});
}

TEST(Config, IllTypedFields) {
  json j = repo_config();
  j["sampling"]["top_k"] = "5";
  expect_config_error(j, {"'sampling.top_k'", "must be an integer", "string"});
  j = repo_config();
  j["model"]["hidden_size"] = 2880.5;
  expect_config_error(j, {"'model.hidden_size'", "must be an integer"});
  j = repo_config();
  j["sampling"]["temperature"] = true;
  expect_config_error(j, {"'sampling.temperature'", "must be a number"});
  j = repo_config();
  j["paths"]["checkpoint"] = 5;
  expect_config_error(j, {"'paths.checkpoint'", "must be a string"});
  j = repo_config();
  j["sampling"]["seed"] = -1;
  expect_config_error(j, {"'sampling.seed'", "non-negative"});
  j = repo_config();
  j["sampling"] = 1;
  expect_config_error(j, {"'sampling'", "must be an object"});
  j = repo_config();
  j["model"]["vocab_size"] = 1e12;
  expect_config_error(j, {"'model.vocab_size'"});
  try {
    parse_config("{\"model\": ", "my.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidConfig);
    EXPECT_NE(std::string(e.what()).find("my.json: not valid JSON"), std::string::npos) << e.what();
  }
}

TEST(Config, MissingFieldsAndGroups) {
  json j = repo_config();
  j["sampling"].erase("seed");
  expect_config_error(j, {"'sampling.seed'", "is missing"});
  j = repo_config();
  j.erase("logging");
  expect_config_error(j, {"'logging'", "is missing"});
  j = repo_config();
  j["model"].erase("swiglu_limit");
  expect_config_error(j, {"'model.swiglu_limit'", "is missing"});
}

TEST(Config, EnumValues) {
  json j = repo_config();
  j["execution"]["backend"] = "cdua";
  expect_config_error(j, {"execution.backend", "'cdua'", "cpu, cuda", "did you mean 'cuda'"});
  j = repo_config();
  j["execution"]["dtype"] = "fp8";
  expect_config_error(j, {"execution.dtype", "float32, bfloat16, float16"});
  j = repo_config();
  j["logging"]["log_level"] = "verbose";
  expect_config_error(j, {"logging.log_level", "debug, info, warning, error"});
  j = repo_config();
  j["execution"]["device"] = "cuda";
  expect_config_error(j, {"execution.device", "cpu backend"});
}

TEST(Config, OutOfRangeValues) {
  auto with = [](const char* group, const char* key, json v) {
    json j = repo_config();
    j[group][key] = v;
    return j;
  };
  expect_config_error(with("sampling", "top_p", 1.5), {"'sampling.top_p'", "1.5", "(0, 1]"});
  expect_config_error(with("sampling", "top_p", 0.0), {"'sampling.top_p'"});
  expect_config_error(with("sampling", "temperature", -0.1), {"'sampling.temperature'", ">= 0"});
  expect_config_error(with("sampling", "top_k", -1), {"'sampling.top_k'"});
  expect_config_error(with("sampling", "min_p", 2), {"'sampling.min_p'"});
  expect_config_error(with("sampling", "max_new_tokens", 0), {"'sampling.max_new_tokens'"});
  expect_config_error(with("sampling", "repetition_penalty", 0), {"'sampling.repetition_penalty'"});
  expect_config_error(with("execution", "threads", -2), {"'execution.threads'"});
  expect_config_error(with("model", "num_attention_heads", 60),
                      {"'model.num_attention_heads'", "multiple of", "8"});
  expect_config_error(with("model", "experts_per_token", 33),
                      {"'model.experts_per_token'", "[1, model.num_experts = 32]"});
  expect_config_error(with("model", "head_dim", 63), {"'model.head_dim'", "even"});
  expect_config_error(with("model", "rope_scaling_factor", 0.5), {"'model.rope_scaling_factor'"});
  expect_config_error(with("model", "hidden_size", 0), {"'model.hidden_size'", "> 0"});
  ModelConfig m;
  m.hidden_size = 2000;
  EXPECT_NO_THROW(validate_model_config(m, "x", false));
  try {
    validate_model_config(m, "x", true);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 32"), std::string::npos) << e.what();
  }
}

TEST(Config, MissingFileIsAnIoError) {
  try {
    load_config("no/such/config.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kIoError);
    EXPECT_NE(std::string(e.what()).find("no/such/config.json"), std::string::npos);
  }
}

// gpt-oss-20b's published configs, transcribed: original/config.json and the HF config.json.
const char* kOriginal20b = R"({"num_hidden_layers": 24, "num_experts": 32, "experts_per_token": 4,
  "vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880, "swiglu_limit": 7.0,
  "head_dim": 64, "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128,
  "initial_context_length": 4096, "rope_theta": 150000, "rope_scaling_factor": 32.0,
  "rope_ntk_alpha": 1, "rope_ntk_beta": 32})";

const char* kHf20b = R"({"architectures": ["GptOssForCausalLM"], "attention_bias": true,
  "attention_dropout": 0.0, "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
  "initializer_range": 0.02, "intermediate_size": 2880,
  "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
  "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64,
  "num_experts_per_tok": 4, "num_hidden_layers": 4, "num_key_value_heads": 8,
  "num_local_experts": 32, "output_router_logits": false, "pad_token_id": 199999,
  "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn"], "quant_method": "mxfp4"},
  "rms_norm_eps": 1e-05, "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
  "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false},
  "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
  "tie_word_embeddings": false, "transformers_version": "4.55.0.dev0", "use_cache": true,
  "vocab_size": 201088})";

TEST(ModelConfigFile, OriginalLayout) {
  ModelConfig m = parse_model_config(kOriginal20b, "orig.json");
  ModelConfig expected;  // the struct's defaults are gpt-oss-20b
  EXPECT_EQ(m.hidden_size, expected.hidden_size);
  EXPECT_EQ(m.num_experts, 32);
  EXPECT_EQ(m.experts_per_token, 4);
  EXPECT_EQ(m.max_context_length, 131072);  // 4096 * 32 when absent
  EXPECT_EQ(m.rope_ntk_alpha, 1.0f);
  EXPECT_EQ(m.rope_ntk_beta, 32.0f);
  EXPECT_EQ(detect_config_layout(kOriginal20b, "x"), CheckpointLayout::kOriginal);
}

TEST(ModelConfigFile, HuggingFaceLayoutMapsFields) {
  ModelConfig m = parse_model_config(kHf20b, "hf.json");
  EXPECT_EQ(m.num_hidden_layers, 4);
  EXPECT_EQ(m.num_experts, 32);
  EXPECT_EQ(m.experts_per_token, 4);
  EXPECT_EQ(m.max_context_length, 131072);
  EXPECT_EQ(m.initial_context_length, 4096);
  EXPECT_EQ(m.rope_scaling_factor, 32.0f);
  EXPECT_EQ(m.rope_ntk_beta, 32.0f);
  EXPECT_EQ(m.rope_ntk_alpha, 1.0f);
  EXPECT_EQ(m.sliding_window, 128);
  EXPECT_EQ(detect_config_layout(kHf20b, "x"), CheckpointLayout::kHuggingFace);

  json j = json::parse(kHf20b);
  j.erase("rope_scaling");
  m = parse_model_config(j.dump(), "hf.json");
  EXPECT_EQ(m.rope_scaling_factor, 1.0f);
  EXPECT_EQ(m.initial_context_length, 131072);
}

TEST(ModelConfigFile, HuggingFaceRefusals) {
  auto expect = [](const json& j, Status status, const std::string& part) {
    try {
      parse_model_config(j.dump(), "hf.json");
      ADD_FAILURE() << j.dump();
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), status) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("hf.json"), std::string::npos) << e.what();
    }
  };
  json j = json::parse(kHf20b);
  j["rope_scaling"]["truncate"] = true;
  expect(j, Status::kUnsupported, "truncate");
  j = json::parse(kHf20b);
  j["layer_types"][0] = "full_attention";
  expect(j, Status::kUnsupported, "layer_types[0]");
  j = json::parse(kHf20b);
  j["model_type"] = "llama";
  expect(j, Status::kUnsupported, "llama");
  j = json::parse(kHf20b);
  j.erase("num_local_experts");
  expect(j, Status::kInvalidConfig, "'num_local_experts'");
  j = json::parse(kHf20b);
  j["rope_scaling"].erase("beta_fast");
  expect(j, Status::kInvalidConfig, "'rope_scaling.beta_fast'");
  j = json::parse(kOriginal20b);
  j["max_context_lenght"] = 5;
  expect(j, Status::kInvalidConfig, "did you mean 'max_context_length'");
}

TEST(ModelConfigFile, WrittenConfigsReadBackInBothLayouts) {
  ModelConfig m = parse_model_config(kOriginal20b, "x");
  m.num_hidden_layers = 3;
  for (auto layout : {CheckpointLayout::kOriginal, CheckpointLayout::kHuggingFace}) {
    std::string text = model_config_json(m, layout, true);
    EXPECT_EQ(detect_config_layout(text, "x"), layout);
    ModelConfig back = parse_model_config(text, "x");
    EXPECT_EQ(model_config_json(back, CheckpointLayout::kOriginal, true),
              model_config_json(m, CheckpointLayout::kOriginal, true))
        << layout_name(layout);
  }
}

}  // namespace
}  // namespace mind4
