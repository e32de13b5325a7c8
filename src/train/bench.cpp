#include "train/bench.h"

#include <algorithm>
#include <chrono>

#include "core/thread_pool.h"
#include "mind4/status.h"
#include "train/engine.h"
#include "train/params.h"
#include "train/trainer.h"

namespace mind4::train {

TrainBenchResult bench_training(const TrainConfig& cfg, int warmup, int steps) {
  MIND4_CHECK(warmup >= 0 && steps >= 1, Status::kInvalidArgument, "bench-train: warmup = ", warmup,
              ", steps = ", steps, " (steps must be >= 1)");
  check_train_backend(cfg);
  ThreadPool pool(cfg.execution.threads);
  const ParamLayout layout = make_param_layout(cfg.model);
  std::vector<float> params(size_t(layout.total)), zeros(size_t(layout.total), 0.0f);
  init_params(layout, cfg.seed, cfg.init_std, params.data());
  std::unique_ptr<TrainEngine> engine = make_train_engine(cfg, layout, pool);
  engine->write_state(params.data(), zeros.data(), zeros.data(), 0);
  params = {};
  zeros = {};

  const int rows = cfg.micro_batch * cfg.seq_len;
  std::vector<int> tokens(size_t(rows) + 1, 0), inputs(size_t(rows), 0), targets(size_t(rows), 0);
  TrainRng rng(cfg.seed + 12345);
  TrainBenchResult r;
  r.engine = engine->describe();
  for (int s = 0; s < warmup + steps; ++s) {
    engine->synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    engine->zero_grads();
    double loss = 0.0;
    for (int a = 0; a < cfg.grad_accum; ++a) {
      for (auto& t : tokens) t = int(rng.next_u64() % uint64_t(cfg.model.vocab_size));
      std::copy_n(tokens.begin(), rows, inputs.begin());
      std::copy_n(tokens.begin() + 1, rows, targets.begin());
      loss += engine->accumulate(inputs.data(), targets.data(), 1.0f / float(cfg.grad_accum)).ce /
              cfg.grad_accum;
    }
    engine->clip_and_update(cfg.grad_clip, cfg.lr.at(std::min<int64_t>(s, cfg.steps - 1)));
    engine->synchronize();
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s == 0) r.first_loss = loss;
    r.last_loss = loss;
    if (s >= warmup) r.step_seconds.push_back(el);
  }
  std::vector<double> sorted = r.step_seconds;
  std::sort(sorted.begin(), sorted.end());
  r.median_seconds = sorted[sorted.size() / 2];
  r.tokens_per_s = double(cfg.tokens_per_step()) / r.median_seconds;
  r.flops_per_token = train_flops_per_token(cfg, layout.active_matmul_params());
  r.peak_flops = engine->peak_flops();
  r.mfu = r.tokens_per_s * r.flops_per_token / r.peak_flops;
  const ModelConfig& m = cfg.model;
  r.flops_per_token_6n = train_flops_per_token(
      cfg, layout.active_matmul_params() + int64_t(m.vocab_size) * m.hidden_size, false);
  r.mfu_6n = r.tokens_per_s * r.flops_per_token_6n / r.peak_flops;
  return r;
}

}  // namespace mind4::train
