// Every training op's backward against central finite differences in double precision, on small
// random shapes, and a tiny whole model's gradients (attention with sinks, a sliding window, GQA,
// YaRN, the MoE router with the load-balancing loss, clamped SwiGLU experts, cross-entropy)
// against finite differences of its loss.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "train/model.h"
#include "train/ops.h"
#include "train/params.h"

namespace mind4::train {
namespace {

using Vec = std::vector<double>;

Vec grad_random(int n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Central differences of f at x for each index, compared with `analytic`.
void grad_expect_fd(Vec& x, const std::function<double()>& f, const Vec& analytic, const char* what,
                    double eps = 1e-6, double tol = 1e-6) {
  ASSERT_EQ(x.size(), analytic.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + eps;
    const double fp = f();
    x[i] = keep - eps;
    const double fm = f();
    x[i] = keep;
    const double fd = (fp - fm) / (2 * eps);
    EXPECT_NEAR(analytic[i], fd, tol * (1.0 + std::abs(fd))) << what << " index " << i;
  }
}

TEST(TrainOpGrad, RmsNorm) {
  std::mt19937_64 rng(1);
  const int n = 13;
  Vec x = grad_random(n, rng), g = grad_random(n, rng), w = grad_random(n, rng);
  auto f = [&] {
    Vec y(n);
    rmsnorm_fwd(x.data(), g.data(), n, y.data());
    double s = 0;
    for (int i = 0; i < n; ++i) s += y[i] * w[i];
    return s;
  };
  Vec y(n), dx(n), dg(n, 0.0);
  const double r = rmsnorm_fwd(x.data(), g.data(), n, y.data());
  rmsnorm_bwd(x.data(), g.data(), r, w.data(), n, dx.data(), dg.data());
  grad_expect_fd(x, f, dx, "dx");
  grad_expect_fd(g, f, dg, "dscale");
}

TEST(TrainOpGrad, Rope) {
  std::mt19937_64 rng(2);
  const int heads = 3, D = 8;
  Vec x = grad_random(heads * D, rng), w = grad_random(heads * D, rng);
  Vec cs = grad_random(D / 2, rng), sn = grad_random(D / 2, rng);  // scaled rotations too
  auto f = [&] {
    Vec y = x;
    rope_fwd(y.data(), heads, D, cs.data(), sn.data());
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
    return s;
  };
  Vec dx = w;
  rope_bwd(dx.data(), heads, D, cs.data(), sn.data());
  grad_expect_fd(x, f, dx, "dx");
}

// Sequence of 7 with a window of 3 (and full attention), 4 query heads sharing 2 kv heads.
void check_attention(int window) {
  std::mt19937_64 rng(3 + window);
  AttnShape a{7, 4, 2, 4, window};
  const int64_t n = a.S * a.qkv_stride(), no = int64_t(a.S) * a.NH * a.D;
  Vec qkv = grad_random(int(n), rng), sinks = grad_random(a.NH, rng), w = grad_random(int(no), rng);
  const double scale = 0.5;
  auto f = [&] {
    Vec out(no), lse(a.S * a.NH), scores(a.S);
    for (int kvh = 0; kvh < a.NKV; ++kvh)
      attention_fwd(a, kvh, qkv.data(), sinks.data(), scale, out.data(), lse.data(), scores.data());
    double s = 0;
    for (int64_t i = 0; i < no; ++i) s += out[i] * w[i];
    return s;
  };
  Vec out(no), lse(a.S * a.NH), scores(2 * a.S), dqkv(n, 0.0), dsinks(a.NH, 0.0);
  for (int kvh = 0; kvh < a.NKV; ++kvh)
    attention_fwd(a, kvh, qkv.data(), sinks.data(), scale, out.data(), lse.data(), scores.data());
  for (int kvh = 0; kvh < a.NKV; ++kvh)
    attention_bwd(a, kvh, qkv.data(), sinks.data(), scale, out.data(), lse.data(), w.data(),
                  dqkv.data(), dsinks.data(), scores.data());
  grad_expect_fd(qkv, f, dqkv, "dqkv");
  grad_expect_fd(sinks, f, dsinks, "dsinks");
}

TEST(TrainOpGrad, AttentionFullWithSinks) {
  check_attention(0);
}
TEST(TrainOpGrad, AttentionSlidingWindowWithSinks) {
  check_attention(3);
}

TEST(TrainOpGrad, ClampedSwiglu) {
  std::mt19937_64 rng(5);
  const int n = 16;
  const double limit = 1.5;
  Vec h = grad_random(2 * n, rng, 1.5), w = grad_random(n, rng);
  // Keep inputs away from the clamp kinks, where a central difference straddles two slopes.
  for (auto& v : h)
    if (std::abs(std::abs(v) - limit) < 1e-3) v += 0.01;
  auto f = [&] {
    Vec y(n);
    swiglu_fwd(h.data(), n, limit, y.data());
    double s = 0;
    for (int i = 0; i < n; ++i) s += y[i] * w[i];
    return s;
  };
  Vec dh(2 * n);
  swiglu_bwd(h.data(), n, limit, w.data(), dh.data());
  int clamped = 0;
  for (int i = 0; i < n; ++i) clamped += h[2 * i] > limit || std::abs(h[2 * i + 1]) > limit;
  EXPECT_GT(clamped, 0) << "the shape should exercise the clamp";
  grad_expect_fd(h, f, dh, "dh");
}

TEST(TrainOpGrad, RouterTopkSoftmax) {
  std::mt19937_64 rng(6);
  const int E = 6, k = 3;
  Vec logits = grad_random(E, rng), w = grad_random(k, rng);
  int experts[k];
  Vec weights(k);
  router_fwd(logits.data(), E, k, experts, weights.data());
  auto f = [&] {
    int ex[k];
    Vec wt(k);
    router_fwd(logits.data(), E, k, ex, wt.data());
    double s = 0;
    for (int i = 0; i < k; ++i) s += wt[i] * w[i];
    return s;
  };
  Vec dl(E, 0.0);
  router_bwd(experts, weights.data(), w.data(), k, dl.data());
  grad_expect_fd(logits, f, dl, "dlogits");
}

TEST(TrainOpGrad, SoftmaxAndCrossEntropy) {
  std::mt19937_64 rng(7);
  const int V = 11, target = 4;
  Vec x = grad_random(V, rng, 2.0), w = grad_random(V, rng);
  auto fs = [&] {
    Vec p(V);
    softmax_fwd(x.data(), V, p.data());
    double s = 0;
    for (int i = 0; i < V; ++i) s += p[i] * w[i];
    return s;
  };
  Vec p(V), dx(V, 0.0);
  softmax_fwd(x.data(), V, p.data());
  softmax_bwd(p.data(), w.data(), V, dx.data());
  grad_expect_fd(x, fs, dx, "softmax");
  auto fce = [&] {
    Vec y = x;
    return cross_entropy_fwd_bwd(y.data(), V, target, 1.0);
  };
  Vec g = x;
  cross_entropy_fwd_bwd(g.data(), V, target, 1.0);
  grad_expect_fd(x, fce, g, "cross-entropy");
}

// A model small enough for finite differences over many of its parameters, with every feature
// switched on: YaRN, a sliding window on layer 0, GQA, sinks, top-2 of 4 experts, a SwiGLU limit
// low enough to clamp, and the load-balancing loss.
ModelConfig grad_tiny_config() {
  ModelConfig c;
  c.hidden_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.intermediate_size = 6;
  c.vocab_size = 19;
  c.initial_context_length = 4;
  c.max_context_length = 64;
  c.sliding_window = 3;
  c.rope_theta = 100.0f;
  c.rope_scaling_factor = 4.0f;
  c.num_experts = 4;
  c.experts_per_token = 2;
  c.swiglu_limit = 0.6f;
  return c;
}

TEST(TrainModelGrad, WholeModelMatchesFiniteDifferences) {
  const ModelConfig c = grad_tiny_config();
  const ParamLayout layout = make_param_layout(c);
  ThreadPool pool(2);
  const int B = 2, S = 6;
  TrainModel<double> model(layout, B, S, 0.3f, pool);
  Vec params(layout.total);
  init_params(layout, 11, 0.4f, params.data());
  // Non-trivial norms, biases and sinks, so their gradients are not special cases.
  std::mt19937_64 rng(12);
  std::normal_distribution<double> d(0.0, 0.3);
  for (const auto& t : layout.tensors)
    if (!t.decay)
      for (int64_t i = 0; i < t.numel; ++i) params[t.offset + i] += d(rng);
  std::vector<int> tokens(B * S), targets(B * S);
  for (int i = 0; i < B * S; ++i)
    tokens[i] = int(rng() % c.vocab_size), targets[i] = int(rng() % c.vocab_size);

  const double coef = 0.3;
  Vec grads(layout.total, 0.0);
  const LossParts base = model.run(params.data(), tokens.data(), targets.data(), grads.data(), 1.0);
  EXPECT_GT(base.aux, 0.0);
  auto loss = [&] {
    LossParts l = model.run(params.data(), tokens.data(), targets.data(), nullptr, 1.0);
    return l.ce + coef * l.aux;
  };
  EXPECT_NEAR(loss(), base.ce + coef * base.aux, 1e-12);
  // A few entries of every tensor (the first, the last and some in between).
  int checked = 0;
  for (const auto& t : layout.tensors) {
    std::vector<int64_t> idx = {0, t.numel - 1};
    for (int j = 1; j <= 4; ++j) idx.push_back(t.numel * j / 5);
    for (int64_t i : idx) {
      const int64_t at = t.offset + i;
      const double keep = params[at], eps = 1e-6;
      params[at] = keep + eps;
      const double fp = loss();
      params[at] = keep - eps;
      const double fm = loss();
      params[at] = keep;
      const double fd = (fp - fm) / (2 * eps);
      EXPECT_NEAR(grads[at], fd, 1e-6 * (1.0 + std::abs(fd))) << t.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

}  // namespace
}  // namespace mind4::train
