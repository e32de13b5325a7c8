// The whole model on tiny random checkpoints built in memory, against a plain double-precision
// forward written below straight from the architecture notes (MODEL.md): no cache, no batching,
// no code shared with src/model. Then the Context's own promises: decode token by token equals
// prefill, sequences batched together equal each alone, and every documented error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numbers>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "mind4/model.h"
#include "mind4/status.h"
#include "model/weights.h"

namespace mind4 {
namespace {

// ------------------------------------------------------------------ tiny checkpoints
struct Spec {
  ModelConfig c;
  bool bf16_matrices = true;  // else F32
  bool mxfp4 = true;          // else BF16 experts
  unsigned seed = 1;
};

Spec yarn_mxfp4_gqa() {
  Spec s;
  ModelConfig& c = s.c;
  c.hidden_size = 64, c.num_hidden_layers = 3, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.head_dim = 16, c.intermediate_size = 64, c.vocab_size = 300;
  c.initial_context_length = 32, c.max_context_length = 256, c.sliding_window = 5;
  c.rope_theta = 10000.0f, c.rope_scaling_factor = 4.0f, c.rope_ntk_alpha = 1.0f;
  c.rope_ntk_beta = 32.0f, c.num_experts = 4, c.experts_per_token = 2, c.swiglu_limit = 7.0f;
  return s;
}

Spec plain_bf16_mqa() {
  Spec s;
  ModelConfig& c = s.c;
  c.hidden_size = 48, c.num_hidden_layers = 2, c.num_attention_heads = 6;
  c.num_key_value_heads = 1, c.head_dim = 12, c.intermediate_size = 40, c.vocab_size = 211;
  c.initial_context_length = 4096, c.max_context_length = 256, c.sliding_window = 0;
  c.rope_theta = 500.0f, c.rope_scaling_factor = 1.0f, c.num_experts = 5;
  c.experts_per_token = 3, c.swiglu_limit = 1.5f;
  s.bf16_matrices = false, s.mxfp4 = false, s.seed = 2;
  return s;
}

// Owns the bytes that the TensorViews point at.
struct Storage {
  std::vector<std::unique_ptr<std::vector<uint8_t>>> buffers;
};

class Builder {
 public:
  explicit Builder(unsigned seed) : rng_(seed), storage_(std::make_shared<Storage>()) {}

  TensorView vector(std::vector<int64_t> shape, float mean, float sd) {
    return make(DType::kF32, shape, [&](uint8_t* p, int64_t n) {
      std::normal_distribution<float> d(mean, sd);
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<float*>(p)[i] = d(rng_);
    });
  }
  TensorView matrix(std::vector<int64_t> shape, bool bf16) {
    const float sd = 1.0f / std::sqrt(float(shape.back()));
    return make(bf16 ? DType::kBF16 : DType::kF32, shape, [&](uint8_t* p, int64_t n) {
      std::normal_distribution<float> d(0.0f, sd);
      for (int64_t i = 0; i < n; ++i) {
        if (bf16)
          reinterpret_cast<uint16_t*>(p)[i] = f32_to_bf16(d(rng_));
        else
          reinterpret_cast<float*>(p)[i] = d(rng_);
      }
    });
  }
  TensorView bytes(std::vector<int64_t> shape, int lo, int hi) {
    return make(DType::kU8, shape, [&](uint8_t* p, int64_t n) {
      std::uniform_int_distribution<int> d(lo, hi);
      for (int64_t i = 0; i < n; ++i) p[i] = uint8_t(d(rng_));
    });
  }
  std::shared_ptr<void> storage() { return storage_; }

 private:
  template <typename Fill>
  TensorView make(DType dt, std::vector<int64_t> shape, Fill fill) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    auto buf = std::make_unique<std::vector<uint8_t>>(n * dtype_size(dt));
    fill(buf->data(), n);
    TensorView t;
    t.dtype = dt;
    t.shape = shape;
    t.data = buf->data();
    storage_->buffers.push_back(std::move(buf));
    return t;
  }
  std::mt19937 rng_;
  std::shared_ptr<Storage> storage_;
};

ModelWeights build(const Spec& s) {
  const ModelConfig& c = s.c;
  const int64_t H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
                NKV = c.num_key_value_heads, E = c.num_experts, I = c.intermediate_size,
                V = c.vocab_size;
  Builder b(s.seed);
  ModelWeights w;
  w.config = c;
  w.experts_mxfp4 = s.mxfp4;
  w.embedding = b.matrix({V, H}, s.bf16_matrices);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights lw;
    lw.attn_norm = b.vector({H}, 1.0f, 0.2f);
    lw.qkv_w = b.matrix({(NH + 2 * NKV) * D, H}, s.bf16_matrices);
    lw.qkv_b = b.vector({(NH + 2 * NKV) * D}, 0.0f, 0.1f);
    lw.sinks = b.vector({NH}, 0.0f, 1.0f);
    lw.out_w = b.matrix({H, NH * D}, s.bf16_matrices);
    lw.out_b = b.vector({H}, 0.0f, 0.1f);
    lw.mlp_norm = b.vector({H}, 1.0f, 0.2f);
    lw.gate_w = b.matrix({E, H}, s.bf16_matrices);
    lw.gate_b = b.vector({E}, 0.0f, 0.1f);
    if (s.mxfp4) {
      lw.mlp1_blocks = b.bytes({E, 2 * I, H / 32, 16}, 0, 255);
      lw.mlp1_scales = b.bytes({E, 2 * I, H / 32}, 121, 124);
      lw.mlp2_blocks = b.bytes({E, H, I / 32, 16}, 0, 255);
      lw.mlp2_scales = b.bytes({E, H, I / 32}, 121, 124);
    } else {
      lw.mlp1_blocks = b.matrix({E, 2 * I, H}, true);
      lw.mlp2_blocks = b.matrix({E, H, I}, true);
    }
    lw.mlp1_b = b.vector({E, 2 * I}, 0.0f, 0.1f);
    lw.mlp2_b = b.vector({E, H}, 0.0f, 0.1f);
    w.layers.push_back(lw);
  }
  w.norm = b.vector({H}, 1.0f, 0.2f);
  w.unembedding = b.matrix({V, H}, s.bf16_matrices);
  w.storage = b.storage();
  return w;
}

// ------------------------------------------------------------------ reference forward (double)
double value(const TensorView& t, int64_t i) {
  switch (t.dtype) {
    case DType::kBF16: return bf16_to_f32(t.bf16()[i]);
    case DType::kF32: return t.f32()[i];
    default: ADD_FAILURE() << "unexpected dtype"; return 0;
  }
}

// Element (e, r, j) of an expert matrix [E, rows, cols], MXFP4 decoded by the table rule.
double expert_weight(const TensorView& blocks, const TensorView& scales, bool mxfp4, int64_t e,
                     int64_t rows, int64_t cols, int64_t r, int64_t j) {
  if (!mxfp4) return value(blocks, (e * rows + r) * cols + j);
  static const double kE2M1[16] = {0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3, -4, -6};
  const int64_t row = e * rows + r;
  const uint8_t byte = blocks.u8()[row * (cols / 2) + j / 2];
  const int scale = scales.u8()[row * (cols / 32) + j / 32];
  return kE2M1[j % 2 == 0 ? byte & 15 : byte >> 4] * std::ldexp(1.0, scale - 127);
}

using Mat = std::vector<std::vector<double>>;

std::vector<double> rmsnorm(const std::vector<double>& x, const TensorView& scale) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1 / std::sqrt(ss / x.size() + 1e-5);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * r * scale.f32()[i];
  return out;
}

std::vector<double> linear(const std::vector<double>& x, const TensorView& w, int64_t rows,
                           const TensorView* bias) {
  std::vector<double> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double s = bias ? bias->f32()[r] : 0;
    for (size_t j = 0; j < x.size(); ++j) s += x[j] * value(w, r * int64_t(x.size()) + j);
    out[r] = s;
  }
  return out;
}

// Logits [T, V] of a whole sequence, every position recomputed from scratch.
Mat reference_forward(const ModelWeights& w, const std::vector<int>& tokens) {
  const ModelConfig& c = w.config;
  const int T = int(tokens.size()), H = c.hidden_size, D = c.head_dim,
            NH = c.num_attention_heads, NKV = c.num_key_value_heads, E = c.num_experts,
            I = c.intermediate_size, K = c.experts_per_token;
  // YaRN, MODEL.md step 3.
  const int half = D / 2;
  std::vector<double> inv_freq(half);
  double conc = 1;
  for (int i = 0; i < half; ++i) {
    double freq = std::pow(double(c.rope_theta), 2.0 * i / D);
    inv_freq[i] = 1 / freq;
    if (c.rope_scaling_factor > 1) {
      const double f = c.rope_scaling_factor, two_pi = 2 * std::numbers::pi;
      conc = 0.1 * std::log(f) + 1;
      double low = half * std::log(c.initial_context_length / (c.rope_ntk_beta * two_pi)) /
                   std::log(double(c.rope_theta));
      double high = half * std::log(c.initial_context_length / (c.rope_ntk_alpha * two_pi)) /
                    std::log(double(c.rope_theta));
      double mask = 1 - std::clamp((i - low) / (high - low), 0.0, 1.0);
      inv_freq[i] = 1 / (f * freq) * (1 - mask) + 1 / freq * mask;
    }
  }
  auto rope = [&](double* v, int pos) {
    for (int i = 0; i < half; ++i) {
      double cs = std::cos(pos * inv_freq[i]) * conc, sn = std::sin(pos * inv_freq[i]) * conc;
      double x1 = v[i], x2 = v[i + half];
      v[i] = x1 * cs - x2 * sn;
      v[i + half] = x2 * cs + x1 * sn;
    }
  };
  Mat x(T, std::vector<double>(H));
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < H; ++j) x[t][j] = value(w.embedding, int64_t(tokens[t]) * H + j);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    Mat q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      auto qkv = linear(rmsnorm(x[t], lw.attn_norm), lw.qkv_w, (NH + 2 * NKV) * D, &lw.qkv_b);
      q[t].assign(qkv.begin(), qkv.begin() + NH * D);
      k[t].assign(qkv.begin() + NH * D, qkv.begin() + (NH + NKV) * D);
      v[t].assign(qkv.begin() + (NH + NKV) * D, qkv.end());
      for (int h = 0; h < NH; ++h) rope(&q[t][h * D], t);
      for (int h = 0; h < NKV; ++h) rope(&k[t][h * D], t);
    }
    for (int t = 0; t < T; ++t) {
      std::vector<double> attn(NH * D, 0.0);
      for (int h = 0; h < NH; ++h) {
        const int g = h / (NH / NKV);
        const bool windowed = c.sliding_window > 0 && l % 2 == 0;
        std::vector<double> score(t + 1, -INFINITY);
        double m = lw.sinks.f32()[h];
        for (int j = 0; j <= t; ++j) {
          if (windowed && !(t - c.sliding_window < j)) continue;
          double s = 0;
          for (int d = 0; d < D; ++d) s += q[t][h * D + d] * k[j][g * D + d];
          score[j] = s / std::sqrt(double(D));
          m = std::max(m, score[j]);
        }
        double den = std::exp(lw.sinks.f32()[h] - m);
        for (int j = 0; j <= t; ++j) den += std::exp(score[j] - m);
        for (int j = 0; j <= t; ++j)
          for (int d = 0; d < D; ++d) attn[h * D + d] += std::exp(score[j] - m) / den * v[j][g * D + d];
      }
      auto o = linear(attn, lw.out_w, H, &lw.out_b);
      for (int j = 0; j < H; ++j) x[t][j] += o[j];
    }
    for (int t = 0; t < T; ++t) {
      auto tn = rmsnorm(x[t], lw.mlp_norm);
      auto g = linear(tn, lw.gate_w, E, &lw.gate_b);
      std::vector<int> order(E);
      for (int e = 0; e < E; ++e) order[e] = e;
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return g[a] > g[b]; });
      double den = 0;
      for (int s = 0; s < K; ++s) den += std::exp(g[order[s]] - g[order[0]]);
      std::vector<double> sum(H, 0.0);
      for (int s = 0; s < K; ++s) {
        const int e = order[s];
        const double weight = std::exp(g[e] - g[order[0]]) / den;
        std::vector<double> a(I);
        for (int i = 0; i < I; ++i) {
          double h2[2];
          for (int p = 0; p < 2; ++p) {
            int r = 2 * i + p;
            double acc = lw.mlp1_b.f32()[e * 2 * I + r];
            for (int j = 0; j < H; ++j)
              acc += tn[j] * expert_weight(lw.mlp1_blocks, lw.mlp1_scales, w.experts_mxfp4, e,
                                           2 * I, H, r, j);
            h2[p] = acc;
          }
          const double lim = c.swiglu_limit;
          double gate = std::min(h2[0], lim), lin = std::clamp(h2[1], -lim, lim);
          a[i] = gate / (1 + std::exp(-1.702 * gate)) * (lin + 1);
        }
        for (int r = 0; r < H; ++r) {
          double acc = lw.mlp2_b.f32()[e * H + r];
          for (int i = 0; i < I; ++i)
            acc += a[i] * expert_weight(lw.mlp2_blocks, lw.mlp2_scales, w.experts_mxfp4, e, H, I,
                                        r, i);
          sum[r] += weight * acc;
        }
      }
      for (int j = 0; j < H; ++j) x[t][j] += sum[j];
    }
  }
  Mat logits(T);
  for (int t = 0; t < T; ++t)
    logits[t] = linear(rmsnorm(x[t], w.norm), w.unembedding, c.vocab_size, nullptr);
  return logits;
}

std::vector<int> random_tokens(int n, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int> t(n);
  for (int& v : t) v = int(rng() % vocab);
  return t;
}

// max |a - b| over max |b|.
double relative_max_error(std::span<const float> got, const std::vector<double>& ref) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    err = std::max(err, std::abs(got[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return err / scale;
}

// ------------------------------------------------------------------ tests
class ModelForward : public ::testing::TestWithParam<int> {
 protected:
  Spec spec() const { return GetParam() == 0 ? yarn_mxfp4_gqa() : plain_bf16_mqa(); }
};

TEST_P(ModelForward, PrefillMatchesDoublePrecisionReference) {
  const Spec s = spec();
  auto model = Model::from_weights(build(s));
  const auto tokens = random_tokens(19, s.c.vocab_size, 7);  // longer than the window
  const Mat ref = reference_forward(model->weights(), tokens);
  Context ctx(model, {.context_length = 64, .max_sequences = 1, .max_batch_tokens = 8,
                      .keep_all_logits = true});
  const int seq = ctx.new_sequence();
  ctx.append(seq, tokens);
  ctx.process();
  const int V = s.c.vocab_size;
  auto all = ctx.all_logits(seq);
  ASSERT_EQ(all.size(), tokens.size() * V);
  for (size_t t = 0; t < tokens.size(); ++t)
    EXPECT_LT(relative_max_error(all.subspan(t * V, V), ref[t]), 2e-5) << "position " << t;
  EXPECT_LT(relative_max_error(ctx.logits(seq), ref.back()), 2e-5);
  EXPECT_EQ(ctx.processed(seq), int(tokens.size()));
}

TEST_P(ModelForward, DecodeTokenByTokenEqualsPrefill) {
  const Spec s = spec();
  auto model = Model::from_weights(build(s));
  const auto tokens = random_tokens(17, s.c.vocab_size, 11);
  Context prefill(model, {.context_length = 32, .keep_all_logits = true});
  const int a = prefill.new_sequence();
  prefill.append(a, tokens);
  prefill.process();
  const auto all = prefill.all_logits(a);
  Context decode(model, {.context_length = 32});
  const int b = decode.new_sequence();
  const int V = s.c.vocab_size;
  for (size_t t = 0; t < tokens.size(); ++t) {
    decode.append(b, std::span<const int>(&tokens[t], 1));
    decode.process();
    auto step = decode.logits(b);
    std::vector<double> want(all.begin() + t * V, all.begin() + (t + 1) * V);
    EXPECT_LT(relative_max_error(step, want), 1e-5) << "position " << t;
  }
}

TEST_P(ModelForward, BatchedSequencesEqualEachAlone) {
  const Spec s = spec();
  auto model = Model::from_weights(build(s));
  const int V = s.c.vocab_size;
  const std::vector<std::vector<int>> prompts = {random_tokens(9, V, 1), random_tokens(1, V, 2),
                                                 random_tokens(14, V, 3)};
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) {
    Context ctx(model, {.context_length = 40});
    int seq = ctx.new_sequence();
    ctx.append(seq, p);
    ctx.process();
    auto l = ctx.logits(seq);
    alone.emplace_back(l.begin(), l.end());
  }
  // Steps of 5 rows cut across sequence boundaries, so rows of different sequences share them.
  Context ctx(model, {.context_length = 40, .max_sequences = 4, .max_batch_tokens = 5});
  std::vector<int> ids;
  for (const auto& p : prompts) {
    ids.push_back(ctx.new_sequence());
    ctx.append(ids.back(), p);
  }
  ctx.process();
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<double> want(alone[i].begin(), alone[i].end());
    EXPECT_LT(relative_max_error(ctx.logits(ids[i]), want), 1e-5) << "sequence " << i;
    EXPECT_EQ(std::vector<int>(ctx.tokens(ids[i]).begin(), ctx.tokens(ids[i]).end()), prompts[i]);
  }
  // Continue two of them by one token each in one step; compare with the reference.
  const int extra = 5;
  ctx.append(ids[0], std::span<const int>(&extra, 1));
  ctx.append(ids[2], std::span<const int>(&extra, 1));
  ctx.process();
  for (int i : {0, 2}) {
    auto full = prompts[i];
    full.push_back(extra);
    const Mat ref = reference_forward(model->weights(), full);
    EXPECT_LT(relative_max_error(ctx.logits(ids[i]), ref.back()), 2e-5) << "sequence " << i;
  }
  // A released slot is reused by a fresh sequence that starts from position 0.
  ctx.release(ids[1]);
  const int fresh = ctx.new_sequence();
  ctx.append(fresh, prompts[1]);
  ctx.process();
  std::vector<double> want(alone[1].begin(), alone[1].end());
  EXPECT_LT(relative_max_error(ctx.logits(fresh), want), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Tiny, ModelForward, ::testing::Values(0, 1),
                         [](const auto& info) {
                           return info.param == 0 ? "YarnMxfp4Gqa" : "PlainBf16Mqa";
                         });

template <typename Fn>
void expect_error(Fn fn, Status status, std::vector<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
        << "message '" << e.what() << "' lacks '" << p << "'";
  }
}

TEST(ModelErrors, ContextOverflowNamesSequenceLengthAndLimit) {
  auto model = Model::from_weights(build(yarn_mxfp4_gqa()));
  Context ctx(model, {.context_length = 10, .max_sequences = 2});
  ctx.new_sequence();
  const int seq = ctx.new_sequence();
  ctx.append(seq, random_tokens(8, 300, 1));
  expect_error([&] { ctx.append(seq, random_tokens(3, 300, 2)); }, Status::kContextOverflow,
               {"sequence " + std::to_string(seq), "has 8 tokens", "appending 3",
                "context_length 10"});
  EXPECT_EQ(ctx.tokens(seq).size(), 8u);  // nothing queued by the failed call
  ctx.append(seq, random_tokens(2, 300, 3));  // exactly full is fine
  ctx.process();
  EXPECT_EQ(ctx.processed(seq), 10);
}

TEST(ModelErrors, TokensOutsideTheVocabularyAreRejected) {
  auto model = Model::from_weights(build(yarn_mxfp4_gqa()));
  Context ctx(model, {.context_length = 10});
  const int seq = ctx.new_sequence();
  const std::vector<int> big = {1, 300}, negative = {-1};
  expect_error([&] { ctx.append(seq, big); }, Status::kTokenOutOfRange,
               {"token 300", "index 1", "[0, 300)"});
  expect_error([&] { ctx.append(seq, negative); }, Status::kTokenOutOfRange, {"token -1"});
  EXPECT_TRUE(ctx.tokens(seq).empty());
}

TEST(ModelErrors, SequenceLifecycleErrors) {
  auto model = Model::from_weights(build(yarn_mxfp4_gqa()));
  Context ctx(model, {.context_length = 10, .max_sequences = 1});
  const int seq = ctx.new_sequence();
  expect_error([&] { ctx.new_sequence(); }, Status::kOutOfMemory, {"max_sequences", "1"});
  expect_error([&] { (void)ctx.logits(seq); }, Status::kInvalidArgument, {"not been processed"});
  expect_error([&] { (void)ctx.all_logits(seq); }, Status::kInvalidArgument, {"keep_all_logits"});
  ctx.release(seq);
  expect_error([&] { ctx.append(seq, std::vector<int>{1}); }, Status::kInvalidArgument,
               {"sequence " + std::to_string(seq), "released"});
  expect_error([&] { ctx.release(12345); }, Status::kInvalidArgument, {"12345"});
  const int again = ctx.new_sequence();
  EXPECT_NE(again, seq);  // a stale id never aliases the new sequence
  ctx.process();  // nothing queued: a no-op
}

TEST(ModelErrors, BadOptionsAndBadWeightsAreNamed) {
  auto model = Model::from_weights(build(yarn_mxfp4_gqa()));
  expect_error([&] { Context(model, {.context_length = 257}); }, Status::kInvalidArgument,
               {"context_length = 257", "max_context_length = 256"});
  expect_error([&] { Context(model, {.context_length = 16, .max_sequences = 0}); },
               Status::kInvalidArgument,
               {"max_sequences"});
  ModelWeights w = build(yarn_mxfp4_gqa());
  w.layers[1].qkv_w.shape[0] += 1;
  expect_error([&] { Model::from_weights(std::move(w)); }, Status::kShapeMismatch,
               {"block.1.attn.qkv.weight", "[129, 64]", "[128, 64]"});
  ModelWeights w2 = build(yarn_mxfp4_gqa());
  w2.layers[2].sinks = TensorView{};
  expect_error([&] { Model::from_weights(std::move(w2)); }, Status::kMissingTensor,
               {"block.2.attn.sinks"});
  ModelWeights w3 = build(yarn_mxfp4_gqa());
  w3.config.num_key_value_heads = 3;
  expect_error([&] { Model::from_weights(std::move(w3)); }, Status::kInvalidConfig,
               {"num_key_value_heads = 3"});
  ModelWeights w4 = build(yarn_mxfp4_gqa());
  w4.layers[0].mlp1_scales.dtype = DType::kBF16;
  expect_error([&] { Model::from_weights(std::move(w4)); }, Status::kShapeMismatch,
               {"block.0.mlp.mlp1_weight.scales", "U8"});
}

}  // namespace
}  // namespace mind4
