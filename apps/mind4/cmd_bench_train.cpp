// `mind4 bench-train`: training throughput (tok/s, MFU against the engine's measured matrix peak)
// on synthetic tokens. The defaults are issue 5's benchmark model (296M parameters, 126M active),
// which scripts/bench_train_torch.py also trains with PyTorch for the comparison in
// docs/perf-notes.md.
#include <cstdio>

#include "command.h"
#include "mind4/config.h"
#include "mind4/status.h"
#include "train/bench.h"
#include "train/train_config.h"

namespace {

struct BenchTrainOptions {
  std::string config;  // a train.yaml whose model and batch are used instead of the flags
  std::string backend = "cuda", dtype = "bfloat16";
  int layers = 12, hidden = 768, heads = 12, kv_heads = 4, head_dim = 64, experts = 8, top_k = 2;
  int intermediate = 1024, vocab = 32768, window = 128, batch = 16, seq = 1024, grad_accum = 1;
  int warmup = 3, steps = 10, threads = 0;
};

mind4::train::TrainConfig bench_train_config(const BenchTrainOptions& o) {
  using namespace mind4;
  train::TrainConfig c;
  if (!o.config.empty()) {
    c = train::load_train_config(o.config);
  } else {
    ModelConfig& m = c.model;
    m.num_hidden_layers = o.layers, m.hidden_size = o.hidden, m.num_attention_heads = o.heads;
    m.num_key_value_heads = o.kv_heads, m.head_dim = o.head_dim, m.num_experts = o.experts;
    m.experts_per_token = o.top_k, m.intermediate_size = o.intermediate, m.vocab_size = o.vocab;
    m.sliding_window = o.window, m.initial_context_length = o.seq;
    m.max_context_length = o.seq, m.rope_theta = 10000.0f, m.rope_scaling_factor = 1.0f;
    validate_model_config(m, "bench-train");
    c.seq_len = o.seq, c.micro_batch = o.batch, c.grad_accum = o.grad_accum;
    c.lr.max_lr = 3e-4, c.lr.min_lr = 3e-5, c.lr.warmup_steps = 0;
    c.source = "bench-train";
  }
  c.steps = c.lr.total_steps = o.warmup + o.steps;
  c.execution.backend = parse_backend(o.backend, "bench-train --backend");
  c.execution.dtype = parse_activation_dtype(o.dtype, "bench-train --dtype");
  if (c.execution.backend == Backend::kCpu && c.execution.dtype != ActivationDType::kFloat32)
    throw Error(Status::kInvalidArgument,
                "bench-train: --dtype " + o.dtype +
                    " needs --backend cuda (CPU training computes in float32)");
  c.execution.device = c.execution.backend == Backend::kCuda ? Device::kCuda : Device::kCpu;
  c.execution.threads = o.threads;
  return c;
}

void bench_train_run(const BenchTrainOptions& o) {
  const mind4::train::TrainConfig c = bench_train_config(o);
  const auto r = mind4::train::bench_training(c, o.warmup, o.steps);
  std::printf("engine: %s\n", r.engine.c_str());
  std::printf(
      "model: %d layers, hidden %d, %d/%d heads of %d, %d experts top-%d, intermediate %d, vocab "
      "%d, window %d; batch %d x %d tokens, grad_accum %d\n",
      c.model.num_hidden_layers, c.model.hidden_size, c.model.num_attention_heads,
      c.model.num_key_value_heads, c.model.head_dim, c.model.num_experts, c.model.experts_per_token,
      c.model.intermediate_size, c.model.vocab_size, c.model.sliding_window, c.micro_batch,
      c.seq_len, c.grad_accum);
  std::printf("step times (s):");
  for (double s : r.step_seconds) std::printf(" %.4f", s);
  std::printf("\nloss %.4f -> %.4f\n", r.first_loss, r.last_loss);
  std::printf(
      "median of %zu steps: %.4f s, %.0f tok/s, %.3g GFLOP/token, peak %.1f TFLOP/s, MFU %.1f%%\n",
      r.step_seconds.size(), r.median_seconds, r.tokens_per_s, r.flops_per_token / 1e9,
      r.peak_flops / 1e12, 100 * r.mfu);
  std::printf(
      "MFU %.1f%% by the plain 6N count (%.3g GFLOP/token: the embedding table counted as a "
      "product, attention without the window)\n",
      100 * r.mfu_6n, r.flops_per_token_6n / 1e9);
}

void setup_bench_train(CLI::App& app) {
  auto o = std::make_shared<BenchTrainOptions>();
  app.add_option("--config", o->config,
                 "A train.yaml whose model, batch and optimizer are used instead of the shape "
                 "flags below");
  app.add_option("--backend", o->backend, "cpu | cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--dtype", o->dtype, "float32 | bfloat16 (bfloat16 on CUDA only)")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  app.add_option("--layers", o->layers, "Blocks")->capture_default_str();
  app.add_option("--hidden", o->hidden, "Hidden size")->capture_default_str();
  app.add_option("--heads", o->heads, "Query heads")->capture_default_str();
  app.add_option("--kv-heads", o->kv_heads, "Key/value heads")->capture_default_str();
  app.add_option("--head-dim", o->head_dim, "Head dimension")->capture_default_str();
  app.add_option("--experts", o->experts, "Experts")->capture_default_str();
  app.add_option("--top-k", o->top_k, "Experts per token")->capture_default_str();
  app.add_option("--intermediate", o->intermediate, "Expert intermediate size")
      ->capture_default_str();
  app.add_option("--vocab", o->vocab, "Vocabulary size")->capture_default_str();
  app.add_option("--window", o->window, "Sliding window of even blocks (0 = none)")
      ->capture_default_str();
  app.add_option("--batch", o->batch, "Sequences per micro-batch")->capture_default_str();
  app.add_option("--seq", o->seq, "Tokens per sequence")->capture_default_str();
  app.add_option("--grad-accum", o->grad_accum, "Micro-batches per step")->capture_default_str();
  app.add_option("--warmup", o->warmup, "Untimed steps first")->capture_default_str();
  app.add_option("--steps", o->steps, "Timed steps (the median is reported)")
      ->capture_default_str();
  app.add_option("--threads", o->threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.callback([o] { bench_train_run(*o); });
}

mind4::cli::Command register_bench_train{
    "bench-train", "Training throughput on synthetic tokens (tok/s, MFU)", setup_bench_train};

}  // namespace
