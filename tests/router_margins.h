// Router near-ties of a checkpoint on the CPU line (f32), for the tests that compare a bf16 line
// with float64 Hugging Face logits: bf16 rounding perturbs router logits by about 1e-2, so where
// the k-th and (k+1)-th logits are closer than that, bf16 may pick another expert than HF did.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "io/checkpoint.h"
#include "model/model_impl.h"

namespace mind4::test {

// The smallest router margin (k-th minus (k+1)-th logit) over layers at each prompt position
// (infinity where k equals the expert count): truncated copies of the model give each layer's
// router logits.
inline std::vector<double> cpu_router_margins(const std::string& dir,
                                              const std::vector<int>& tokens) {
  const int T = int(tokens.size());
  std::vector<double> margin(size_t(T), INFINITY);
  for (int l = 0;; ++l) {
    Model::Impl impl;
    impl.weights = load_checkpoint(dir);
    if (l >= impl.weights.config.num_hidden_layers) break;
    impl.weights.layers.resize(l + 1);
    ModelConfig& c = impl.weights.config;
    c.num_hidden_layers = l + 1;
    impl.qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim;
    ThreadPool pool(1);
    Workspace ws;
    workspace_init(ws, c, T, 1, 1, T);
    KvCache kv;
    kv.layers = l + 1, kv.positions = T, kv.width = c.num_key_value_heads * c.head_dim;
    kv.k = FloatBuffer(size_t(kv.layers) * T * kv.width);
    kv.v = FloatBuffer(size_t(kv.layers) * T * kv.width);
    std::vector<StepRow> rows;
    for (int i = 0; i < T; ++i) rows.push_back({0, i, tokens[i]});
    forward_step(impl, ws, kv, pool, rows, {});  // ws.gate: layer l's router logits
    const int E = c.num_experts, K = c.experts_per_token;
    for (int i = 0; i < T && K < E; ++i) {
      std::vector<float> g(ws.gate.data() + int64_t(i) * E, ws.gate.data() + int64_t(i + 1) * E);
      std::sort(g.rbegin(), g.rend());
      margin[size_t(i)] = std::min(margin[size_t(i)], double(g[K - 1] - g[K]));
    }
  }
  return margin;
}

}  // namespace mind4::test
