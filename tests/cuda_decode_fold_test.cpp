// The folded decode chain (one row, bf16, MXFP4 experts on the int8/int16 route) against the CPU
// reference or double-precision loops: the router that norms and quantizes the experts' input
// (router_norm_group), the QKV product that norms its own input (decode_qkv_rope_norm), and the
// second expert product that adds the experts' combine into the residual
// (moe_mlp2_mf4_q8_combine; the first, which quantizes its own output at one row, is checked in
// cuda_moe_test.cpp); then the whole model with the folded chain against the chain of
// separate launches (MIND4_CUDA_FOLD_NORMS=0) and the CPU line. Fresh random inputs every run
// (the seed is printed on failure), outputs poisoned with NaN before each launch, edge shapes
// (more experts than chunks of the row and fewer, idle warps, partial tiles, several rows).
#include <gtest/gtest.h>

#ifdef MIND4_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cuda/kernels.h"
#include "cuda_test_util.h"
#include "mind4/config.h"
#include "mind4/model.h"
#include "mind4/status.h"

namespace mind4 {
namespace {

using cuda::ActType;
using namespace cuda_test;

constexpr float kFoldEps = 1e-5f;

struct CudaDecodeFoldTest : ::testing::Test, RandomInputs {
  void SetUp() override { MIND4_REQUIRE_GPU(); }
  void check_qkv_rope_norm(bool embed);
};

// The CPU line's norm of each of B rows of x [B, H].
std::vector<float> fold_cpu_norm(const std::vector<float>& x, const std::vector<float>& scale,
                                 int B, int H) {
  std::vector<float> out(x.size());
  for (int r = 0; r < B; ++r)
    cpu::rmsnorm(x.data() + size_t(r) * H, scale.data(), H, kFoldEps, out.data() + size_t(r) * H);
  return out;
}

double fold_dot(const std::vector<float>& w, int64_t n, const float* x, int K) {
  double s = 0;
  for (int k = 0; k < K; ++k) s += double(w[size_t(n) * K + k]) * x[k];
  return s;
}

TEST_F(CudaDecodeFoldTest, RouterNormGroupNormsQuantizesAndRoutes) {
  SCOPED_TRACE(seed);
  cuda::DeviceBuffer done(4);
  cuda::check(cudaMemset(done.data(), 0, 4), "test memset");
  // (B, E, K, H): gpt-oss-20b; fewer experts than 128-value chunks of the row (each block writes
  // several); more experts than chunks; the largest row; one int8 block; several rows. One row of
  // at most 32 experts takes the 8-block cluster kernel (one expert, an odd count, blocks without
  // experts, a partial chunk); 33 to 128 experts on rows up to 3072 the 16-block one
  // (gpt-oss-120b's 128, and where no cluster of 16 fits, the E-block kernel); more experts or a
  // longer row the E-block kernel, whose last block groups one row as the cluster kernels do.
  int rows_checked = 0;
  for (auto [B, E, K, H] : {std::tuple{1, 32, 4, 2880},
                            {1, 5, 3, 2880},
                            {2, 256, 8, 64},
                            {1, 32, 4, 4096},
                            {3, 7, 2, 32},
                            {4, 40, 4, 96},
                            {1, 1, 1, 32},
                            {1, 13, 2, 160},
                            {1, 33, 4, 2880},
                            {1, 128, 4, 2880},
                            {1, 77, 3, 3072},
                            {1, 64, 4, 4096},
                            {1, 129, 4, 64},
                            {1, 32, 4, 2880}}) {
    const auto x = normal(size_t(B) * H, 2.0f), scale = normal(H, 0.3f, 1.0f);
    const auto w = normal(size_t(E) * H, 1.0f / std::sqrt(float(H)));
    const auto bias = normal(E, 0.2f);
    auto d_x = upload(x), d_scale = upload(scale), d_w = upload(w), d_bias = upload(bias);
    auto d_logits = poisoned(size_t(B) * E * 4), d_e = poisoned(size_t(B) * K * 4),
         d_wt = poisoned(size_t(B) * K * 4), d_t = poisoned(size_t(B) * H * 2),
         d_q = poisoned(size_t(B) * H * 2), d_d = poisoned(size_t(B) * H / 32 * 4);
    TestGroups gr = poisoned_groups(B, K, E);
    cuda::router_norm_group(d_x.data<float>(), d_scale.data<float>(), kFoldEps, d_w.data<float>(),
                            d_bias.data<float>(), B, H, E, K, d_logits.data<float>(),
                            done.data<unsigned>(), d_e.data<int>(), d_wt.data<float>(), gr.g,
                            d_t.data(), d_q.data<int16_t>(), d_d.data<float>(), nullptr);
    const auto t = download_act(d_t, size_t(B) * H, ActType::kBF16);
    const auto q = download<int16_t>(d_q, size_t(B) * H);
    const auto d = download<float>(d_d, size_t(B) * H / 32);
    const auto experts = download<int>(d_e, size_t(B) * K);
    const auto weights = download<float>(d_wt, size_t(B) * K);
    const auto logits = download<float>(d_logits, size_t(B) * E);
    ASSERT_EQ(download<unsigned>(done, 1)[0], 0u) << "the block counter is left at 0";
    const auto xn = fold_cpu_norm(x, scale, B, H);
    // The normed row in bf16: one rounding of the CPU norm.
    EXPECT_LT(rel_error(t, std::vector<double>(xn.begin(), xn.end())), 3e-3)
        << "B=" << B << " E=" << E << " H=" << H;
    // Its int16 blocks (mlp1's input): the scale max / 32767 of the bf16 values written, and
    // every value within half a step.
    for (size_t blk = 0; blk < d.size(); ++blk) {
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(t[blk * 32 + i]));
      ASSERT_NEAR(d[blk], amax / 32767.0f, 1e-6f * amax / 32767.0f) << "block " << blk;
      for (int i = 0; i < 32; ++i)
        ASSERT_LE(std::abs(q[blk * 32 + i] * d[blk] - t[blk * 32 + i]), 0.5001f * d[blk] + 1e-30f)
            << "value " << blk * 32 + i;
    }
    for (int r = 0; r < B; ++r) {
      std::vector<float> ref_f(E);
      for (int e = 0; e < E; ++e) {
        const double ref = fold_dot(w, e, xn.data() + size_t(r) * H, H);
        ASSERT_NEAR(logits[size_t(r) * E + e], ref, 1e-4 * (1 + std::abs(ref))) << "expert " << e;
        ref_f[e] = float(ref) + bias[e];
      }
      std::vector<int> we(K);
      std::vector<float> ww(K);
      cpu::router_topk(ref_f.data(), E, K, we.data(), ww.data());
      std::vector<float> sorted = ref_f;
      std::sort(sorted.rbegin(), sorted.rend());
      if (K < E && sorted[K - 1] - sorted[K] < 1e-4f) continue;  // a near-tie may go either way
      ++rows_checked;
      for (int s = 0; s < K; ++s) {
        ASSERT_EQ(experts[size_t(r) * K + s], we[s]) << "B=" << B << " row " << r << " slot " << s;
        ASSERT_NEAR(weights[size_t(r) * K + s], ww[s], 1e-5) << "row " << r << " slot " << s;
      }
    }
    ASSERT_NO_FATAL_FAILURE(
        expect_moe_grouping(download<int>(gr.buf, size_t(2 * (E + 1) + 3 * B * K)), experts, K, E));
  }
  EXPECT_GT(rows_checked, 8);
}

ModelConfig fold_rope_config(int NH, int NKV, int D) {
  ModelConfig c;
  c.num_attention_heads = NH, c.num_key_value_heads = NKV, c.head_dim = D;
  c.rope_theta = 150000.0f, c.rope_scaling_factor = 32.0f, c.initial_context_length = 64;
  return c;
}

// The folded QKV product against the CPU's norm, product and rotation. embed: the input row is
// row `token` of a bf16 embedding table (the first layer's gather folded in), and the kernel must
// also leave that row in f32 in the (poisoned) residual.
void CudaDecodeFoldTest::check_qkv_rope_norm(bool embed) {
  SCOPED_TRACE(seed);
  const ActType t = ActType::kBF16;
  // (NH, NKV, D, K): gpt-oss-20b; a row of 5 chunks; a ragged last pass; the largest row; two
  // passes whose last group holds one chunk; 21 pairs (idle warps in the last block).
  for (auto [NH, NKV, D, K] : {std::tuple{64, 8, 64, 2880},
                               {4, 2, 16, 40},
                               {6, 1, 12, 1032},
                               {8, 2, 32, 4096},
                               {6, 1, 12, 2056},
                               {5, 1, 6, 16}}) {
    const ModelConfig c = fold_rope_config(NH, NKV, D);
    const int P = 50, S = 3, N = (NH + 2 * NKV) * D, W = NKV * D;
    std::vector<float> cos_t(size_t(P) * D / 2), sin_t(cos_t.size());
    cpu::rope_tables(c, P, cos_t.data(), sin_t.data());
    const int vocab = 37, token = int(rng() % vocab);
    const auto table = rounded(normal(size_t(vocab) * K, 3.0f), t);
    const auto x = embed ? std::vector<float>(table.begin() + size_t(token) * K,
                                              table.begin() + size_t(token + 1) * K)
                         : normal(K, 3.0f);
    const auto scale = normal(K, 0.3f, 1.0f);
    const auto w = rounded(normal(size_t(N) * K, 1.0f / std::sqrt(float(K))), t);
    const auto bias = normal(N, 0.1f);
    const std::vector<int> pos = {int(rng() % P)}, slot = {int(rng() % S)};
    auto d_x = embed ? poisoned(size_t(K) * 4) : upload(x);
    auto d_scale = upload(scale), d_w = upload(to_act(w, t));
    auto d_table = upload(to_act(table, t));
    auto d_token = upload(std::vector<int>{token});
    auto d_bias = upload(bias), d_cos = upload(cos_t), d_sin = upload(sin_t);
    auto d_pos = upload(pos), d_slot = upload(slot);
    auto d_qkv = poisoned(size_t(N) * 2);
    auto d_k = poisoned(size_t(S) * P * W * 2), d_v = poisoned(size_t(S) * P * W * 2);
    cuda::decode_qkv_rope_norm(d_x.data<float>(), d_scale.data<float>(), kFoldEps, d_w.data(),
                               d_bias.data<float>(), K, NH, NKV, D, d_cos.data<float>(),
                               d_sin.data<float>(), d_pos.data<int>(), d_slot.data<int>(),
                               d_qkv.data(), {d_k.data(), d_v.data(), P}, nullptr,
                               embed ? d_table.data() : nullptr, d_token.data<int>());
    if (embed) {
      const auto x_out = download<float>(d_x, size_t(K));
      for (int i = 0; i < K; ++i) ASSERT_EQ(x_out[i], x[i]) << "residual element " << i;
    }
    const auto q_out = download_act(d_qkv, size_t(N), t);
    const auto k = download_act(d_k, size_t(S) * P * W, t);
    const auto v = download_act(d_v, size_t(S) * P * W, t);
    // The input as the separate norm launch would write it: the CPU norm rounded to bf16.
    const auto xn = rounded(fold_cpu_norm(x, scale, 1, K), t);
    std::vector<float> row(N);
    for (int n = 0; n < N; ++n) row[n] = float(fold_dot(w, n, xn.data(), K) + bias[n]);
    cpu::rope_apply(row.data(), NH + NKV, D, cos_t.data() + size_t(pos[0]) * D / 2,
                    sin_t.data() + size_t(pos[0]) * D / 2);
    std::vector<float> q_got(q_out.begin(), q_out.begin() + NH * D), k_got, v_got;
    std::vector<double> q_want(row.begin(), row.begin() + NH * D), k_want, v_want;
    const size_t at = (size_t(slot[0]) * P + pos[0]) * W;
    for (int i = 0; i < W; ++i) {
      k_want.push_back(row[NH * D + i]), k_got.push_back(k[at + i]);
      v_want.push_back(row[(NH + NKV) * D + i]), v_got.push_back(v[at + i]);
    }
    // One bf16 rounding of each output, and of some inputs where the norm's last bit differs.
    EXPECT_LT(rel_error(q_got, q_want), 4e-3) << "NH=" << NH << " K=" << K;
    EXPECT_LT(rel_error(k_got, k_want), 4e-3) << "NH=" << NH << " K=" << K;
    EXPECT_LT(rel_error(v_got, v_want), 4e-3) << "NH=" << NH << " K=" << K;
  }
}

TEST_F(CudaDecodeFoldTest, QkvRopeNormMatchesCpuNormThenProduct) {
  check_qkv_rope_norm(false);
}

TEST_F(CudaDecodeFoldTest, QkvRopeNormGathersTheEmbeddingRowAtTheFirstLayer) {
  check_qkv_rope_norm(true);
}

TEST_F(CudaDecodeFoldTest, Mlp2CombineAddsTheWeightedExpertsToTheResidual) {
  SCOPED_TRACE(seed);
  // (B, K, E, H, I): gpt-oss-20b; several rows, one expert shared by rows likely; a partial last
  // pass over I; one int8 block per row of mlp2 (I = 32); one slot.
  for (auto [B, K, E, H, I] : {std::tuple{1, 4, 32, 2880, 2880},
                               {3, 2, 4, 64, 96},
                               {2, 3, 7, 160, 4160},
                               {1, 1, 3, 32, 32}}) {
    const int A = B * K, max_active = std::min(E, A), nb = I / 32;
    TestGroups gr = random_groups(rng, B, K, E);
    auto aq = bytes(size_t(A) * I, 0, 255);  // int8 bits: -128 .. 127
    std::vector<float> ad(size_t(A) * nb);
    for (float& v : ad) v = 0.002f + 0.01f * float(rng() % 1000) / 1000.0f;
    const auto b2 = bytes(size_t(E) * H * I / 2, 0, 255);
    const auto s2 = bytes(size_t(E) * H * I / 32, 118, 122);
    const auto bias2 = normal(size_t(E) * H, 0.5f), x0 = normal(size_t(B) * H, 2.0f);
    std::vector<float> tw(A);
    for (int r = 0; r < B; ++r) {
      float sum = 0;
      for (int s = 0; s < K; ++s) sum += tw[r * K + s] = 0.1f + float(rng() % 1000) / 1000.0f;
      for (int s = 0; s < K; ++s) tw[r * K + s] /= sum;
    }
    auto d_aq = upload(aq);
    auto d_ad = upload(ad);
    auto d_b2 = upload(b2), d_s2 = upload(s2);
    auto d_bias2 = upload(bias2), d_tw = upload(tw), d_x = upload(x0);
    auto d_y = poisoned(size_t(A) * H * 4);
    // Twice: the second call adds the combine once more.
    for (int call = 0; call < 2; ++call)
      cuda::moe_mlp2_mf4_q8_combine(d_aq.data<int8_t>(), d_ad.data<float>(), d_b2.data<uint8_t>(),
                                    d_s2.data<uint8_t>(), d_bias2.data<float>(), gr.g, max_active,
                                    H, I, d_y.data<float>(), d_tw.data<float>(), B, K,
                                    d_x.data<float>(), nullptr);
    const auto y = download<float>(d_y, size_t(A) * H);
    const auto x = download<float>(d_x, size_t(B) * H);
    const auto all = download<int>(gr.buf, size_t(2 * (E + 1) + 3 * A));
    const int* assign_at = all.data() + 2 * (E + 1) + 2 * A;
    // y of each assignment from the dequantized int8 activations, in double.
    std::vector<double> y_want(size_t(A) * H);
    std::vector<float> act(I), wrow(I);
    for (int i = 0; i < A; ++i) {
      const int e = gr.experts[i], at = assign_at[i];
      for (int j = 0; j < I; ++j)
        act[j] = float(int8_t(aq[size_t(at) * I + j])) * ad[size_t(at) * nb + j / 32];
      for (int n = 0; n < H; ++n) {
        const int64_t row = int64_t(e) * H + n;
        cpu::mf4_to_f32(b2.data() + row * nb * 16, s2.data() + row * nb, nb, wrow.data());
        double s = 0;
        for (int j = 0; j < I; ++j) s += double(wrow[j]) * act[j];
        y_want[size_t(at) * H + n] = s + bias2[row];
      }
    }
    EXPECT_LT(rel_error(y, y_want), 2e-5) << "y, B=" << B << " H=" << H << " I=" << I;
    std::vector<float> added(size_t(B) * H);
    std::vector<double> added_want(size_t(B) * H);
    for (int r = 0; r < B; ++r)
      for (int n = 0; n < H; ++n) {
        double m = 0;
        for (int s = 0; s < K; ++s)
          m += double(tw[r * K + s]) * y_want[size_t(assign_at[r * K + s]) * H + n];
        added_want[size_t(r) * H + n] = 2 * m;
        added[size_t(r) * H + n] = x[size_t(r) * H + n] - x0[size_t(r) * H + n];
      }
    EXPECT_LT(rel_error(added, added_want), 2e-5) << "combine, B=" << B << " H=" << H;
  }
}

TEST_F(CudaDecodeFoldTest, LaunchersRejectBadArguments) {
  cuda::DeviceBuffer b(1 << 16);
  const cuda::MoeGroups g{b.data<int>(), b.data<int>(), b.data<int>(), b.data<int>(),
                          b.data<int>()};
  auto expect_error = [](auto&& call, const char* name) {
    try {
      call();
      ADD_FAILURE() << name << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  // H not a multiple of 32; H past the row the registers hold.
  for (int H : {48, 4128})
    expect_error(
        [&] {
          cuda::router_norm_group(b.data<float>(), b.data<float>(), kFoldEps, b.data<float>(),
                                  b.data<float>(), 1, H, 32, 4, b.data<float>(), b.data<unsigned>(),
                                  b.data<int>(), b.data<float>(), g, b.data(), b.data<int16_t>(),
                                  b.data<float>(), nullptr);
        },
        "router_norm_group");
  // A row longer than the shared-memory copy holds.
  expect_error(
      [&] {
        cuda::decode_qkv_rope_norm(b.data<float>(), b.data<float>(), kFoldEps, b.data(),
                                   b.data<float>(), 4104, 4, 2, 16, b.data<float>(),
                                   b.data<float>(), b.data<int>(), b.data<int>(), b.data(),
                                   {b.data(), b.data(), 4}, nullptr);
      },
      "decode_qkv_rope_norm");
  // An embedding table without the token to gather.
  expect_error(
      [&] {
        cuda::decode_qkv_rope_norm(b.data<float>(), b.data<float>(), kFoldEps, b.data(),
                                   b.data<float>(), 64, 4, 2, 16, b.data<float>(), b.data<float>(),
                                   b.data<int>(), b.data<int>(), b.data(), {b.data(), b.data(), 4},
                                   nullptr, b.data(), nullptr);
      },
      "decode_qkv_rope_norm");
  expect_error(
      [&] {
        cuda::moe_mlp2_mf4_q8_combine(b.data<int8_t>(), b.data<float>(), b.data<uint8_t>(),
                                      b.data<uint8_t>(), b.data<float>(), g, 4, 64, 64,
                                      b.data<float>(), b.data<float>(), 1, 4, nullptr, nullptr);
      },
      "moe_mlp2_mf4_q8_combine");
  // The quantizing first expert product without somewhere to put its int8 blocks.
  expect_error(
      [&] {
        cuda::moe_mlp1_swiglu_mf4_q8_one_row(b.data<int16_t>(), b.data<float>(), b.data<uint8_t>(),
                                             b.data<uint8_t>(), b.data<float>(), g, 4, 64, 64, 7.0f,
                                             b.data(), nullptr, b.data<float>(), nullptr);
      },
      "moe_mlp1_swiglu_mf4_q8_one_row");
  // The L2 prefetch: no address, an address the copy engine cannot take.
  expect_error([&] { cuda::l2_prefetch(nullptr, 4096, nullptr); }, "l2_prefetch");
  expect_error([&] { cuda::l2_prefetch(b.data<char>() + 8, 4096, nullptr); }, "l2_prefetch");
}

// The whole model, decoding token by token at one row (the folded chain, replayed from a CUDA
// graph after the first steps) against the chain of separate launches and the CPU line (f32).
TEST_F(CudaDecodeFoldTest, FoldedChainMatchesSeparateLaunchesAndCpu) {
  const std::string dir = std::string(MIND4_SOURCE_DIR) + "/tests/fixtures/yarn_mxfp4_gqa";
  Config gpu_cfg;
  gpu_cfg.paths.checkpoint = dir;
  gpu_cfg.execution.backend = Backend::kCuda;
  gpu_cfg.execution.dtype = ActivationDType::kBFloat16;
  auto gpu_model = Model::load(gpu_cfg);
  Config cpu_cfg;
  cpu_cfg.paths.checkpoint = dir;
  auto cpu_model = Model::load(cpu_cfg);
  const int V = cpu_model->config().vocab_size, steps = 12;
  std::vector<int> tokens(steps);
  for (int i = 0; i < steps; ++i) tokens[i] = int(rng() % V);
  auto decode = [&](const auto& m) {
    Context ctx(m, {.context_length = steps});
    const int s = ctx.new_sequence();
    std::vector<float> out;
    for (int i = 0; i < steps; ++i) {
      ctx.append(s, std::span<const int>(&tokens[i], 1));
      ctx.process();
      auto l = ctx.logits(s);
      out.insert(out.end(), l.begin(), l.end());
    }
    return out;
  };
  const auto folded = decode(gpu_model);
  // Without programmatic launches and without the out projection's L2 prefetch: the same bits
  // (neither changes the arithmetic; with PDL the experts' second product reads the routing
  // before its wait, which must still be this layer's).
  setenv("MIND4_CUDA_PDL", "0", 1);  // read when a Context is made
  setenv("MIND4_CUDA_L2_PREFETCH", "0", 1);
  const auto plain = decode(gpu_model);
  unsetenv("MIND4_CUDA_PDL");
  unsetenv("MIND4_CUDA_L2_PREFETCH");
  ASSERT_EQ(folded.size(), plain.size());
  EXPECT_EQ(0, std::memcmp(folded.data(), plain.data(), folded.size() * sizeof(float)))
      << "the folded chain's logits change with PDL or the L2 prefetch";
  setenv("MIND4_CUDA_FOLD_NORMS", "0", 1);
  const auto separate = decode(gpu_model);
  unsetenv("MIND4_CUDA_FOLD_NORMS");
  const auto cpu = decode(cpu_model);
  double top = 0, vs_separate = 0, vs_cpu = 0, separate_vs_cpu = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_TRUE(std::isfinite(folded[i])) << "logit " << i;
    top = std::max(top, double(std::abs(cpu[i])));
    vs_separate = std::max(vs_separate, double(std::abs(folded[i] - separate[i])));
    vs_cpu = std::max(vs_cpu, double(std::abs(folded[i] - cpu[i])));
    separate_vs_cpu = std::max(separate_vs_cpu, double(std::abs(separate[i] - cpu[i])));
  }
  SCOPED_TRACE("seed " + std::to_string(seed) + ", separate launches vs CPU " +
               std::to_string(separate_vs_cpu / top) + ", folded vs separate " +
               std::to_string(vs_separate / top));
  // The chain of separate launches is the reference here. Where it misses the CPU line's bf16
  // bound (2e-2 of the largest logit, the CUDA fixture test's), router near-ties that bf16 cannot
  // resolve went another way (this small random fixture has many), and the two chains, whose
  // routers add in different orders, can split on them too (seen once in about ten runs on an
  // H100 in session 12): then neither comparison says anything.
  if (separate_vs_cpu > 2e-2 * top)
    GTEST_SKIP() << "bf16 misses the CPU line with the separate launches here (separate: "
                 << separate_vs_cpu / top << ", folded: " << vs_cpu / top << " of the top logit)";
  // The two chains differ only in the norms' and the router's order of summation.
  EXPECT_LE(vs_separate, 1e-2 * top);
  EXPECT_LE(vs_cpu, 2e-2 * top);
}

}  // namespace
}  // namespace mind4

#else  // no CUDA line in this build

TEST(CudaDecodeFold, NotCompiledIn) {
  GTEST_SKIP() << "CUDA folded decode tests skipped: this build has no CUDA line (nvcc not found "
                  "or MIND4_CUDA=OFF)";
}

#endif
