// `mind4 train config/train.yaml`: trains a gpt-oss model on the CPU or a CUDA GPU from shards
// (see src/train/trainer.h), resuming from the checkpoint directory's latest checkpoint.
#include <cstdio>

#include "command.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace {

struct TrainCmdOptions {
  std::string config = "config/train.yaml";
  bool fresh = false;
  int64_t stop_after = 0;
  int threads = -1;
  int step_pause_ms = 0;
};

void train_cmd_run(const TrainCmdOptions& o) {
  mind4::train::TrainConfig cfg = mind4::train::load_train_config(o.config);
  if (o.threads >= 0) cfg.execution.threads = o.threads;
  mind4::train::TrainRunOptions run;
  run.resume = !o.fresh;
  run.stop_after = o.stop_after;
  run.step_pause_ms = o.step_pause_ms;
  const auto r = mind4::train::run_training(cfg, run);
  std::printf(
      "trained %lld steps in %.1f s: %.0f tok/s, MFU %.1f%%, train loss %.4f, val loss "
      "%.4f\ncheckpoints, metrics.jsonl and loss.svg in %s\n",
      (long long)r.steps, r.seconds, r.tokens_per_s, 100 * r.mfu, r.train_loss, r.val_loss,
      cfg.checkpoint_dir.c_str());
}

void setup_train(CLI::App& app) {
  auto o = std::make_shared<TrainCmdOptions>();
  app.add_option("config", o->config, "Training config (YAML; every field required)")
      ->capture_default_str();
  app.add_flag("--fresh", o->fresh,
               "Start from step 0 even when checkpoint.dir holds a checkpoint (default: resume)");
  app.add_option("--stop-after", o->stop_after,
                 "Stop after this step (checkpointed), as if interrupted; 0 = run to the end")
      ->capture_default_str();
  app.add_option("--threads", o->threads, "Override execution.threads (-1 = as configured)")
      ->capture_default_str();
  app.add_option("--step-pause-ms", o->step_pause_ms,
                 "Sleep after each step (for tests that interrupt a run)")
      ->capture_default_str();
  app.callback([o] { train_cmd_run(*o); });
}

mind4::cli::Command register_train{"train", "Train a model from a train.yaml (CPU or CUDA)",
                                   setup_train};

}  // namespace
