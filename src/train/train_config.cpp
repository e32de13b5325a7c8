#include "train/train_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/json_fields.h"
#include "io/model_config.h"
#include "mind4/status.h"

namespace mind4::train {
namespace {

using json = nlohmann::json;

// YAML scalars carry no type: an integer, then a number, then true/false, else a string, which is
// what a reader of the file expects ("3e-4" is a number, "cosine" a string).
json train_yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = train_yaml_to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& v : n) a.push_back(train_yaml_to_json(v));
      return a;
    }
    case YAML::NodeType::Scalar: {
      const std::string s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted: a string whatever it looks like
      char* end = nullptr;
      errno = 0;
      long long i = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && *end == '\0' && errno == 0) return i >= 0 ? json(uint64_t(i)) : json(i);
      double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && *end == '\0') return d;
      if (s == "true") return true;
      if (s == "false") return false;
      return s;
    }
    default:
      return nullptr;
  }
}

void train_require(bool ok, io::JsonFields& f, const std::string& key, const std::string& rule) {
  if (!ok) f.fail(key, rule);
}

}  // namespace

TrainConfig parse_train_config(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(Status::kInvalidConfig, source + ": not valid YAML: " + e.what());
  }
  const json j = train_yaml_to_json(root);
  TrainConfig c;
  c.source = source;
  io::JsonFields top(j, "", source);

  {
    io::JsonFields f(top.get_object("model"), "model", source);
    ModelConfig& m = c.model;
    m = io::read_model_fields(f, false);
    f.finish(true);
    validate_model_config(m, source + " (model)");
    train_require(m.head_dim <= 1024, f, "head_dim", "must be <= 1024");
  }
  {
    io::JsonFields f(top.get_object("data"), "data", source);
    c.data_dir = f.get_string("dir");
    c.tokenizer = f.get_string("tokenizer");
    train_require(!c.data_dir.empty(), f, "dir", "must name the prepare-data output directory");
    train_require(!c.tokenizer.empty(), f, "tokenizer", "must name a vocabulary file");
    f.finish(true);
  }
  {
    io::JsonFields f(top.get_object("training"), "training", source);
    c.seq_len = f.get_int("seq_len");
    c.micro_batch = f.get_int("micro_batch");
    c.grad_accum = f.get_int("grad_accum");
    c.steps = f.get_int("steps");
    c.token_budget = int64_t(f.get_u64("token_budget"));
    c.seed = f.get_u64("seed");
    c.init_std = f.get_float("init_std");
    c.aux_loss_coef = f.get_float("aux_loss_coef");
    c.grad_clip = f.get_float("grad_clip");
    c.log_interval = f.get_int("log_interval");
    train_require(c.seq_len >= 2, f, "seq_len", "must be >= 2");
    train_require(
        c.seq_len <= c.model.max_context_length, f, "seq_len",
        "must be <= model.max_context_length (" + std::to_string(c.model.max_context_length) + ")");
    train_require(c.micro_batch >= 1, f, "micro_batch", "must be >= 1");
    train_require(c.grad_accum >= 1, f, "grad_accum", "must be >= 1");
    train_require(c.steps >= 0, f, "steps", "must be >= 0");
    train_require((c.steps > 0) != (c.token_budget > 0), f, "steps",
                  "exactly one of training.steps and training.token_budget must be > 0");
    train_require(c.init_std > 0.0f, f, "init_std", "must be > 0");
    train_require(c.aux_loss_coef >= 0.0f, f, "aux_loss_coef", "must be >= 0");
    train_require(c.grad_clip >= 0.0f, f, "grad_clip", "must be >= 0 (0 = off)");
    train_require(c.log_interval >= 1, f, "log_interval", "must be >= 1");
    f.finish(true);
    if (c.steps == 0)
      c.steps =
          std::max<int64_t>(1, (c.token_budget + c.tokens_per_step() - 1) / c.tokens_per_step());
  }
  {
    io::JsonFields f(top.get_object("optimizer"), "optimizer", source);
    c.lr.max_lr = f.get_float("lr");
    c.lr.min_lr = f.get_float("min_lr");
    c.lr.warmup_steps = f.get_int("warmup_steps");
    const std::string decay = f.get_string("decay");
    c.adamw.beta1 = f.get_float("beta1");
    c.adamw.beta2 = f.get_float("beta2");
    c.adamw.eps = f.get_float("eps");
    c.adamw.weight_decay = f.get_float("weight_decay");
    train_require(c.lr.max_lr > 0, f, "lr", "must be > 0");
    train_require(c.lr.min_lr >= 0 && c.lr.min_lr <= c.lr.max_lr, f, "min_lr",
                  "must be in [0, optimizer.lr]");
    train_require(c.lr.warmup_steps >= 0 && c.lr.warmup_steps < c.steps, f, "warmup_steps",
                  "must be in [0, steps)");
    if (decay == "cosine")
      c.lr.decay = DecayKind::kCosine;
    else if (decay == "linear")
      c.lr.decay = DecayKind::kLinear;
    else
      f.fail("decay", "is '" + decay + "'; expected cosine or linear");
    train_require(c.adamw.beta1 >= 0 && c.adamw.beta1 < 1, f, "beta1", "must be in [0, 1)");
    train_require(c.adamw.beta2 >= 0 && c.adamw.beta2 < 1, f, "beta2", "must be in [0, 1)");
    train_require(c.adamw.eps > 0, f, "eps", "must be > 0");
    train_require(c.adamw.weight_decay >= 0, f, "weight_decay", "must be >= 0");
    f.finish(true);
    c.lr.total_steps = c.steps;
  }
  {
    io::JsonFields f(top.get_object("eval"), "eval", source);
    c.eval_interval = f.get_int("interval");
    c.eval_batches = f.get_int("batches");
    train_require(c.eval_interval >= 0, f, "interval", "must be >= 0 (0 = only at the end)");
    train_require(c.eval_batches >= 1, f, "batches", "must be >= 1");
    f.finish(true);
  }
  {
    io::JsonFields f(top.get_object("checkpoint"), "checkpoint", source);
    c.checkpoint_dir = f.get_string("dir");
    c.checkpoint_interval = f.get_int("interval");
    c.keep_last = f.get_int("keep_last");
    c.export_dir = f.get_string("export");
    const std::string experts = f.get_string("export_experts");
    if (experts == "mxfp4")
      c.export_mxfp4 = true;
    else if (experts != "bf16")
      f.fail("export_experts", "is '" + experts + "'; expected bf16 or mxfp4");
    // MXFP4 packs 32 values per block along each expert row (hidden_size for mlp1,
    // intermediate_size for mlp2): catch a shape that cannot be exported before hours of training.
    if (c.export_mxfp4)
      train_require(
          c.model.hidden_size % 32 == 0 && c.model.intermediate_size % 32 == 0, f, "export_experts",
          "is mxfp4, which needs model.hidden_size (" + std::to_string(c.model.hidden_size) +
              ") and model.intermediate_size (" + std::to_string(c.model.intermediate_size) +
              ") to be multiples of 32 (the MXFP4 block); use bf16");
    train_require(!c.checkpoint_dir.empty(), f, "dir", "must not be empty");
    train_require(c.checkpoint_interval >= 1, f, "interval", "must be >= 1");
    train_require(c.keep_last >= 1, f, "keep_last", "must be >= 1");
    f.finish(true);
  }
  {
    io::JsonFields f(top.get_object("execution"), "execution", source);
    c.execution.backend = parse_backend(f.get_string("backend"), source + ": execution.backend");
    c.execution.dtype = parse_activation_dtype(f.get_string("dtype"), source + ": execution.dtype");
    c.execution.device = parse_device(f.get_string("device"), source + ": execution.device");
    c.execution.threads = f.get_int("threads");
    train_require(c.execution.threads >= 0, f, "threads", "must be >= 0 (0 = all cores)");
    // The backend runs the step; device must agree with it (auto follows the backend). Whether a
    // GPU is there is checked when training starts (check_train_backend), not when parsing.
    if (c.execution.backend == Backend::kCuda) {
      train_require(c.execution.device != Device::kCpu, f, "device",
                    "is cpu but execution.backend is cuda; use cuda or auto");
      train_require(c.execution.dtype != ActivationDType::kFloat16, f, "dtype",
                    "float16 is not a training dtype; use bfloat16 (mixed precision with fp32 "
                    "master weights) or float32");
    } else {
      train_require(c.execution.device != Device::kCuda, f, "device",
                    "is cuda but execution.backend is cpu; set backend: cuda to train on the GPU");
      train_require(c.execution.dtype == ActivationDType::kFloat32, f, "dtype",
                    "CPU training computes in float32 (bfloat16 is for backend: cuda)");
    }
    f.finish(true);
  }
  top.finish(true);
  return c;
}

TrainConfig load_train_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MIND4_CHECK(in, Status::kIoError, "cannot read the training config ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_train_config(ss.str(), path);
}

}  // namespace mind4::train
