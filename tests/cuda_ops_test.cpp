// CUDA kernels of the dense part of a block against the CPU reference (src/cpu) or a plain
// double-precision loop: fresh random inputs every run (the seed is printed on failure), outputs
// poisoned with NaN before each launch, error ||out - ref|| / ||ref||, edge shapes (1 row, odd
// counts, head sizes below a warp, windows longer and shorter than the context).
#include <gtest/gtest.h>

#include "mind4/status.h"

#ifdef MIND4_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "cpu/ops.h"
#include "cuda/kernels.h"
#include "cuda_test_util.h"

namespace mind4 {
namespace {

using cuda::ActType;
using namespace cuda_test;

struct CudaRandomTest : ::testing::Test, RandomInputs {
  void SetUp() override { MIND4_REQUIRE_GPU(); }
};

struct CudaOpsTest : CudaRandomTest, ::testing::WithParamInterface<ActType> {};

std::string act_param_name(const ::testing::TestParamInfo<ActType>& i) {
  return cuda::act_name(i.param);
}

TEST_P(CudaOpsTest, EmbeddingGather) {
  SCOPED_TRACE(seed);
  const ActType t = GetParam();
  for (auto [B, H, V] : {std::tuple{1, 64, 10}, {7, 2880, 33}, {33, 48, 211}}) {
    const std::vector<float> table = rounded(normal(size_t(V) * H), t);
    std::vector<int> tokens(B);
    for (int& k : tokens) k = int(rng() % V);
    auto d_table = upload(to_act(table, t));
    auto d_tokens = upload(tokens);
    auto d_x = poisoned(size_t(B) * H * 4);
    cuda::embedding_gather(t, d_table.data(), d_tokens.data<int>(), B, H, d_x.data<float>(),
                           nullptr);
    const auto x = download<float>(d_x, size_t(B) * H);
    for (int r = 0; r < B; ++r)
      for (int j = 0; j < H; ++j)
        ASSERT_EQ(x[size_t(r) * H + j], table[size_t(tokens[r]) * H + j]) << r << "," << j;
  }
}

TEST_P(CudaOpsTest, ResidualRmsnormAddsDeltaAndBiasThenNorms) {
  SCOPED_TRACE(seed);
  const ActType t = GetParam();
  for (auto [B, H, with_delta] : {std::tuple{1, 64, true}, {5, 2880, true}, {17, 48, false}}) {
    const auto x0 = normal(size_t(B) * H), delta = rounded(normal(size_t(B) * H), t);
    const auto bias = normal(H, 0.1f), scale = normal(H, 0.1f, 1.0f);
    auto d_x = upload(x0);
    auto d_delta = upload(to_act(delta, t));
    auto d_bias = upload(bias), d_scale = upload(scale);
    auto d_out = poisoned(size_t(B) * H * 4), d_out32 = poisoned(size_t(B) * H * 4);
    cuda::residual_rmsnorm(t, d_x.data<float>(), with_delta ? d_delta.data() : nullptr,
                           with_delta ? d_bias.data<float>() : nullptr, d_scale.data<float>(), B, H,
                           1e-5f, d_out.data(), d_out32.data<float>(), nullptr);
    const auto x = download<float>(d_x, size_t(B) * H);
    const auto out = download_act(d_out, size_t(B) * H, t);
    std::vector<double> want_x(size_t(B) * H), want_out(want_x.size());
    for (int r = 0; r < B; ++r) {
      double ss = 0;
      for (int j = 0; j < H; ++j) {
        const size_t i = size_t(r) * H + j;
        want_x[i] = double(x0[i]) + (with_delta ? double(delta[i]) + bias[j] : 0.0);
        ss += want_x[i] * want_x[i];
      }
      const double inv = 1.0 / std::sqrt(ss / H + 1e-5);
      for (int j = 0; j < H; ++j)
        want_out[size_t(r) * H + j] = want_x[size_t(r) * H + j] * inv * scale[j];
    }
    EXPECT_LT(rel_error(x, want_x), 1e-6) << "B=" << B << " H=" << H;
    EXPECT_LT(rel_error(out, want_out), t == ActType::kF32 ? 1e-5 : 5e-3) << "B=" << B;
    EXPECT_LT(rel_error(download<float>(d_out32, size_t(B) * H), want_out), 1e-5) << "B=" << B;
  }
}

TEST_P(CudaOpsTest, MoeCombineRmsnormSumsSlotsInOrder) {
  SCOPED_TRACE(seed);
  const ActType t = GetParam();
  const int B = 9, H = 96, K = 3, A = B * K;
  const auto x0 = normal(size_t(B) * H), y = normal(size_t(A) * H), w = normal(A, 0.3f, 0.3f);
  const auto scale = normal(H, 0.1f, 1.0f);
  std::vector<int> at(A);
  for (int i = 0; i < A; ++i) at[i] = (i * 7) % A;  // a permutation (7 and 27 coprime)
  auto d_x = upload(x0), d_y = upload(y), d_w = upload(w), d_scale = upload(scale);
  auto d_at = upload(at);
  auto d_out = poisoned(size_t(B) * H * 4);
  cuda::moe_combine_rmsnorm(t, d_x.data<float>(), d_y.data<float>(), d_at.data<int>(),
                            d_w.data<float>(), K, d_scale.data<float>(), B, H, 1e-5f, d_out.data(),
                            nullptr, nullptr);
  const auto x = download<float>(d_x, size_t(B) * H);
  const auto out = download_act(d_out, size_t(B) * H, t);
  std::vector<double> want_x(size_t(B) * H), want_out(want_x.size());
  for (int r = 0; r < B; ++r) {
    double ss = 0;
    for (int j = 0; j < H; ++j) {
      double m = 0;
      for (int s = 0; s < K; ++s) m += double(w[r * K + s]) * y[size_t(at[r * K + s]) * H + j];
      want_x[size_t(r) * H + j] = x0[size_t(r) * H + j] + m;
      ss += want_x[size_t(r) * H + j] * want_x[size_t(r) * H + j];
    }
    for (int j = 0; j < H; ++j)
      want_out[size_t(r) * H + j] = want_x[size_t(r) * H + j] / std::sqrt(ss / H + 1e-5) * scale[j];
  }
  EXPECT_LT(rel_error(x, want_x), 1e-6);
  EXPECT_LT(rel_error(out, want_out), t == ActType::kF32 ? 1e-5 : 5e-3);
}

ModelConfig rope_config(int NH, int NKV, int D, float factor) {
  ModelConfig c;
  c.num_attention_heads = NH, c.num_key_value_heads = NKV, c.head_dim = D;
  c.rope_theta = 10000.0f, c.rope_scaling_factor = factor, c.initial_context_length = 32;
  return c;
}

TEST_P(CudaOpsTest, QkvBiasRopeMatchesCpuAndFillsTheCache) {
  SCOPED_TRACE(seed);
  const ActType t = GetParam();
  for (auto [NH, NKV, D, B, factor] :
       {std::tuple{4, 2, 16, 5, 4.0f}, {6, 1, 12, 1, 1.0f}, {64, 8, 64, 3, 32.0f}}) {
    const ModelConfig c = rope_config(NH, NKV, D, factor);
    const int P = 40, S = 2, QKV = (NH + 2 * NKV) * D, W = NKV * D;
    std::vector<float> cos_t(size_t(P) * D / 2), sin_t(cos_t.size());
    cpu::rope_tables(c, P, cos_t.data(), sin_t.data());
    const auto qkv = rounded(normal(size_t(B) * QKV), t), bias = normal(QKV, 0.1f);
    std::vector<int> pos(B), slot(B);
    // Distinct positions: two rows of a step never share a (slot, position) cache row.
    std::vector<int> perm(P);
    for (int i = 0; i < P; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int r = 0; r < B; ++r) pos[r] = perm[r], slot[r] = r % S;
    auto d_qkv = upload(to_act(qkv, t));
    auto d_bias = upload(bias), d_cos = upload(cos_t), d_sin = upload(sin_t);
    auto d_pos = upload(pos), d_slot = upload(slot);
    auto d_k = poisoned(size_t(S) * P * W * 4), d_v = poisoned(size_t(S) * P * W * 4);
    cuda::qkv_bias_rope(t, d_qkv.data(), d_bias.data<float>(), d_cos.data<float>(),
                        d_sin.data<float>(), d_pos.data<int>(), d_slot.data<int>(), B, NH, NKV, D,
                        {d_k.data(), d_v.data(), P}, nullptr);
    const auto q_out = download_act(d_qkv, size_t(B) * QKV, t);
    const auto k = download_act(d_k, size_t(S) * P * W, t);
    const auto v = download_act(d_v, size_t(S) * P * W, t);
    std::vector<float> q_got, k_got, v_got;
    std::vector<double> q_want, k_want, v_want;
    for (int r = 0; r < B; ++r) {
      std::vector<float> row(QKV);
      for (int i = 0; i < QKV; ++i) row[i] = qkv[size_t(r) * QKV + i] + bias[i];
      cpu::rope_apply(row.data(), NH + NKV, D, cos_t.data() + size_t(pos[r]) * D / 2,
                      sin_t.data() + size_t(pos[r]) * D / 2);
      for (int i = 0; i < NH * D; ++i)
        q_want.push_back(row[i]), q_got.push_back(q_out[size_t(r) * QKV + i]);
      const size_t at = (size_t(slot[r]) * P + pos[r]) * W;
      for (int i = 0; i < W; ++i) {
        k_want.push_back(row[NH * D + i]), k_got.push_back(k[at + i]);
        v_want.push_back(row[(NH + NKV) * D + i]), v_got.push_back(v[at + i]);
      }
    }
    const double tl = t == ActType::kF32 ? 1e-6 : 5e-3;
    EXPECT_LT(rel_error(q_got, q_want), tl) << "NH=" << NH << " D=" << D;
    EXPECT_LT(rel_error(k_got, k_want), tl) << "NH=" << NH << " D=" << D;
    EXPECT_LT(rel_error(v_got, v_want), tl) << "NH=" << NH << " D=" << D;
  }
}

struct AttnCase {
  int NH, NKV, D, B, window, splits;  // splits 0: attention_splits' choice
};

TEST_P(CudaOpsTest, AttentionMatchesCpuWithSinksWindowsAndSplits) {
  SCOPED_TRACE(seed);
  const ActType t = GetParam();
  const AttnCase cases[] = {{4, 2, 16, 1, 0, 1},    {4, 2, 16, 7, 5, 1},   {6, 1, 12, 3, 0, 3},
                            {64, 8, 64, 1, 128, 0}, {64, 8, 64, 5, 0, 0},  {8, 8, 64, 2, 1000, 4},
                            {4, 1, 32, 33, 3, 1},   {64, 8, 64, 2, 0, 16}, {2, 2, 8, 1, 1, 1}};
  for (const AttnCase& ac : cases) {
    const int NH = ac.NH, NKV = ac.NKV, D = ac.D, B = ac.B, P = 300, S = 3;
    const int QKV = (NH + 2 * NKV) * D, W = NKV * D;
    const auto qkv = rounded(normal(size_t(B) * QKV), t);
    const auto kc = rounded(normal(size_t(S) * P * W), t),
               vc = rounded(normal(size_t(S) * P * W), t);
    const auto sinks = normal(NH, 1.0f);
    std::vector<int> pos(B), slot(B);
    for (int r = 0; r < B; ++r) pos[r] = r == 0 ? 0 : int(rng() % P), slot[r] = int(rng() % S);
    if (B > 1) pos[B - 1] = P - 1;
    const int splits = ac.splits ? ac.splits : cuda::attention_splits(B, NH, P, 64);
    auto d_qkv = upload(to_act(qkv, t)), d_k = upload(to_act(kc, t)), d_v = upload(to_act(vc, t));
    auto d_sinks = upload(sinks), d_pos = upload(pos), d_slot = upload(slot);
    auto d_partial = poisoned(size_t(B) * NH * splits * (D + 2) * 4);
    auto d_out = poisoned(size_t(B) * NH * D * 4);
    const float scale = 1.0f / std::sqrt(float(D));
    cuda::attention(t, d_qkv.data(), NH, NKV, D, {d_k.data(), d_v.data(), P}, d_pos.data<int>(),
                    d_slot.data<int>(), d_sinks.data<float>(), B, ac.window, scale, splits,
                    d_partial.data<float>(), d_out.data(), nullptr);
    const auto out = download_act(d_out, size_t(B) * NH * D, t);
    const auto want = attention_ref(qkv, kc, vc, sinks, NH, NKV, D, P, pos, slot, ac.window, scale);
    EXPECT_LT(rel_error(out, want), t == ActType::kF32 ? 1e-5 : 1e-2)
        << "NH=" << NH << " NKV=" << NKV << " D=" << D << " B=" << B << " window=" << ac.window
        << " splits=" << splits;
  }
}

// The tensor-core route of a prefill step: rows are positions pos0 .. pos0 + B - 1 of one slot,
// the cache already holds the keys before pos0.
TEST_P(CudaOpsTest, AttentionPrefillMatchesCpu) {
  SCOPED_TRACE(seed);
  const ActType t = GetParam();
  cuda::BlasHandle blas;
  struct Case {
    int NH, NKV, D, B, pos0, window;
  };
  for (const Case ac :
       {Case{4, 2, 16, 7, 0, 0}, Case{6, 1, 12, 1, 5, 3}, Case{64, 8, 64, 33, 20, 128},
        Case{8, 8, 64, 50, 0, 5}, Case{4, 4, 32, 17, 3, 1000}}) {
    const int NH = ac.NH, NKV = ac.NKV, D = ac.D, B = ac.B, P = 80, S = 2, slot = 1;
    const int QKV = (NH + 2 * NKV) * D, W = NKV * D;
    const auto qkv = rounded(normal(size_t(B) * QKV), t);
    const auto kc = rounded(normal(size_t(S) * P * W), t);
    const auto vc = rounded(normal(size_t(S) * P * W), t);
    const auto sinks = normal(NH, 1.0f);
    auto d_qkv = upload(to_act(qkv, t)), d_k = upload(to_act(kc, t)), d_v = upload(to_act(vc, t));
    auto d_sinks = upload(sinks);
    auto d_scores = poisoned(size_t(NH) * B * (ac.pos0 + B) * 4);
    auto d_out = poisoned(size_t(B) * NH * D * 4);
    const float scale = 1.0f / std::sqrt(float(D));
    cuda::check(cublasSetStream(blas.get(), nullptr), "cublasSetStream");
    cuda::attention_prefill(blas.get(), t, d_qkv.data(), NH, NKV, D, {d_k.data(), d_v.data(), P},
                            slot, ac.pos0, d_sinks.data<float>(), B, ac.window, scale,
                            d_scores.data<float>(), d_out.data(), nullptr);
    const auto out = download_act(d_out, size_t(B) * NH * D, t);
    const auto want = prefill_attention_ref(qkv, kc, vc, sinks, NH, NKV, D, B, P, slot, ac.pos0,
                                            ac.window, scale);
    EXPECT_LT(rel_error(out, want), t == ActType::kF32 ? 1e-5 : 1e-2)
        << "NH=" << NH << " D=" << D << " B=" << B << " pos0=" << ac.pos0
        << " window=" << ac.window;
  }
}

TEST_P(CudaOpsTest, LinearMatchesDoubleProduct) {
  SCOPED_TRACE(seed);
  const ActType t = GetParam();
  cuda::BlasHandle blas;
  for (auto [M, K, N, out_f32] :
       {std::tuple{1, 64, 96, false}, {17, 48, 211, true}, {64, 2880, 5120, false}}) {
    const auto x = rounded(normal(size_t(M) * K), t), w = rounded(normal(size_t(N) * K), t);
    auto d_x = upload(to_act(x, t)), d_w = upload(to_act(w, t));
    auto d_out = poisoned(size_t(M) * N * 4);
    cuda::linear(blas.get(), t, d_x.data(), M, K, d_w.data(), N, d_out.data(), out_f32);
    const ActType ot = out_f32 ? ActType::kF32 : t;
    const auto out = download_act(d_out, size_t(M) * N, ot);
    std::vector<double> want(size_t(M) * N);
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double s = 0;
        for (int k = 0; k < K; ++k) s += double(x[size_t(m) * K + k]) * w[size_t(n) * K + k];
        want[size_t(m) * N + n] = s;
      }
    EXPECT_LT(rel_error(out, want), ot == ActType::kF32 ? 1e-5 : 5e-3) << M << "x" << K << "x" << N;
  }
}

TEST_F(CudaRandomTest, RouterTopkSoftmaxMatchesCpuIncludingTies) {
  SCOPED_TRACE(seed);
  for (auto [B, E, K] : {std::tuple{1, 32, 4}, {13, 128, 4}, {5, 5, 3}, {3, 256, 8}}) {
    auto logits = normal(size_t(B) * E);
    for (int r = 0; r < B; r += 2)  // ties: equal logits must go to the lower index
      logits[size_t(r) * E + E - 1] = logits[size_t(r) * E];
    const auto bias = std::vector<float>(E, 0.0f);
    auto d_l = upload(logits), d_b = upload(bias);
    auto d_e = poisoned(size_t(B) * K * 4), d_w = poisoned(size_t(B) * K * 4);
    cuda::router_topk_softmax(d_l.data<float>(), d_b.data<float>(), B, E, K, d_e.data<int>(),
                              d_w.data<float>(), nullptr);
    const auto e = download<int>(d_e, size_t(B) * K);
    const auto w = download<float>(d_w, size_t(B) * K);
    for (int r = 0; r < B; ++r) {
      std::vector<int> we(K);
      std::vector<float> ww(K);
      cpu::router_topk(logits.data() + size_t(r) * E, E, K, we.data(), ww.data());
      for (int s = 0; s < K; ++s) {
        ASSERT_EQ(e[r * K + s], we[s]) << "row " << r << " slot " << s;
        ASSERT_NEAR(w[r * K + s], ww[s], 1e-6) << "row " << r << " slot " << s;
      }
    }
  }
}

TEST_F(CudaRandomTest, LaunchersRejectBadArguments) {
  try {
    cuda::router_topk_softmax(nullptr, nullptr, 1, 300, 4, nullptr, nullptr, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("router_topk_softmax"), std::string::npos) << e.what();
  }
  cuda::DeviceBuffer b(64);
  try {
    cuda::attention(ActType::kBF16, b.data(), 6, 4, 16, {b.data(), b.data(), 4}, b.data<int>(),
                    b.data<int>(), b.data<float>(), 1, 0, 1.0f, 1, nullptr, b.data(), nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("NKV"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Act, CudaOpsTest, ::testing::Values(ActType::kF32, ActType::kBF16),
                         act_param_name);

}  // namespace
}  // namespace mind4

#else  // no CUDA line in this build

TEST(CudaOps, NotCompiledIn) {
  GTEST_SKIP() << "CUDA kernel tests skipped: this build has no CUDA line (nvcc not found or "
                  "MIND4_CUDA=OFF)";
}

#endif
