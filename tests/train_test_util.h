// What the trainer tests share: random inputs, and a tiny training run (2 layers, hidden 32, 4
// experts top-2, a 4-token window, 16-token sequences in micro-batches of 2 with 2 accumulation
// steps, evaluation every 5 steps and checkpoints every 3, so that a few steps cross every code
// path of run_training).
#pragma once

#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "io_test_util.h"
#include "train/ops.h"

namespace mind4::testing {

struct TinyTrainRun {
  std::string data, tokenizer, checkpoint;
  int vocab = 300, steps = 16;
  std::string backend = "cpu", dtype = "float32", device = "cpu";
};

// n values ~ N(0, scale^2) from rng (the kernel tests' fresh inputs).
inline std::vector<float> random_normals(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = float(d(rng));
  return v;
}

inline std::vector<double> as_doubles(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// The expert rows' SwiGLU in double, as the CUDA kernels are checked against it: hb = h + the bias
// of each row's expert ge[a] ([A, 2I]), act = swiglu(hb) ([A, I]).
struct SwigluRowsRef {
  std::vector<double> hb, act;
};
inline SwigluRowsRef swiglu_rows_ref(const std::vector<float>& h, const std::vector<float>& bias,
                                     const std::vector<int>& ge, int I, float limit) {
  const size_t A = ge.size(), W = size_t(2) * I;
  SwigluRowsRef r{std::vector<double>(A * W), std::vector<double>(A * I)};
  for (size_t a = 0; a < A; ++a) {
    for (size_t j = 0; j < W; ++j) r.hb[a * W + j] = double(h[a * W + j]) + bias[ge[a] * W + j];
    train::swiglu_fwd(r.hb.data() + a * W, I, double(limit), r.act.data() + a * I);
  }
  return r;
}
// dh ([A, 2I]) from the saved pre-activations h ([A, 2I]) and dact ([A, I]).
inline std::vector<double> swiglu_rows_bwd_ref(const std::vector<double>& h,
                                               const std::vector<double>& dact, int I,
                                               float limit) {
  const size_t A = dact.size() / size_t(I), W = size_t(2) * I;
  std::vector<double> dh(A * W);
  for (size_t a = 0; a < A; ++a)
    train::swiglu_bwd(h.data() + a * W, I, double(limit), dact.data() + a * I, dh.data() + a * W);
  return dh;
}

// Runs a shell command with its output discarded; returns its exit status.
inline int quiet_shell(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str());
}

// The router backward and the MoE combine forward and backward in double, as the CUDA kernels
// are checked against them. Token row r has K slots (experts[r K + s], weights, dweights, the
// grouped row assign_at[r K + s]); probs [NT, E]; offsets [E + 1] the experts' row counts (for the
// load-balancing term, aux_scale per unit of count / NT); dxe, y [A, H] grouped rows; dx, xmid
// [NT, H]; bias [E, H]. Out: dlog [NT, E], dt [NT, H] (the sum of each row's dxe rows), xout
// [NT, H] (xmid plus the weighted y + bias of the slots), dw [NT, K], dy [A, H].
struct RouterCombineRef {
  std::vector<double> dlog, dt, xout, dw, dy;
};
inline RouterCombineRef router_combine_ref(
    const std::vector<int>& experts, const std::vector<int>& assign_at,
    const std::vector<float>& weights, const std::vector<float>& dweights,
    const std::vector<float>& probs, const std::vector<int>& offsets, double aux_scale,
    const std::vector<float>& dxe, const std::vector<float>& y, const std::vector<float>& dx,
    const std::vector<float>& xmid, const std::vector<float>& bias, int NT, int E, int K, int H,
    size_t A) {
  RouterCombineRef o{std::vector<double>(size_t(NT) * E, 0.0),
                     std::vector<double>(size_t(NT) * H, 0.0), std::vector<double>(size_t(NT) * H),
                     std::vector<double>(size_t(NT) * K), std::vector<double>(A * H, 0.0)};
  std::vector<double> aux_g(E);
  for (int e = 0; e < E; ++e) aux_g[e] = aux_scale * double(offsets[e + 1] - offsets[e]) / NT;
  for (int r = 0; r < NT; ++r) {
    std::vector<double> w(weights.begin() + r * K, weights.begin() + (r + 1) * K),
        dwv(dweights.begin() + r * K, dweights.begin() + (r + 1) * K),
        p(probs.begin() + r * E, probs.begin() + (r + 1) * E);
    train::router_bwd(experts.data() + r * K, w.data(), dwv.data(), K, o.dlog.data() + r * E);
    train::softmax_bwd(p.data(), aux_g.data(), E, o.dlog.data() + r * E);
    for (int j = 0; j < H; ++j) {
      double v = xmid[size_t(r) * H + j];
      for (int s = 0; s < K; ++s) {
        const int at = assign_at[r * K + s], e = experts[r * K + s];
        o.dt[size_t(r) * H + j] += dxe[size_t(at) * H + j];
        v += weights[r * K + s] * (double(y[size_t(at) * H + j]) + bias[size_t(e) * H + j]);
      }
      o.xout[size_t(r) * H + j] = v;
    }
    for (int s = 0; s < K; ++s) {
      const int at = assign_at[r * K + s], e = experts[r * K + s];
      double d = 0;
      for (int j = 0; j < H; ++j) {
        d += dx[size_t(r) * H + j] * (double(y[size_t(at) * H + j]) + bias[size_t(e) * H + j]);
        o.dy[size_t(at) * H + j] = weights[r * K + s] * dx[size_t(r) * H + j];
      }
      o.dw[r * K + s] = d;
    }
  }
  return o;
}

// A tiny corpus of Bible words in `dir`, with its 300-id vocabulary and token shards made by the
// mind4 command itself (train-tokenizer, prepare-data). status is the exit status of the first
// command that failed, 0 when both ran.
struct TinyCorpus {
  std::string tokenizer, data;
  int status = 0;
};
inline TinyCorpus make_tiny_corpus(const std::string& dir) {
  std::string text;
  std::mt19937 rng(9);
  const char* words[] = {"and", "the",   "lord",   "said",  "unto", "him",  "behold", "light",
                         "day", "night", "waters", "earth", "was",  "good", "god",    "made"};
  for (int i = 0; i < 3000; ++i) text += std::string(words[rng() % 16]) + (i % 12 ? " " : ".\n");
  const std::string corpus = dir + "/corpus.txt";
  write_file(corpus, text);
  TinyCorpus c{dir + "/vocab.tiktoken", dir + "/data"};
  c.status = quiet_shell(mind4_binary() + " train-tokenizer --input " + corpus +
                         " --vocab-size 300 --out " + c.tokenizer);
  if (c.status == 0)
    c.status = quiet_shell("MIND4_NO_PROGRESS=1 " + mind4_binary() +
                           " prepare-data --chunk-bytes 512 --input " + corpus + " --tokenizer " +
                           c.tokenizer + " --out " + c.data);
  return c;
}

// A complete train.yaml (every field is required) for the run.
inline std::string tiny_train_yaml(const TinyTrainRun& r) {
  std::ostringstream os;
  os << "model:\n  hidden_size: 32\n  num_hidden_layers: 2\n  num_attention_heads: 4\n"
        "  num_key_value_heads: 2\n  head_dim: 8\n  intermediate_size: 16\n  vocab_size: "
     << r.vocab
     << "\n  initial_context_length: 16\n  max_context_length: 64\n  sliding_window: 4\n"
        "  rope_theta: 10000.0\n  rope_scaling_factor: 2.0\n  rope_ntk_alpha: 1.0\n"
        "  rope_ntk_beta: 32.0\n  num_experts: 4\n  experts_per_token: 2\n  swiglu_limit: 7.0\n"
        "data:\n  dir: "
     << r.data << "\n  tokenizer: " << r.tokenizer
     << "\ntraining:\n  seq_len: 16\n  micro_batch: 2\n  grad_accum: 2\n  steps: " << r.steps
     << "\n  token_budget: 0\n  seed: 7\n  init_std: 0.05\n  aux_loss_coef: 0.01\n"
        "  grad_clip: 1.0\n  log_interval: 4\n"
        "optimizer:\n  lr: 0.003\n  min_lr: 0.0003\n  warmup_steps: 3\n  decay: cosine\n"
        "  beta1: 0.9\n  beta2: 0.95\n  eps: 1.0e-8\n  weight_decay: 0.1\n"
        "eval:\n  interval: 5\n  batches: 2\n"
        "checkpoint:\n  dir: "
     << r.checkpoint
     << "\n  interval: 3\n  keep_last: 2\n  export: \"\"\n  export_experts: bf16\n"
        "execution:\n  backend: "
     << r.backend << "\n  dtype: " << r.dtype << "\n  device: " << r.device << "\n  threads: 2\n";
  return os.str();
}

}  // namespace mind4::testing
