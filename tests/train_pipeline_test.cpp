// The training pipeline around the math: train.yaml validation, token shards and their bad input,
// the trainer's forward against the inference forward on the same weights, checkpoints that
// Model::load reads, and a run killed with SIGKILL then resumed, bit for bit (driving `mind4`).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "io/model_config.h"
#include "io_test_util.h"
#include "mind4/model.h"
#include "mind4/status.h"
#include "mind4/tokenizer.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/model.h"
#include "train/train_config.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace mind4::train {
namespace {

using mind4::testing::read_file;
using mind4::testing::ScratchDir;
using mind4::testing::write_file;

std::string pipeline_yaml(const std::string& data_dir, const std::string& tokenizer,
                          const std::string& ckpt, int vocab, int steps = 16) {
  return mind4::testing::tiny_train_yaml({data_dir, tokenizer, ckpt, vocab, steps});
}

std::string pipeline_error(const std::string& yaml) {
  try {
    parse_train_config(yaml, "t.yaml");
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidConfig) << e.what();
    return e.what();
  }
  return "";
}

std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

TEST(TrainConfig, ParsesEveryField) {
  const TrainConfig c = parse_train_config(pipeline_yaml("d", "v.tiktoken", "ck", 300), "t.yaml");
  EXPECT_EQ(c.model.hidden_size, 32);
  EXPECT_EQ(c.model.sliding_window, 4);
  EXPECT_EQ(c.grad_accum, 2);
  EXPECT_EQ(c.steps, 16);
  EXPECT_FLOAT_EQ(float(c.adamw.beta2), 0.95f);
  EXPECT_DOUBLE_EQ(c.adamw.eps, double(1.0e-8f));
  EXPECT_EQ(c.lr.decay, DecayKind::kCosine);
  EXPECT_EQ(c.keep_last, 2);
  EXPECT_EQ(c.tokens_per_step(), 64);
}

// The recipes the repository ships parse, and keep what their comments and docs promise: the GPU
// recipe is the bundled model's on CUDA (same shape, so the same export format, written
// elsewhere), and the quick CPU recipe is smaller than the bundled one.
TEST(TrainConfig, ShippedRecipesParse) {
  const std::string root = std::string(MIND4_SOURCE_DIR) + "/";
  const TrainConfig cpu = load_train_config(root + "config/train.yaml");
  const TrainConfig gpu = load_train_config(root + "config/train-gpu.yaml");
  const TrainConfig small = load_train_config(root + "config/train-small.yaml");
  const TrainConfig bundled = load_train_config(root + "models/default/train.yaml");
  EXPECT_EQ(cpu.execution.backend, Backend::kCpu);
  EXPECT_EQ(cpu.export_dir, "models/default");
  EXPECT_EQ(model_config_json(bundled.model, CheckpointLayout::kOriginal, false),
            model_config_json(cpu.model, CheckpointLayout::kOriginal, false));
  EXPECT_EQ(gpu.execution.backend, Backend::kCuda);
  EXPECT_EQ(model_config_json(gpu.model, CheckpointLayout::kOriginal, false),
            model_config_json(cpu.model, CheckpointLayout::kOriginal, false));
  EXPECT_EQ(gpu.steps, cpu.steps);
  EXPECT_EQ(gpu.tokens_per_step(), cpu.tokens_per_step());
  EXPECT_NE(gpu.export_dir, cpu.export_dir);
  EXPECT_EQ(small.execution.backend, Backend::kCpu);
  EXPECT_LT(small.steps * small.tokens_per_step(), cpu.steps * cpu.tokens_per_step());
  EXPECT_LT(small.model.hidden_size, cpu.model.hidden_size);
  EXPECT_NE(small.export_dir, cpu.export_dir);
}

TEST(TrainConfig, EachBadFieldIsNamed) {
  const std::string ok = pipeline_yaml("d", "v.tiktoken", "ck", 300);
  EXPECT_NE(pipeline_error(replace_once(ok, "beta2: 0.95", "beta2: 1.5")).find("optimizer.beta2"),
            std::string::npos);
  EXPECT_NE(
      pipeline_error(replace_once(ok, "decay: cosine", "decay: cosin")).find("optimizer.decay"),
      std::string::npos);
  EXPECT_NE(pipeline_error(replace_once(ok, "micro_batch: 2", "micro_batch: two"))
                .find("training.micro_batch"),
            std::string::npos);
  const std::string typo = pipeline_error(replace_once(ok, "keep_last: 2", "keep_lats: 2"));
  EXPECT_NE(typo.find("checkpoint.keep_last"), std::string::npos) << typo;
  EXPECT_NE(pipeline_error(replace_once(ok, "  seed: 7\n", "  seed: 7\n  sede: 3\n"))
                .find("did you mean 'training.seed'"),
            std::string::npos);
  EXPECT_NE(
      pipeline_error(replace_once(ok, "seq_len: 16", "seq_len: 128")).find("training.seq_len"),
      std::string::npos);
  EXPECT_NE(
      pipeline_error(replace_once(ok, "token_budget: 0", "token_budget: 100")).find("token_budget"),
      std::string::npos);
  EXPECT_NE(pipeline_error(replace_once(ok, "num_key_value_heads: 2", "num_key_value_heads: 3"))
                .find("t.yaml"),
            std::string::npos);
  EXPECT_NE(pipeline_error("model: [1, 2\n").find("t.yaml"), std::string::npos);
  EXPECT_NE(pipeline_error(replace_once(ok, "export_experts: bf16", "export_experts: fp4"))
                .find("checkpoint.export_experts"),
            std::string::npos);
  // This model's intermediate_size (16) cannot be cut in 32-value MXFP4 blocks.
  const std::string mx =
      pipeline_error(replace_once(ok, "export_experts: bf16", "export_experts: mxfp4"));
  EXPECT_NE(mx.find("checkpoint.export_experts"), std::string::npos) << mx;
  EXPECT_NE(mx.find("multiples of 32"), std::string::npos) << mx;
  EXPECT_THROW(load_train_config("/nonexistent/train.yaml"), Error);
  // backend: cuda parses (whether a GPU is there is checked when training starts); the device
  // and dtype must agree with the backend.
  const TrainConfig cu =
      parse_train_config(replace_once(replace_once(ok, "backend: cpu", "backend: cuda"),
                                      "device: cpu", "device: auto"),
                         "t.yaml");
  EXPECT_EQ(cu.execution.backend, Backend::kCuda);
  EXPECT_NE(
      pipeline_error(replace_once(ok, "backend: cpu", "backend: cuda")).find("execution.device"),
      std::string::npos);
  EXPECT_NE(
      pipeline_error(replace_once(ok, "dtype: float32", "dtype: bfloat16")).find("execution.dtype"),
      std::string::npos);
}

TEST(TrainData, ShardsRoundTripAndBadShardsAreNamed) {
  ScratchDir dir("train_data");
  std::vector<int32_t> toks = {1, 2, 3, 299, 0};
  write_token_shard(dir / "train_0000.bin", toks, 300);
  TokenSplit s = read_token_split(dir.str(), "train");
  EXPECT_EQ(s.tokens, toks);
  EXPECT_EQ(s.vocab_size, 300u);
  auto expect_error = [&](const std::string& needle) {
    try {
      read_token_split(dir.str(), "train");
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string good = read_file(dir / "train_0000.bin");
  write_file(dir / "train_0000.bin", good.substr(0, good.size() - 1));
  expect_error("truncated");
  write_file(dir / "train_0000.bin", "NOTASHARD" + good.substr(9));
  expect_error("bad magic");
  std::string big = good;
  big[32] = char(0xff), big[33] = char(0xff);  // token 0 = 65535 >= 300
  write_file(dir / "train_0000.bin", big);
  expect_error("outside the vocabulary");
  std::filesystem::remove(dir / "train_0000.bin");
  expect_error("no train_*.bin");
  EXPECT_THROW(read_token_split(dir / "missing", "train"), Error);
}

ModelConfig pipeline_model() {
  return parse_train_config(pipeline_yaml("d", "v", "c", 53), "t.yaml").model;
}

// The trainer's forward (float) and the inference engine (src/model) on the same weights, written
// as a checkpoint and loaded by Model::load: same logits, same loss.
TEST(TrainModel, ForwardMatchesInferenceEngine) {
  ModelConfig c = pipeline_model();
  const ParamLayout layout = make_param_layout(c);
  std::vector<float> params(size_t(layout.total));
  init_params(layout, 3, 0.1f, params.data());
  std::mt19937 rng(4);
  std::normal_distribution<float> d(0.0f, 0.2f);
  for (const auto& t : layout.tensors)
    if (!t.decay)
      for (int64_t i = 0; i < t.numel; ++i) params[t.offset + i] += d(rng);
  ScratchDir dir("train_vs_infer");
  write_model_files(dir.str(), layout, params.data(), DType::kF32);

  const int B = 2, S = 12;
  std::vector<int> tokens(B * S), targets(B * S);
  for (int i = 0; i < B * S; ++i) tokens[i] = int(rng() % 53), targets[i] = int(rng() % 53);
  ThreadPool pool(2);
  TrainModel<float> tm(layout, B, S, 0.0f, pool);
  const LossParts lp = tm.run(params.data(), tokens.data(), targets.data(), nullptr, 1.0f);

  Config cfg;
  cfg.model = c;
  cfg.paths.checkpoint = dir.str();
  auto model = Model::load(cfg);
  Context ctx(model, {.context_length = 64, .max_sequences = B, .keep_all_logits = true});
  double ce = 0.0, max_diff = 0.0;
  for (int b = 0; b < B; ++b) {
    const int seq = ctx.new_sequence();
    ctx.append(seq, std::span<const int>(tokens.data() + b * S, S));
    ctx.process();
    auto logits = ctx.all_logits(seq);
    ASSERT_EQ(int(logits.size()), S * c.vocab_size);
    for (int s = 0; s < S; ++s) {
      const float* row = logits.data() + int64_t(s) * c.vocab_size;
      const float* mine = tm.logits() + (int64_t(b) * S + s) * c.vocab_size;
      double m = row[0], sum = 0.0;
      for (int v = 0; v < c.vocab_size; ++v) {
        m = std::max(m, double(row[v]));
        max_diff = std::max(max_diff, double(std::abs(row[v] - mine[v])));
      }
      for (int v = 0; v < c.vocab_size; ++v) sum += std::exp(double(row[v]) - m);
      ce += m + std::log(sum) - row[targets[b * S + s]];
    }
  }
  ce /= B * S;
  EXPECT_LT(max_diff, 2e-4);
  EXPECT_NEAR(lp.ce, ce, 1e-5 * ce);
}

using mind4::testing::mind4_binary;
using mind4::testing::quiet_shell;

std::vector<std::string> loss_lines(const std::string& metrics) {
  std::vector<std::string> out;
  std::istringstream in(read_file(metrics));
  std::string line;
  while (std::getline(in, line)) {
    // The loss and the validation loss, not the timing fields.
    const size_t a = line.find("\"loss\":"), v = line.find("\"val_loss\":");
    if (a != std::string::npos) out.push_back(line.substr(0, line.find(",\"lr\"")));
    if (v != std::string::npos) out.push_back(line);
  }
  return out;
}

// Tiny corpus, vocabulary and shards made by the command itself.
struct PipelineData {
  ScratchDir dir{"train_resume"};
  std::string tokenizer, data;
  PipelineData() {
    const mind4::testing::TinyCorpus c = mind4::testing::make_tiny_corpus(dir.str());
    EXPECT_EQ(c.status, 0);
    tokenizer = c.tokenizer, data = c.data;
  }
};

TEST(TrainResume, KilledRunResumesBitForBit) {
  PipelineData d;
  const std::string a = d.dir / "ck_a", b = d.dir / "ck_b";
  write_file(d.dir / "a.yaml", pipeline_yaml(d.data, d.tokenizer, a, 300));
  write_file(d.dir / "b.yaml", pipeline_yaml(d.data, d.tokenizer, b, 300));
  ASSERT_EQ(quiet_shell(mind4_binary() + " train " + (d.dir / "a.yaml")), 0);

  // Run b slowly, kill it with SIGKILL once it is past a checkpoint and mid-way, then resume.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string bin = mind4_binary(), cfg = d.dir / "b.yaml";
    freopen("/dev/null", "w", stderr);
    freopen("/dev/null", "w", stdout);
    execl(bin.c_str(), bin.c_str(), "train", cfg.c_str(), "--step-pause-ms", "150",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(b + "/step_00000006") &&
        loss_lines(b + "/metrics.jsonl").size() >= 9)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before it was killed";
  EXPECT_FALSE(std::filesystem::exists(b + "/step_00000016"));
  ASSERT_EQ(quiet_shell(mind4_binary() + " train " + (d.dir / "b.yaml")), 0);

  const auto la = loss_lines(a + "/metrics.jsonl"), lb = loss_lines(b + "/metrics.jsonl");
  ASSERT_EQ(la.size(), 16u + 4u);  // 16 steps, evaluations at 5, 10, 15, 16
  EXPECT_EQ(la, lb);
  EXPECT_TRUE(std::filesystem::exists(a + "/loss.svg"));
  // keep_last 2: steps 15 and 16.
  EXPECT_TRUE(std::filesystem::exists(a + "/step_00000016/model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(a + "/step_00000015"));
  EXPECT_FALSE(std::filesystem::exists(a + "/step_00000012"));

  // A checkpoint loads as a model.
  Config cfg;
  cfg.paths.checkpoint = a + "/step_00000016";
  EXPECT_NO_THROW(Model::load(cfg));

  // A byte flipped inside the state's tensor data (the header still parses) is named on resume
  // by its checksum, and the run does not start: the metrics stay as they were.
  const std::string state = b + "/step_00000016/state.safetensors";
  std::string bytes = read_file(state);
  bytes[bytes.size() - 10] ^= 0x10;
  write_file(state, bytes);
  const std::string metrics_before = read_file(b + "/metrics.jsonl");
  std::string out;
  {
    FILE* p = popen((mind4_binary() + " train " + (d.dir / "b.yaml") + " 2>&1").c_str(), "r");
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    EXPECT_NE(pclose(p), 0);
  }
  EXPECT_NE(out.find("state.safetensors is corrupt"), std::string::npos) << out;
  EXPECT_EQ(out.find("resuming from"), std::string::npos) << out;
  EXPECT_EQ(read_file(b + "/metrics.jsonl"), metrics_before);
}

TEST(TrainResume, BadInputIsNamed) {
  PipelineData d;
  auto run = [&](const std::string& yaml) {
    write_file(d.dir / "x.yaml", yaml);
    std::string out;
    FILE* p = popen((mind4_binary() + " train " + (d.dir / "x.yaml") + " 2>&1").c_str(), "r");
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    EXPECT_NE(pclose(p), 0) << out;
    return out;
  };
  // The vocabulary does not match the model.
  std::string out = run(pipeline_yaml(d.data, d.tokenizer, d.dir / "ck", 512));
  EXPECT_NE(out.find("vocab_size"), std::string::npos) << out;
  // A missing data directory.
  out = run(pipeline_yaml(d.dir / "nodata", d.tokenizer, d.dir / "ck", 300));
  EXPECT_NE(out.find("prepare-data"), std::string::npos) << out;
  // A dataset too small for one window.
  std::filesystem::create_directories(d.dir / "small");
  write_token_shard(d.dir / "small/train_0000.bin", {1, 2, 3}, 300);
  write_token_shard(d.dir / "small/val_0000.bin", {1, 2, 3}, 300);
  out = run(pipeline_yaml(d.dir / "small", d.tokenizer, d.dir / "ck", 300));
  EXPECT_NE(out.find("seq_len + 1"), std::string::npos) << out;
  EXPECT_NE(out.find(d.dir / "small/train_0000.bin"), std::string::npos) << out;
  // An empty dataset: a zero-byte shard, and a shard whose header says 0 tokens.
  write_file(d.dir / "small/train_0000.bin", "");
  out = run(pipeline_yaml(d.dir / "small", d.tokenizer, d.dir / "ck", 300));
  EXPECT_NE(out.find(d.dir / "small/train_0000.bin" + ": empty file"), std::string::npos) << out;
  write_token_shard(d.dir / "small/train_0000.bin", {}, 300);
  out = run(pipeline_yaml(d.dir / "small", d.tokenizer, d.dir / "ck", 300));
  EXPECT_NE(out.find(d.dir / "small/train_0000.bin" + ": the shard holds no tokens"),
            std::string::npos)
      << out;
  // A NaN loss stops the run and names the last good checkpoint.
  std::string nan_yaml = replace_once(pipeline_yaml(d.data, d.tokenizer, d.dir / "cknan", 300),
                                      "lr: 0.003", "lr: 1.0e30");
  nan_yaml = replace_once(nan_yaml, "grad_clip: 1.0", "grad_clip: 0.0");
  out = run(nan_yaml);
  EXPECT_NE(out.find("last good checkpoint"), std::string::npos) << out;
}

// `mind4 train` with checkpoint.export_experts mxfp4, stopped with --stop-after and resumed: the
// exported directory holds MXFP4 experts and its vocabulary, and loads as a model.
TEST(TrainExport, MindTrainExportsMxfp4Experts) {
  PipelineData d;
  std::string yaml = pipeline_yaml(d.data, d.tokenizer, d.dir / "ck", 300, 4);
  yaml = replace_once(yaml, "intermediate_size: 16", "intermediate_size: 32");
  yaml = replace_once(yaml, "export: \"\"", "export: " + (d.dir / "out"));
  yaml = replace_once(yaml, "export_experts: bf16", "export_experts: mxfp4");
  write_file(d.dir / "mx.yaml", yaml);
  // --stop-after between checkpoint intervals (3) still leaves a checkpoint to resume from, and
  // nothing is exported before the last step.
  ASSERT_EQ(quiet_shell(mind4_binary() + " train --stop-after 2 " + (d.dir / "mx.yaml")), 0);
  EXPECT_EQ(read_file(d.dir / "ck/latest"), "step_00000002\n");
  EXPECT_FALSE(std::filesystem::exists(d.dir / "out"));
  ASSERT_EQ(quiet_shell(mind4_binary() + " train " + (d.dir / "mx.yaml")), 0);
  EXPECT_EQ(read_file(d.dir / "ck/latest"), "step_00000004\n");
  Config cfg;
  cfg.paths.checkpoint = d.dir / "out";
  EXPECT_NO_THROW(Model::load(cfg));
  EXPECT_TRUE(std::filesystem::exists(d.dir / "out/tokenizer.tiktoken"));
  const std::string model = read_file(d.dir / "out/model.safetensors");
  EXPECT_NE(model.find("block.1.mlp.mlp1_weight.scales"), std::string::npos);
  EXPECT_EQ(model.find("\"block.1.mlp.mlp1_weight\""), std::string::npos);
}

TEST(TrainExport, AutoTokenizerIsTheModelDirectorysOwn) {
  ScratchDir dir("train_tok_auto");
  EXPECT_EQ(resolve_tokenizer_path("auto", dir.str()), "o200k_harmony");
  write_file(dir / "tokenizer.tiktoken", "");
  EXPECT_EQ(resolve_tokenizer_path("auto", dir.str()), dir / "tokenizer.tiktoken");
  EXPECT_EQ(resolve_tokenizer_path("auto", dir / "model.safetensors"), dir / "tokenizer.tiktoken");
  EXPECT_EQ(resolve_tokenizer_path("o200k_base", dir.str()), "o200k_base");
}

}  // namespace
}  // namespace mind4::train
