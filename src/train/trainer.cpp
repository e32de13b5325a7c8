#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/thread_pool.h"
#include "io/model_config.h"
#include "mind4/status.h"
#include "mind4/tokenizer.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/engine.h"
#include "train/gemm.h"
#include "train/model.h"
#include "train/optimizer.h"
#include "train/params.h"

namespace mind4::train {
namespace fs = std::filesystem;

namespace {

using trainer_clock = std::chrono::steady_clock;

double trainer_seconds_since(trainer_clock::time_point t0) {
  return std::chrono::duration<double>(trainer_clock::now() - t0).count();
}

std::string trainer_fingerprint(const TrainConfig& c) {
  std::ostringstream os;
  os << model_config_json(c.model, CheckpointLayout::kOriginal, false) << "|seq=" << c.seq_len
     << "|micro_batch=" << c.micro_batch << "|grad_accum=" << c.grad_accum << "|seed=" << c.seed;
  return os.str();
}

// Keeps the metrics lines of steps <= `step` (a resumed run rewrites what came after).
void trainer_truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) <= step) kept += line + "\n";
    } catch (const std::exception&) {
      // A line cut by a kill mid-write: drop it.
    }
  }
  in.close();
  std::ofstream out(path + ".tmp", std::ios::trunc);
  out << kept;
  out.close();
  fs::rename(path + ".tmp", path);
}

std::string trainer_fmt(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

double train_flops_per_token(const TrainConfig& c, int64_t active_params, bool windowed_keys) {
  const ModelConfig& m = c.model;
  // Keys seen per query, averaged over positions 0..S-1, per layer kind.
  double keys = 0.0;
  for (int l = 0; l < m.num_hidden_layers; ++l) {
    const bool windowed = windowed_keys && layer_window(m, l) > 0;
    double sum = 0.0;
    for (int s = 0; s < c.seq_len; ++s) sum += windowed ? std::min(s + 1, m.sliding_window) : s + 1;
    keys += sum / c.seq_len;
  }
  // q.k and p.v: 4 D FLOPs per key per head forward, three times that with the backward.
  return 6.0 * double(active_params) + 12.0 * m.num_attention_heads * m.head_dim * keys;
}

std::string loss_curve_svg(const std::string& metrics_jsonl) {
  std::vector<std::pair<double, double>> train, val;
  std::istringstream in(metrics_jsonl);
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) train.push_back({j["step"].get<double>(), j["loss"].get<double>()});
      if (j.contains("val_loss"))
        val.push_back({j["step"].get<double>(), j["val_loss"].get<double>()});
    } catch (const std::exception&) {
    }
  }
  double x1 = 1, y0 = 1e30, y1 = -1e30;
  for (auto* s : {&train, &val})
    for (auto [x, y] : *s) {
      if (!std::isfinite(y)) continue;
      x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (y0 > y1) y0 = 0, y1 = 1;
  if (y1 - y0 < 1e-6) y1 = y0 + 1;
  const double W = 720, H = 420, L = 60, R = 20, T = 20, B = 40;
  auto px = [&](double x) { return L + (W - L - R) * x / x1; };
  auto py = [&](double y) { return T + (H - T - B) * (1 - (y - y0) / (y1 - y0)); };
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
     << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
        "fill=\"white\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double y = y0 + (y1 - y0) * i / 4;
    os << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << py(y) << "\" y2=\"" << py(y)
       << "\" stroke=\"#ddd\"/><text x=\"" << 4 << "\" y=\"" << py(y) + 4 << "\">"
       << trainer_fmt(std::round(y * 1000) / 1000) << "</text>\n";
  }
  os << "<text x=\"" << W / 2 << "\" y=\"" << H - 8 << "\">step (max " << x1 << ")</text>\n";
  auto poly = [&](const std::vector<std::pair<double, double>>& s, const char* color,
                  const char* name, int row) {
    if (s.empty()) return;
    os << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\"";
    for (auto [x, y] : s)
      if (std::isfinite(y)) os << px(x) << "," << py(y) << " ";
    os << "\"/>\n<text x=\"" << W - 160 << "\" y=\"" << T + 16 * row << "\" fill=\"" << color
       << "\">" << name << "</text>\n";
  };
  poly(train, "#1f77b4", "train loss", 1);
  poly(val, "#d62728", "validation loss", 2);
  os << "</svg>\n";
  return os.str();
}

TrainResult run_training(const TrainConfig& cfg, const TrainRunOptions& opts) {
  const auto t_start = trainer_clock::now();
  check_train_backend(cfg);  // a CUDA config without a GPU fails here, before any work
  // ---- data and vocabulary
  Tokenizer tok = Tokenizer::from_vocabulary_file(cfg.tokenizer);
  MIND4_CHECK(tok.vocab_size() == cfg.model.vocab_size, Status::kInvalidConfig, cfg.source,
              ": model.vocab_size is ", cfg.model.vocab_size, " but the tokenizer ", cfg.tokenizer,
              " has ", tok.vocab_size(), " ids; they must match");
  const TokenSplit train_data = read_token_split(cfg.data_dir, "train");
  const TokenSplit val_data = read_token_split(cfg.data_dir, "val");
  for (const TokenSplit* d : {&train_data, &val_data}) {
    const char* which = d == &train_data ? "train" : "val";
    MIND4_CHECK(int64_t(d->vocab_size) == cfg.model.vocab_size, Status::kInvalidConfig, "the ",
                which, " shards in ", cfg.data_dir, " were made with a vocabulary of ",
                d->vocab_size, " ids but model.vocab_size is ", cfg.model.vocab_size,
                " (re-run prepare-data with the configured tokenizer)");
    std::string files;
    for (const auto& f : d->files) files += (files.empty() ? "" : ", ") + f;
    MIND4_CHECK(int64_t(d->tokens.size()) > cfg.seq_len, Status::kInvalidArgument, "the ", which,
                " split (", files, ") has ", d->tokens.size(),
                " tokens: too small for one window, which needs training.seq_len + 1 = ",
                cfg.seq_len + 1, " (lower training.seq_len or prepare more text)");
  }

  // ---- model, optimizer, state
  ThreadPool pool(cfg.execution.threads);
  const ParamLayout layout = make_param_layout(cfg.model);
  // Host copies of the state: initial values, checkpoints and the export go through them.
  std::vector<float> params(size_t(layout.total)), adam_m(size_t(layout.total), 0.0f),
      adam_v(size_t(layout.total), 0.0f);
  init_params(layout, cfg.seed, cfg.init_std, params.data());
  BatchSampler sampler(train_data, cfg.seq_len, cfg.seed * 0x9E3779B97F4A7C15ull + 1);
  TrainState state;
  state.fingerprint = trainer_fingerprint(cfg);
  fs::create_directories(cfg.checkpoint_dir);
  const std::string metrics_path = cfg.checkpoint_dir + "/metrics.jsonl";
  const std::string latest = opts.resume ? latest_checkpoint(cfg.checkpoint_dir) : "";
  if (!latest.empty()) {
    const std::string fp = state.fingerprint;
    state = load_checkpoint_state(latest, layout, params.data(), adam_m.data(), adam_v.data());
    MIND4_CHECK(state.fingerprint == fp, Status::kInvalidConfig, latest,
                " was made with a different model shape, batch geometry or seed than ", cfg.source,
                "; use another checkpoint.dir to start afresh");
    sampler.set_state(state.sampler_state);
    trainer_truncate_metrics(metrics_path, state.step);
    std::fprintf(stderr, "resuming from %s (step %lld)\n", latest.c_str(), (long long)state.step);
  } else {
    std::ofstream(metrics_path, std::ios::trunc);
  }
  std::ofstream metrics(metrics_path, std::ios::app);
  MIND4_CHECK(metrics, Status::kIoError, "cannot write ", metrics_path);

  std::unique_ptr<TrainEngine> engine = make_train_engine(cfg, layout, pool);
  engine->write_state(params.data(), adam_m.data(), adam_v.data(), state.step);
  const int rows = cfg.micro_batch * cfg.seq_len;
  std::vector<int> inputs(static_cast<size_t>(rows)), targets(static_cast<size_t>(rows));
  const double peak = engine->peak_flops();
  const double flops_tok = train_flops_per_token(cfg, layout.active_matmul_params());
  std::fprintf(stderr,
               "model: %lld parameters (%lld active matmul); %lld tokens/step; %s; "
               "measured matmul peak %.1f GFLOP/s; %lld train / %lld val tokens\n",
               (long long)layout.total, (long long)layout.active_matmul_params(),
               (long long)cfg.tokens_per_step(), engine->describe().c_str(), peak / 1e9,
               (long long)train_data.tokens.size(), (long long)val_data.tokens.size());

  auto evaluate = [&]() {
    double sum = 0.0;
    const int windows = cfg.eval_batches * cfg.micro_batch;
    for (int b = 0; b < cfg.eval_batches; ++b) {
      for (int i = 0; i < cfg.micro_batch; ++i)
        eval_window(val_data, cfg.seq_len, b * cfg.micro_batch + i, windows,
                    inputs.data() + i * cfg.seq_len, targets.data() + i * cfg.seq_len);
      sum += engine->eval_loss(inputs.data(), targets.data());
    }
    return sum / cfg.eval_batches;
  };
  std::vector<std::string> extra = {cfg.tokenizer};
  if (fs::exists(cfg.tokenizer + ".json")) extra.push_back(cfg.tokenizer + ".json");
  auto checkpoint = [&]() {
    state.sampler_state = sampler.state();
    engine->read_state(params.data(), adam_m.data(), adam_v.data());
    save_checkpoint(cfg.checkpoint_dir, layout, params.data(), adam_m.data(), adam_v.data(), state,
                    cfg.keep_last, extra);
    metrics.flush();
    std::ifstream in(metrics_path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::ofstream(cfg.checkpoint_dir + "/loss.svg.tmp", std::ios::trunc)
        << loss_curve_svg(ss.str());
    fs::rename(cfg.checkpoint_dir + "/loss.svg.tmp", cfg.checkpoint_dir + "/loss.svg");
  };

  TrainResult result;
  auto window_start = trainer_clock::now();
  int64_t window_tokens = 0;
  const auto run_start = trainer_clock::now();
  int64_t run_tokens = 0;
  while (state.step < cfg.steps) {
    const int64_t step = state.step;  // 0-based index of this step
    engine->zero_grads();
    double ce = 0.0, aux = 0.0;
    for (int a = 0; a < cfg.grad_accum; ++a) {
      sampler.next(cfg.micro_batch, inputs.data(), targets.data());
      LossParts lp =
          engine->accumulate(inputs.data(), targets.data(), 1.0f / float(cfg.grad_accum));
      ce += lp.ce / cfg.grad_accum;
      aux += lp.aux / cfg.grad_accum;
    }
    const double loss = ce + cfg.aux_loss_coef * aux;
    if (!std::isfinite(loss)) {
      const std::string last = latest_checkpoint(cfg.checkpoint_dir);
      throw Error(Status::kInternal,
                  "the loss is " + trainer_fmt(loss) + " at step " + std::to_string(step + 1) +
                      "; stopping without saving. The last good checkpoint is " +
                      (last.empty() ? std::string("none (no checkpoint yet)") : last) +
                      "; lower optimizer.lr or training.grad_clip and resume");
    }
    const double lr = cfg.lr.at(step);
    const double gnorm = engine->clip_and_update(cfg.grad_clip, lr);
    state.step = step + 1;
    state.tokens_seen += cfg.tokens_per_step();
    window_tokens += cfg.tokens_per_step();
    run_tokens += cfg.tokens_per_step();

    const double el = trainer_seconds_since(window_start);
    const double tps = window_tokens / std::max(el, 1e-9);
    const double mfu = tps * flops_tok / peak;
    metrics << "{\"step\":" << state.step << ",\"loss\":" << trainer_fmt(loss)
            << ",\"ce\":" << trainer_fmt(ce) << ",\"aux\":" << trainer_fmt(aux)
            << ",\"lr\":" << trainer_fmt(lr) << ",\"grad_norm\":" << trainer_fmt(gnorm)
            << ",\"tokens\":" << state.tokens_seen << ",\"tok_per_s\":" << trainer_fmt(tps)
            << ",\"mfu\":" << trainer_fmt(mfu) << "}\n";
    result.train_loss = ce;
    if (state.step % cfg.log_interval == 0 || state.step == cfg.steps) {
      const double total_el = trainer_seconds_since(run_start);
      const double eta = total_el / std::max<int64_t>(1, run_tokens) *
                         double(cfg.steps - state.step) * cfg.tokens_per_step();
      std::fprintf(stderr,
                   "step %lld/%lld | loss %.4f (ce %.4f aux %.3f) | lr %.3g | gnorm %.3f | "
                   "%.0f tok/s | MFU %.1f%% | %.0fs elapsed, ~%.0fs left\n",
                   (long long)state.step, (long long)cfg.steps, loss, ce, aux, lr, gnorm, tps,
                   100 * mfu, trainer_seconds_since(t_start), eta);
      window_start = trainer_clock::now();
      window_tokens = 0;
    }
    const bool last = state.step == cfg.steps;
    if ((cfg.eval_interval > 0 && state.step % cfg.eval_interval == 0) || last) {
      result.val_loss = evaluate();
      metrics << "{\"step\":" << state.step << ",\"val_loss\":" << trainer_fmt(result.val_loss)
              << "}\n";
      std::fprintf(stderr, "step %lld | val loss %.4f\n", (long long)state.step, result.val_loss);
    }
    // --stop-after acts as an interruption that resumes from exactly here: checkpoint first.
    const bool stop = opts.stop_after > 0 && state.step >= opts.stop_after;
    if (state.step % cfg.checkpoint_interval == 0 || last || stop) checkpoint();
    if (stop) break;
    if (opts.step_pause_ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(opts.step_pause_ms));
  }
  result.steps = state.step;
  result.seconds = trainer_seconds_since(run_start);
  result.tokens_per_s = run_tokens / std::max(result.seconds, 1e-9);
  result.mfu = result.tokens_per_s * flops_tok / peak;
  if (state.step == cfg.steps && !cfg.export_dir.empty()) {
    // The shipped model: bf16 matrices (half the bytes), experts bf16 or MXFP4 (a quarter of
    // bf16's bytes, gpt-oss's own format), f32 vectors, and its own vocabulary.
    engine->read_state(params.data(), adam_m.data(), adam_v.data());
    write_model_files(cfg.export_dir, layout, params.data(), DType::kBF16, cfg.export_mxfp4);
    fs::copy_file(cfg.tokenizer, cfg.export_dir + "/tokenizer.tiktoken",
                  fs::copy_options::overwrite_existing);
    if (fs::exists(cfg.tokenizer + ".json"))
      fs::copy_file(cfg.tokenizer + ".json", cfg.export_dir + "/tokenizer.tiktoken.json",
                    fs::copy_options::overwrite_existing);
    std::fprintf(stderr, "exported the model to %s (experts %s)\n", cfg.export_dir.c_str(),
                 cfg.export_mxfp4 ? "mxfp4" : "bf16");
  }
  return result;
}

}  // namespace mind4::train
