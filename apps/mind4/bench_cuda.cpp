// `mind4 bench --backend cuda`: the CUDA line's prefill, decode at batch 1 and batched decode,
// each the median of --runs timed runs after warm-up (the first decode step of a batch shape runs
// eagerly, the second captures its CUDA graph), printed as tokens/s and as a fraction of the
// ceilings measured in the same process: decode against copy bandwidth (bytes of weights + KV
// read per step), prefill against bf16 matrix throughput (FLOPs per token).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "bench_cuda.h"
#include "mind4/model.h"
#include "mind4/sampler.h"
#include "mind4/status.h"
#ifdef MIND4_HAVE_CUDA
#include "cuda/ceilings.h"
#endif

namespace mind4_bench_cuda {

#ifdef MIND4_HAVE_CUDA

double bench_seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<int> bench_tokens(int n, int vocab, uint64_t salt) {
  std::vector<int> t(n);
  for (int i = 0; i < n; ++i) t[i] = int((uint64_t(i + salt) * 2654435761u + 17) % vocab);
  return t;
}

// Keys each position attends to, summed over layers, for a token at position pos.
int64_t visible_keys(const mind4::ModelConfig& c, int pos) {
  int64_t keys = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l)
    keys += c.sliding_window > 0 && l % 2 == 0 ? std::min(pos + 1, c.sliding_window) : pos + 1;
  return keys;
}

// Matrix FLOPs of one token in prefill (the unembedding only for the last token of the prompt).
double prefill_flops_per_token(const mind4::ModelConfig& c, int prompt) {
  const double H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
               NKV = c.num_key_value_heads, E = c.num_experts, K = c.experts_per_token,
               I = c.intermediate_size;
  const double per_layer = 2 * ((NH + 2 * NKV) * D * H + H * NH * D + E * H + K * 3 * I * H);
  double attn = 0;
  for (int p = 0; p < prompt; ++p) attn += 4.0 * NH * D * double(visible_keys(c, p));
  return per_layer * c.num_hidden_layers + attn / prompt + 2.0 * c.vocab_size * H / prompt;
}

void run(const CudaBenchArgs& o) {
  MIND4_CHECK(o.runs > 0 && o.prefill_tokens > 0 && o.decode_tokens > 0 && o.decode_context > 0,
              mind4::Status::kInvalidArgument, "bench: counts must be positive");
  mind4::Config config;
  config.paths.checkpoint = o.checkpoint;
  config.execution.backend = mind4::Backend::kCuda;
  config.execution.dtype = mind4::parse_activation_dtype(o.dtype, "--dtype");
  auto t_load = std::chrono::steady_clock::now();
  auto model = mind4::Model::load(config);
  const double load_s = bench_seconds_since(t_load);
  const mind4::ModelConfig& c = model->config();
  const mind4::cuda::Ceilings ceil = mind4::cuda::measure_ceilings();
  const int act_bytes = o.dtype == "float32" ? 4 : 2;
  nlohmann::json j = {{"checkpoint", o.checkpoint},
                      {"device", ceil.device},
                      {"dtype", o.dtype},
                      {"load_seconds", load_s},
                      {"copy_gb_per_second", ceil.copy_gb_per_s},
                      {"bf16_tflops", ceil.bf16_tflops},
                      {"runs", o.runs}};

  // Prefill: one sequence of prefill_tokens in one step.
  {
    const int P = o.prefill_tokens;
    mind4::Context ctx(model, {.context_length = P, .max_sequences = 1, .max_batch_tokens = P});
    const auto prompt = bench_tokens(P, c.vocab_size, 1);
    std::vector<double> times;
    for (int r = 0; r <= o.runs; ++r) {  // run 0 is the warm-up
      const int s = ctx.new_sequence();
      auto t0 = std::chrono::steady_clock::now();
      ctx.append(s, prompt);
      ctx.process();
      if (r > 0) times.push_back(bench_seconds_since(t0));
      ctx.release(s);
    }
    const double t = median(times), tps = P / t;
    const double flops = prefill_flops_per_token(c, P);
    j["prefill"] = {{"tokens", P},
                    {"seconds", t},
                    {"tokens_per_second", tps},
                    {"flops_per_token", flops},
                    {"fraction_of_matrix_throughput", tps * flops / (ceil.bf16_tflops * 1e12)}};
  }

  // Decode: b sequences with decode_context tokens each, then decode_tokens steps of b rows.
  std::vector<int> sizes = {1};
  sizes.insert(sizes.end(), o.batch_sizes.begin(), o.batch_sizes.end());
  for (int b : sizes) {
    const int warm = 3, ctx_len = o.decode_context + warm + o.runs * o.decode_tokens;
    // The logits stay on the GPU, as generate, chat and the server run (they sample there):
    // copying b x vocab floats to the host each step took 45% of a 64-sequence step.
    mind4::Context ctx(model, {.context_length = ctx_len,
                               .max_sequences = b,
                               .max_batch_tokens = std::max(o.decode_context, b),
                               .host_logits = false});
    std::vector<int> seqs;
    for (int i = 0; i < b; ++i) {
      seqs.push_back(ctx.new_sequence());
      ctx.append(seqs.back(), bench_tokens(o.decode_context, c.vocab_size, 7 * i + 3));
      ctx.process();
    }
    int step_no = 0;
    auto step = [&] {
      for (int i = 0; i < b; ++i) {
        // Fixed tokens, not argmax: the figure is the forward step's, not a host-side search.
        const int next = int((uint64_t(step_no) * 40503u + i * 977u) % c.vocab_size);
        ctx.append(seqs[i], std::span<const int>(&next, 1));
      }
      ctx.process();
      ++step_no;
    };
    for (int w = 0; w < warm; ++w) step();
    std::vector<double> times;
    int64_t kv_bytes = 0;
    for (int r = 0; r < o.runs; ++r) {
      kv_bytes = 0;
      // process() returns once a step is queued (the logits stay on the GPU), so the host
      // prepares each step while the one before runs; the run ends when the GPU is done.
      ctx.synchronize();
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < o.decode_tokens; ++i) {
        kv_bytes += visible_keys(c, ctx.processed(seqs[0])) * 2 * c.num_key_value_heads *
                    c.head_dim * act_bytes;
        step();
      }
      ctx.synchronize();
      times.push_back(bench_seconds_since(t0));
    }
    const double t = median(times), tps = double(b) * o.decode_tokens / t;
    nlohmann::json d = {
        {"batch", b}, {"seconds", t}, {"tokens_per_second", tps}, {"steps", o.decode_tokens}};
    if (b == 1) {
      const double bytes =
          double(model->decode_weight_bytes()) + double(kv_bytes) / o.decode_tokens;
      const double gbps = bytes * tps / 1e9;
      d["bytes_per_token"] = bytes;
      d["achieved_gb_per_second"] = gbps;
      d["fraction_of_bandwidth"] = gbps / ceil.copy_gb_per_s;
      d["bound_tokens_per_second"] = ceil.copy_gb_per_s * 1e9 / bytes;
    }
    j["decode"].push_back(d);
  }

  // Decode that samples its tokens: the host sampler over downloaded logits (one Sampler per
  // sequence) against draws on the GPU into the next step (Context::append_sampled).
  if (o.sampling) {
    mind4::SamplingConfig sc;
    sc.temperature = 1.0f;
    sc.top_p = 0.9f;
    for (int b : sizes) {
      for (const bool gpu : {false, true}) {
        const int warm = 3, ctx_len = o.decode_context + warm + o.runs * o.decode_tokens;
        mind4::Context ctx(model, {.context_length = ctx_len,
                                   .max_sequences = b,
                                   .max_batch_tokens = std::max(o.decode_context, b),
                                   .host_logits = !gpu});
        std::vector<int> seqs;
        std::vector<mind4::Sampler> samplers;
        std::vector<mind4::SampleRequest> req;
        for (int i = 0; i < b; ++i) {
          seqs.push_back(ctx.new_sequence());
          ctx.append(seqs.back(), bench_tokens(o.decode_context, c.vocab_size, 7 * i + 3));
          ctx.process();
          samplers.emplace_back(sc);
          req.push_back({seqs.back(), uint64_t(i), 0});
        }
        std::vector<mind4::SampledToken> got(b);
        auto step = [&] {
          if (gpu) {
            // As generate runs: each token drawn on the GPU into its own step, which is queued
            // before the host learns the token.
            ctx.append_sampled(req, sc, mind4::LogprobMode::kSampling);
            ctx.process();
            for (int i = 0; i < b; ++i) got[i] = ctx.drawn(seqs[i]);
            for (auto& r : req) ++r.step;
          } else {
            for (int i = 0; i < b; ++i) got[i].token = samplers[i].sample(ctx.logits(seqs[i]), {});
            for (int i = 0; i < b; ++i) ctx.append(seqs[i], std::span<const int>(&got[i].token, 1));
            ctx.process();
          }
        };
        for (int w = 0; w < warm; ++w) step();
        std::vector<double> times;
        for (int r = 0; r < o.runs; ++r) {
          ctx.synchronize();
          auto t0 = std::chrono::steady_clock::now();
          for (int i = 0; i < o.decode_tokens; ++i) step();
          ctx.synchronize();
          times.push_back(bench_seconds_since(t0));
        }
        const double t = median(times);
        j["decode_sampling"].push_back({{"batch", b},
                                        {"sampler", gpu ? "gpu" : "host"},
                                        {"seconds", t},
                                        {"tokens_per_second", double(b) * o.decode_tokens / t}});
      }
    }
  }

  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("checkpoint   %s (loaded and uploaded in %.1f s)\n", o.checkpoint.c_str(), load_s);
  std::printf(
      "device       %s, activations %s; ceilings measured now: copy %.0f GB/s, bf16 "
      "GEMM %.0f TFLOP/s\n",
      ceil.device.c_str(), o.dtype.c_str(), ceil.copy_gb_per_s, ceil.bf16_tflops);
  const auto& p = j["prefill"];
  std::printf(
      "prefill      %d tokens: %.0f tok/s (median of %d), %.1f%% of matrix throughput "
      "(%.2f GFLOP/token)\n",
      int(p["tokens"]), double(p["tokens_per_second"]), o.runs,
      100 * double(p["fraction_of_matrix_throughput"]), double(p["flops_per_token"]) / 1e9);
  for (const auto& d : j["decode"]) {
    if (int(d["batch"]) == 1)
      std::printf(
          "decode b=1   at %d context: %.1f tok/s (median of %d x %d steps), %.2f GB/token, "
          "%.0f GB/s = %.1f%% of bandwidth; bound %.0f tok/s\n",
          o.decode_context, double(d["tokens_per_second"]), o.runs, o.decode_tokens,
          double(d["bytes_per_token"]) / 1e9, double(d["achieved_gb_per_second"]),
          100 * double(d["fraction_of_bandwidth"]), double(d["bound_tokens_per_second"]));
    else
      std::printf("decode b=%-3d at %d context: %.1f tok/s (median of %d x %d steps)\n",
                  int(d["batch"]), o.decode_context, double(d["tokens_per_second"]), o.runs,
                  o.decode_tokens);
  }
  if (j.contains("decode_sampling"))
    for (const auto& d : j["decode_sampling"])
      std::printf(
          "decode b=%-3d at %d context, sampling T=1 top-p 0.9 on the %s: %.1f tok/s (median of "
          "%d x %d steps)\n",
          int(d["batch"]), o.decode_context, std::string(d["sampler"]).c_str(),
          double(d["tokens_per_second"]), o.runs, o.decode_tokens);
}

#else

void run(const CudaBenchArgs&) {
  throw mind4::Error(mind4::Status::kUnsupported,
                     "bench --backend cuda: the CUDA line is not compiled into this build of mind4 "
                     "(nvcc was not found when it was configured)");
}

#endif

}  // namespace mind4_bench_cuda
