// The CUDA training line against the CPU one, as a whole: the model's loss and every parameter's
// gradient in float32 against TrainModel<double> (tight) and in bfloat16 (loose), AdamW steps of
// the CUDA engine against the CPU engine, and `mind4 train` with backend: cuda end to end with a
// resume (on the GPU and, from the same checkpoint, on the CPU). The kernels one by one are in
// cuda_train_kernels_test.cpp. Without a GPU the CUDA tests skip; the one that checks the error a
// CUDA config gives without a GPU runs in CI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <sstream>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/ops.h"
#include "io_test_util.h"
#include "mind4/status.h"
#include "train/engine.h"
#include "train/model.h"
#include "train/ops.h"
#include "train/optimizer.h"
#include "train/params.h"
#include "train/train_config.h"
#include "train/trainer.h"
#include "train_test_util.h"

#ifdef MIND4_HAVE_CUDA
#include "cuda/train_kernels.h"
#include "cuda_test_util.h"
#endif

namespace mind4::train {
namespace {

using mind4::testing::mind4_binary;
using mind4::testing::quiet_shell;
using mind4::testing::read_file;
using mind4::testing::ScratchDir;
using mind4::testing::write_file;

std::string ct_yaml(const std::string& data, const std::string& tok, const std::string& ckpt,
                    const std::string& backend, const std::string& dtype, int steps) {
  return mind4::testing::tiny_train_yaml({data, tok, ckpt, 300, steps, backend, dtype, "auto"});
}

bool ct_gpu_usable() {
#ifdef MIND4_HAVE_CUDA
  return cuda_train_gpu_missing().empty();
#else
  return false;
#endif
}

// Runs in CI: a CUDA config where no GPU is usable (or no CUDA line is built) is refused with
// the field named, before the data is read or the checkpoint directory made.
TEST(CudaTrainBackend, MissingGpuIsNamedBeforeAnyWork) {
  if (ct_gpu_usable()) GTEST_SKIP() << "a CUDA GPU is usable here: nothing to refuse";
  ScratchDir dir("cuda_train_nogpu");
  const std::string ckpt = dir / "ck";
  const TrainConfig c = parse_train_config(
      ct_yaml("/nonexistent/data", "/nonexistent/vocab", ckpt, "cuda", "bfloat16", 4), "t.yaml");
  try {
    run_training(c);
    ADD_FAILURE() << "a CUDA config trained without a GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kUnsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find("execution.backend"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("t.yaml"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(ckpt));
}

#ifdef MIND4_HAVE_CUDA

using cuda::ActType;
using cuda_test::download;
using cuda_test::poisoned;
using cuda_test::rel_error;
using cuda_test::upload;

// ---- the whole model

struct CtShape {
  int B, S, window, E, K;
  float swiglu_limit = 0.6f;  // low: the clamp is active on part of the expert inputs
  int attn_tile = 3;          // queries per attention tile: several tiles, windows across them
  int keep_probs = 1;         // the backward reuses the forward's P (0: recomputes it)
};

ModelConfig ct_model(const CtShape& s) {
  ModelConfig c;
  c.hidden_size = 24, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.head_dim = 8, c.intermediate_size = 12, c.vocab_size = 53;
  c.initial_context_length = 4, c.max_context_length = 64, c.sliding_window = s.window;
  c.rope_theta = 10000.0f, c.rope_scaling_factor = 4.0f, c.num_experts = s.E;
  c.experts_per_token = s.K, c.swiglu_limit = s.swiglu_limit;
  return c;
}

TrainConfig ct_train_config(const ModelConfig& m, int B, int S, const char* dtype) {
  TrainConfig c;
  c.model = m, c.micro_batch = B, c.seq_len = S, c.aux_loss_coef = 0.3f, c.source = "test";
  c.execution.backend = Backend::kCuda;
  c.execution.dtype =
      std::string(dtype) == "bfloat16" ? ActivationDType::kBFloat16 : ActivationDType::kFloat32;
  return c;
}

// Parameters with non-trivial norms, biases and sinks (as train_grad_test does).
std::vector<double> ct_params(const ParamLayout& layout, uint64_t seed) {
  std::vector<double> p(layout.total);
  init_params(layout, seed, 0.4f, p.data());
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<double> d(0.0, 0.3);
  for (const auto& t : layout.tensors)
    if (!t.decay)
      for (int64_t i = 0; i < t.numel; ++i) p[t.offset + i] += d(rng);
  for (auto& x : p) x = double(float(x));  // what the float engines hold
  return p;
}

// Returns each tensor's relative gradient error.
// expert_batch: CudaTrainOptions::expert_batch (1: one batched product over uniform segments,
// which these small shapes always allow; 0: one product per expert).
std::vector<double> ct_compare_model(const CtShape& s, const char* dtype, double grad_tol,
                                     double loss_tol, int expert_batch = 1) {
  const ModelConfig m = ct_model(s);
  const ParamLayout layout = make_param_layout(m);
  ThreadPool pool(2);
  const std::vector<double> pd = ct_params(layout, 21 + s.S);
  std::mt19937_64 rng(s.B * 100 + s.S);
  std::vector<int> tokens(s.B * s.S), targets(s.B * s.S);
  for (int i = 0; i < s.B * s.S; ++i)
    tokens[i] = int(rng() % m.vocab_size), targets[i] = int(rng() % m.vocab_size);
  TrainModel<double> ref(layout, s.B, s.S, 0.3f, pool);
  std::vector<double> gref(layout.total, 0.0);
  const float grad_scale = 0.5f;
  const LossParts lr = ref.run(pd.data(), tokens.data(), targets.data(), gref.data(), grad_scale);

  const TrainConfig cfg = ct_train_config(m, s.B, s.S, dtype);
  CudaTrainOptions opts;
  opts.attn_tile = s.attn_tile, opts.keep_probs = s.keep_probs, opts.expert_batch = expert_batch;
  auto engine = make_cuda_train_engine(cfg, layout, opts);
  std::vector<float> pf(pd.begin(), pd.end()), zeros(layout.total, 0.0f);
  engine->write_state(pf.data(), zeros.data(), zeros.data(), 0);
  engine->zero_grads();
  const LossParts lc = engine->accumulate(tokens.data(), targets.data(), grad_scale);
  std::vector<float> g(layout.total);
  engine->read_grads(g.data());
  const std::string what = std::string(dtype) + " B=" + std::to_string(s.B) +
                           " S=" + std::to_string(s.S) + " window=" + std::to_string(s.window) +
                           " E=" + std::to_string(s.E) + " K=" + std::to_string(s.K) +
                           " tile=" + std::to_string(s.attn_tile) +
                           " keep_probs=" + std::to_string(s.keep_probs) +
                           " expert_batch=" + std::to_string(expert_batch);
  EXPECT_NEAR(lc.ce, lr.ce, loss_tol * lr.ce) << what;
  EXPECT_NEAR(lc.aux, lr.aux, loss_tol * lr.aux) << what;
  EXPECT_NEAR(engine->eval_loss(tokens.data(), targets.data()), lr.ce, loss_tol * lr.ce) << what;
  std::vector<double> errors;
  for (const auto& t : layout.tensors) {
    std::vector<float> got(g.begin() + t.offset, g.begin() + t.offset + t.numel);
    std::vector<double> want(gref.begin() + t.offset, gref.begin() + t.offset + t.numel);
    errors.push_back(rel_error(got, want));
    EXPECT_LT(errors.back(), grad_tol) << what << ": " << t.name;
  }
  return errors;
}

// Shapes: odd S, window shorter and longer than S and none, one sequence, k = 1 and k = E;
// attention tiles of 3 queries (the last one partial) and one whole-sequence tile (the default).
const CtShape kCtShapes[] = {{2, 7, 4, 4, 2},           {1, 5, 8, 3, 1},
                             {3, 6, 0, 4, 4},           {2, 16, 3, 5, 2},
                             {2, 16, 5, 4, 2, 0.6f, 0}, {1, 13, 6, 4, 2, 0.6f, 4}};

TEST(CudaTrainModel, Float32LossAndEveryGradientMatchDouble) {
  MIND4_REQUIRE_GPU();
  for (const CtShape& s : kCtShapes)
    for (int expert_batch : {1, 0}) ct_compare_model(s, "float32", 1e-4, 1e-6, expert_batch);
}

// bf16 rounds GEMM operands to 8 significant bits (relative 2^-9 = 0.2% each). These weights
// (std 0.4) saturate softmaxes, and some gradients are sums that mostly cancel (a sink's is
// -sum p_sink * delta, a gate's the router softmax's backward), so rounding compounds through two
// blocks into 1-12% per tensor (seen: 12% on a first-block sink, 5-8% on first-block attention
// and gate tensors, most tensors far below). A wrong formula or a wrong dtype is off by O(1): the
// bound is 20% on every tensor and 5% on the median tensor. The comparison only holds where no
// decision depends on rounding: k = E chooses every expert whatever the logits, and the SwiGLU
// clamp sits at gpt-oss's 7, beyond these inputs (at 0.6 an input a rounding away from the bound
// gets a gradient on one side and none on the other: 40-65% errors in mlp1, seen).
TEST(CudaTrainModel, Bfloat16GradientsWithinRoundingOfDouble) {
  MIND4_REQUIRE_GPU();
  for (const CtShape& s : {CtShape{2, 7, 4, 3, 3, 7.0f}, CtShape{1, 9, 0, 2, 2, 7.0f, 3, 0}}) {
    std::vector<double> e = ct_compare_model(s, "bfloat16", 0.2, 1e-2);
    std::sort(e.begin(), e.end());
    EXPECT_LT(e[e.size() / 2], 0.05) << "median tensor error, S = " << s.S;
  }
}

TEST(CudaTrainEngine, AdamWStepsMatchTheCpuEngine) {
  MIND4_REQUIRE_GPU();
  const ModelConfig m = ct_model({2, 7, 4, 4, 2});
  const ParamLayout layout = make_param_layout(m);
  ThreadPool pool(2);
  TrainConfig cfg = ct_train_config(m, 2, 7, "float32");
  cfg.lr.max_lr = 1e-2, cfg.lr.warmup_steps = 0, cfg.lr.total_steps = 5;
  auto gpu = make_cuda_train_engine(cfg, layout);
  auto cpu = make_cpu_train_engine(cfg, layout, pool);
  const std::vector<double> pd = ct_params(layout, 5);
  std::vector<float> p(pd.begin(), pd.end()), zeros(layout.total, 0.0f);
  gpu->write_state(p.data(), zeros.data(), zeros.data(), 0);
  cpu->write_state(p.data(), zeros.data(), zeros.data(), 0);
  std::mt19937_64 rng(6);
  for (int step = 0; step < 5; ++step) {
    std::vector<int> tokens(14), targets(14);
    for (int i = 0; i < 14; ++i)
      tokens[i] = int(rng() % m.vocab_size), targets[i] = int(rng() % m.vocab_size);
    gpu->zero_grads();
    cpu->zero_grads();
    const double lg = gpu->accumulate(tokens.data(), targets.data(), 1.0f).ce;
    const double lc = cpu->accumulate(tokens.data(), targets.data(), 1.0f).ce;
    EXPECT_NEAR(lg, lc, 1e-5 * lc) << "step " << step;
    // Step 2 clips (max_norm below the norm), the others do not.
    const double max_norm = step == 2 ? 0.01 : 0.0;
    const double ng = gpu->clip_and_update(max_norm, cfg.lr.at(step));
    const double nc = cpu->clip_and_update(max_norm, cfg.lr.at(step));
    EXPECT_NEAR(ng, nc, 1e-4 * nc) << "step " << step;
  }
  std::vector<float> pg(layout.total), mg(layout.total), vg(layout.total), pc(layout.total),
      mc(layout.total), vc(layout.total);
  gpu->read_state(pg.data(), mg.data(), vg.data());
  cpu->read_state(pc.data(), mc.data(), vc.data());
  EXPECT_LT(rel_error(pg, mind4::testing::as_doubles(pc)), 1e-5);
  EXPECT_LT(rel_error(mg, mind4::testing::as_doubles(mc)), 1e-3);
  EXPECT_LT(rel_error(vg, mind4::testing::as_doubles(vc)), 1e-3);
}

// ---- `mind4 train` with backend: cuda, end to end

std::vector<double> ct_losses(const std::string& metrics) {
  std::vector<double> out;
  std::istringstream in(read_file(metrics));
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find("\"loss\":");
    if (a != std::string::npos) out.push_back(std::stod(line.substr(a + 7)));
  }
  return out;
}

TEST(CudaTrainRun, TrainsResumesOnEitherBackendAndExports) {
  MIND4_REQUIRE_GPU();
  ScratchDir dir("cuda_train_run");
  const mind4::testing::TinyCorpus corpus = mind4::testing::make_tiny_corpus(dir.str());
  ASSERT_EQ(corpus.status, 0);
  const std::string tok = corpus.tokenizer, data = corpus.data;
  const std::string a = dir / "ck_a", b = dir / "ck_b", c = dir / "ck_c";
  write_file(dir / "a.yaml", ct_yaml(data, tok, a, "cuda", "float32", 12));
  write_file(dir / "b.yaml", ct_yaml(data, tok, b, "cuda", "float32", 12));
  write_file(dir / "c.yaml", ct_yaml(data, tok, c, "cpu", "float32", 12));
  std::string ay = read_file(dir / "a.yaml");
  ay.replace(ay.find("export: \"\""), 10, "export: " + (dir / "export"));
  write_file(dir / "a.yaml", ay);
  ASSERT_EQ(quiet_shell(mind4_binary() + " train " + (dir / "a.yaml")), 0);
  // b: stop after 6 (checkpointed), resume on the GPU; c: the same first 6 steps' checkpoint
  // resumed on the CPU.
  ASSERT_EQ(quiet_shell(mind4_binary() + " train " + (dir / "b.yaml") + " --stop-after 6"), 0);
  std::filesystem::copy(b, c, std::filesystem::copy_options::recursive);
  ASSERT_EQ(quiet_shell(mind4_binary() + " train " + (dir / "b.yaml")), 0);
  ASSERT_EQ(quiet_shell(mind4_binary() + " train " + (dir / "c.yaml")), 0);
  const auto la = ct_losses(a + "/metrics.jsonl"), lb = ct_losses(b + "/metrics.jsonl"),
             lc = ct_losses(c + "/metrics.jsonl");
  ASSERT_EQ(la.size(), 12u);
  ASSERT_EQ(lb.size(), 12u);
  ASSERT_EQ(lc.size(), 12u);
  EXPECT_LT(la.back(), la.front());  // it learns
  for (size_t i = 0; i < la.size(); ++i) {
    // The experts' rows are grouped by atomics and the embedding gradient adds by atomics: the
    // GPU repeats itself to rounding, not bit for bit.
    EXPECT_NEAR(lb[i], la[i], 1e-4 * la[i]) << "step " << i + 1;
    EXPECT_NEAR(lc[i], la[i], 1e-4 * la[i]) << "step " << i + 1;
  }
  EXPECT_TRUE(std::filesystem::exists(dir / "export/model.safetensors"));
  for (const char* backend : {"cpu", "cuda"})
    EXPECT_EQ(quiet_shell(mind4_binary() + " generate --checkpoint " + (dir / "export") +
                          " --tokenizer auto --backend " + backend +
                          " --max-new-tokens 4 --temperature 0 'the lord'"),
              0)
        << backend;
}

#endif  // MIND4_HAVE_CUDA

}  // namespace
}  // namespace mind4::train
