// `mind4 bench`: prefill and decode speed of a checkpoint beside the physical bound, on the CPU
// reference line or (--backend cuda) the CUDA line. Decode is memory-bound: each token reads every
// dense weight, the k active experts of each layer, the unembedding and the KV cache, so its
// ceiling is measured bandwidth / bytes per token. Prefill is compute-bound: its ceiling is the
// measured matrix throughput over the FLOPs per token. Ceilings are measured here, in this process.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "bench_cuda.h"
#include "command.h"
#include "core/thread_pool.h"
#include "cpu/isa.h"
#include "cpu/membw.h"
#include "mind4/model.h"
#include "mind4/status.h"

namespace {

struct BenchOptions {
  std::string checkpoint;
  int prompt_tokens = 128, decode_tokens = 32, threads = 0;
  bool json = false;
  std::string backend = "cpu", dtype = "bfloat16";
  // CUDA line only: prefill length, decode context, batched decode sizes, timed runs per figure.
  int prefill_tokens = 2048, decode_context = 128, runs = 5;
  std::vector<int> batch_sizes = {16, 64};
  bool sampling = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// KV bytes one decode step at position pos reads: keys and values of every visible position.
int64_t kv_bytes_at(const mind4::ModelConfig& c, int pos) {
  int64_t visible = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const bool windowed = c.sliding_window > 0 && l % 2 == 0;
    visible += windowed ? std::min(pos + 1, c.sliding_window) : pos + 1;
  }
  return visible * 2 * c.num_key_value_heads * c.head_dim * int64_t(sizeof(float));
}

void run_cuda_bench(const BenchOptions& o) {
  mind4_bench_cuda::run({o.checkpoint, o.dtype, o.prefill_tokens, o.decode_context, o.decode_tokens,
                         o.runs, o.batch_sizes, o.json, o.sampling});
}

void run_bench(const BenchOptions& o) {
  if (o.backend == "cuda") return run_cuda_bench(o);
  MIND4_CHECK(o.prompt_tokens > 0 && o.decode_tokens > 0, mind4::Status::kInvalidArgument,
              "bench: --prompt-tokens and --decode-tokens must be positive");
  mind4::Config config;
  config.paths.checkpoint = o.checkpoint;
  auto t_load = std::chrono::steady_clock::now();
  auto model = mind4::Model::load(config);
  const double load_s = seconds_since(t_load);
  const mind4::ModelConfig& c = model->config();

  double bandwidth = 0;
  {
    mind4::ThreadPool pool(o.threads);
    bandwidth = mind4::cpu::measure_read_bandwidth(pool);
  }

  const int total = o.prompt_tokens + o.decode_tokens;
  mind4::Context ctx(model, {.context_length = total,
                             .max_sequences = 1,
                             .max_batch_tokens = o.prompt_tokens,
                             .threads = o.threads});
  std::vector<int> prompt(o.prompt_tokens);
  for (int i = 0; i < o.prompt_tokens; ++i)
    prompt[i] = int((uint64_t(i) * 2654435761u + 17) % c.vocab_size);
  const int seq = ctx.new_sequence();

  // Prefill. The first pass over the weights also brings them from disk into the page cache,
  // so a cold file makes this number a disk number; run twice to see the warm one.
  auto t0 = std::chrono::steady_clock::now();
  ctx.append(seq, prompt);
  ctx.process();
  const double prefill_s = seconds_since(t0);

  // Decode, greedy.
  int64_t kv_bytes = 0;
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < o.decode_tokens; ++i) {
    auto logits = ctx.logits(seq);
    const int next = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
    kv_bytes += kv_bytes_at(c, ctx.processed(seq));
    ctx.append(seq, std::span<const int>(&next, 1));
    ctx.process();
  }
  const double decode_s = seconds_since(t0);

  const double prefill_tps = o.prompt_tokens / prefill_s, decode_tps = o.decode_tokens / decode_s;
  const double weight_bytes = double(model->decode_weight_bytes());
  const double bytes_per_token = weight_bytes + double(kv_bytes) / o.decode_tokens;
  const double achieved = bytes_per_token * decode_tps / 1e9;
  const double bound_tps = bandwidth * 1e9 / bytes_per_token;
  const std::string isa(mind4::cpu::isa_name(mind4::cpu::active_isa()));

  if (o.json) {
    nlohmann::json j = {{"checkpoint", o.checkpoint},
                        {"threads", ctx.threads()},
                        {"isa", isa},
                        {"load_seconds", load_s},
                        {"prompt_tokens", o.prompt_tokens},
                        {"decode_tokens", o.decode_tokens},
                        {"prefill_tokens_per_second", prefill_tps},
                        {"decode_tokens_per_second", decode_tps},
                        {"decode_bytes_per_token", bytes_per_token},
                        {"decode_weight_bytes_per_token", weight_bytes},
                        {"decode_achieved_gb_per_second", achieved},
                        {"measured_read_bandwidth_gb_per_second", bandwidth},
                        {"decode_fraction_of_bandwidth", achieved / bandwidth},
                        {"decode_bound_tokens_per_second", bound_tps}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("checkpoint   %s (loaded in %.2f s)\n", o.checkpoint.c_str(), load_s);
  std::printf("threads      %d, cpu path %s\n", ctx.threads(), isa.c_str());
  std::printf("prefill      %d tokens in %.3f s: %.1f tok/s\n", o.prompt_tokens, prefill_s,
              prefill_tps);
  std::printf("decode       %d tokens in %.3f s: %.2f tok/s\n", o.decode_tokens, decode_s,
              decode_tps);
  std::printf(
      "bytes/token  %.3f GB (weights %.3f GB: dense + %d of %d experts per layer + "
      "unembedding; KV %.1f MB)\n",
      bytes_per_token / 1e9, weight_bytes / 1e9, c.experts_per_token, c.num_experts,
      (bytes_per_token - weight_bytes) / 1e6);
  std::printf(
      "decode reads %.2f GB/s of %.2f GB/s measured read bandwidth (%.0f%%); bound "
      "%.2f tok/s\n",
      achieved, bandwidth, 100 * achieved / bandwidth, bound_tps);
}

void setup_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  app.add_option("--checkpoint", o->checkpoint, "Checkpoint directory or .safetensors file")
      ->required();
  app.add_option("--prompt-tokens", o->prompt_tokens, "Prompt length (one prefill step)");
  app.add_option("--decode-tokens", o->decode_tokens, "Greedy tokens decoded after the prompt");
  app.add_option("--threads", o->threads, "Worker threads (0 = all cores)");
  app.add_flag("--json", o->json, "Print the results as JSON");
  app.add_option("--backend", o->backend, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", o->dtype, "CUDA activations: bfloat16 | float32")
      ->check(CLI::IsMember({"bfloat16", "float32"}));
  app.add_option("--prefill-tokens", o->prefill_tokens, "CUDA: prompt length of the prefill run");
  app.add_option("--decode-context", o->decode_context, "CUDA: tokens in context before decoding");
  app.add_option("--batch-sizes", o->batch_sizes, "CUDA: batched decode sizes (sequences)")
      ->delimiter(',');
  app.add_option("--runs", o->runs, "CUDA: timed runs per figure (the median is printed)");
  app.add_flag("--sampling", o->sampling,
               "CUDA: also time decode that samples each token (temperature 1, top-p 0.9; one "
               "sequence and each --batch-sizes) with the host sampler and on the GPU, each "
               "token drawn into its own step as generate runs");
  app.callback([o] { run_bench(*o); });
}

mind4::cli::Command register_bench{"bench", "Prefill/decode speed vs the memory-bandwidth bound",
                                   setup_bench};

}  // namespace
