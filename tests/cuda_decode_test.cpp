// The fused decode chain's kernels against the CPU reference (src/cpu) or double-precision loops:
// the bf16 GEMVs with their epilogues (QKV + bias + RoPE + KV cache store; out projection into
// the residual stream), the one-launch router (product + top-k + softmax + grouping), and a
// layer's chain launched with programmatic dependent launch inside a CUDA graph (identical to
// plain launches). Fresh random inputs every run (the seed is printed on failure), outputs
// poisoned with NaN before each launch, edge shapes (1 and 4 rows, rows that are not a multiple
// of the chunk, odd output counts).
#include <gtest/gtest.h>

#ifdef MIND4_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "cpu/ops.h"
#include "cuda/kernels.h"
#include "cuda/pdl.h"
#include "cuda_test_util.h"
#include "mind4/config.h"
#include "mind4/status.h"

namespace mind4 {
namespace {

using cuda::ActType;
using namespace cuda_test;

struct CudaDecodeTest : ::testing::Test, RandomInputs {
  void SetUp() override { MIND4_REQUIRE_GPU(); }
};

// Row n of w [*, K] times row r of x [*, K], in double.
double decode_dot(const std::vector<float>& w, int n, const std::vector<float>& x, int r, int K) {
  double s = 0;
  for (int k = 0; k < K; ++k) s += double(w[size_t(n) * K + k]) * x[size_t(r) * K + k];
  return s;
}

ModelConfig decode_rope_config(int NH, int NKV, int D) {
  ModelConfig c;
  c.num_attention_heads = NH, c.num_key_value_heads = NKV, c.head_dim = D;
  c.rope_theta = 150000.0f, c.rope_scaling_factor = 32.0f, c.initial_context_length = 64;
  return c;
}

TEST_F(CudaDecodeTest, QkvRopeMatchesCpuAndFillsTheCache) {
  SCOPED_TRACE(seed);
  const ActType t = ActType::kBF16;
  // (NH, NKV, D, K, B): gpt-oss-20b; chunks that do not fill the last pass; a head below a warp.
  for (auto [NH, NKV, D, K, B] : {std::tuple{64, 8, 64, 2880, 1},
                                  {64, 8, 64, 2880, 4},
                                  {4, 2, 16, 40, 3},
                                  {6, 1, 12, 1032, 2}}) {
    const ModelConfig c = decode_rope_config(NH, NKV, D);
    const int P = 50, S = 3, N = (NH + 2 * NKV) * D, W = NKV * D;
    std::vector<float> cos_t(size_t(P) * D / 2), sin_t(cos_t.size());
    cpu::rope_tables(c, P, cos_t.data(), sin_t.data());
    const auto x = rounded(normal(size_t(B) * K), t);
    const auto w = rounded(normal(size_t(N) * K, 1.0f / std::sqrt(float(K))), t);
    const auto bias = normal(N, 0.1f);
    std::vector<int> pos(B), slot(B);
    for (int r = 0; r < B; ++r) pos[r] = (r * 17 + 5) % P, slot[r] = r % S;
    auto d_x = upload(to_act(x, t)), d_w = upload(to_act(w, t));
    auto d_bias = upload(bias), d_cos = upload(cos_t), d_sin = upload(sin_t);
    auto d_pos = upload(pos), d_slot = upload(slot);
    auto d_qkv = poisoned(size_t(B) * N * 2);
    auto d_k = poisoned(size_t(S) * P * W * 2), d_v = poisoned(size_t(S) * P * W * 2);
    cuda::decode_qkv_rope(d_x.data(), d_w.data(), d_bias.data<float>(), B, K, NH, NKV, D,
                          d_cos.data<float>(), d_sin.data<float>(), d_pos.data<int>(),
                          d_slot.data<int>(), d_qkv.data(), {d_k.data(), d_v.data(), P}, nullptr);
    const auto q_out = download_act(d_qkv, size_t(B) * N, t);
    const auto k = download_act(d_k, size_t(S) * P * W, t);
    const auto v = download_act(d_v, size_t(S) * P * W, t);
    std::vector<float> q_got, k_got, v_got;
    std::vector<double> q_want, k_want, v_want;
    for (int r = 0; r < B; ++r) {
      std::vector<float> row(N);
      for (int n = 0; n < N; ++n) row[n] = float(decode_dot(w, n, x, r, K) + bias[n]);
      cpu::rope_apply(row.data(), NH + NKV, D, cos_t.data() + size_t(pos[r]) * D / 2,
                      sin_t.data() + size_t(pos[r]) * D / 2);
      for (int i = 0; i < NH * D; ++i)
        q_want.push_back(row[i]), q_got.push_back(q_out[size_t(r) * N + i]);
      const size_t at = (size_t(slot[r]) * P + pos[r]) * W;
      for (int i = 0; i < W; ++i) {
        k_want.push_back(row[NH * D + i]), k_got.push_back(k[at + i]);
        v_want.push_back(row[(NH + NKV) * D + i]), v_got.push_back(v[at + i]);
      }
    }
    // One bf16 rounding of each output (2^-9 relative at most).
    EXPECT_LT(rel_error(q_got, q_want), 3e-3) << "NH=" << NH << " K=" << K << " B=" << B;
    EXPECT_LT(rel_error(k_got, k_want), 3e-3) << "NH=" << NH << " K=" << K << " B=" << B;
    EXPECT_LT(rel_error(v_got, v_want), 3e-3) << "NH=" << NH << " K=" << K << " B=" << B;
  }
}

TEST_F(CudaDecodeTest, LinearResidualAddsProductAndBiasAndLinearStoresIt) {
  SCOPED_TRACE(seed);
  const ActType t = ActType::kBF16;
  // (N, K, B, bias): the out projection of gpt-oss-20b; odd N; K of 3 chunks; no bias; one row
  // of a 201,088 x 2880 unembedding's shape cut to 20,011 rows.
  for (auto [N, K, B, with_bias] : {std::tuple{2880, 4096, 1, true},
                                    {20011, 2880, 1, false},
                                    {2880, 4096, 4, true},
                                    {37, 24, 2, true},
                                    {130, 1288, 3, false}}) {
    const auto x = rounded(normal(size_t(B) * K), t);
    const auto w = rounded(normal(size_t(N) * K, 1.0f / std::sqrt(float(K))), t);
    const auto bias = normal(N, 0.5f), resid = normal(size_t(B) * N, 2.0f);
    auto d_x = upload(to_act(x, t)), d_w = upload(to_act(w, t));
    auto d_bias = upload(bias), d_resid = upload(resid);
    cuda::decode_linear_residual(d_x.data(), d_w.data(), with_bias ? d_bias.data<float>() : nullptr,
                                 B, K, N, d_resid.data<float>(), nullptr);
    const auto got = download<float>(d_resid, size_t(B) * N);
    std::vector<double> want(size_t(B) * N);
    for (int r = 0; r < B; ++r)
      for (int n = 0; n < N; ++n)
        want[size_t(r) * N + n] =
            resid[size_t(r) * N + n] + decode_dot(w, n, x, r, K) + (with_bias ? bias[n] : 0.0f);
    EXPECT_LT(rel_error(got, want), 1e-5) << "N=" << N << " K=" << K << " B=" << B;
    // decode_linear: the product alone, stored (the unembedding of one row).
    auto d_out = poisoned(size_t(B) * N * 4);
    cuda::decode_linear(d_x.data(), d_w.data(), B, K, N, d_out.data<float>(), nullptr);
    const auto stored = download<float>(d_out, size_t(B) * N);
    for (int r = 0; r < B; ++r)
      for (int n = 0; n < N; ++n) want[size_t(r) * N + n] = decode_dot(w, n, x, r, K);
    EXPECT_LT(rel_error(stored, want), 1e-5) << "stored, N=" << N << " K=" << K << " B=" << B;
  }
}

TEST_F(CudaDecodeTest, LaunchersRejectBadArguments) {
  cuda::DeviceBuffer b(1024);
  try {
    cuda::decode_linear_residual(b.data(), b.data(), nullptr, 5, 64, 8, b.data<float>(), nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("decode_linear_residual"), std::string::npos) << e.what();
  }
  try {
    cuda::router_group(b.data<float>(), b.data<float>(), b.data<float>(), 1, 64, 300, 4,
                       b.data<float>(), b.data<unsigned>(), b.data<int>(), b.data<float>(),
                       {b.data<int>(), b.data<int>(), b.data<int>(), b.data<int>(), b.data<int>()},
                       nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("router_group"), std::string::npos) << e.what();
  }
}

TEST_F(CudaDecodeTest, RouterGroupMatchesCpuTopkAndGroups) {
  SCOPED_TRACE(seed);
  cuda::DeviceBuffer done(4);
  cuda::check(cudaMemset(done.data(), 0, 4), "test memset");
  // (B, E, K, H): gpt-oss-20b at 1 and 64 rows; a small odd case; 256 experts; H past the
  // kernel's prefetched part (4096 values); one row with fewer than 32 experts and with K = E
  // (the one-warp grouping of a single row).
  int rows_checked = 0;
  for (auto [B, E, K, H] : {std::tuple{1, 32, 4, 2880},
                            {64, 32, 4, 2880},
                            {5, 5, 3, 36},
                            {3, 256, 8, 64},
                            {7, 128, 4, 4352},
                            {1, 32, 4, 2880},
                            {1, 5, 3, 36},
                            {1, 20, 20, 64},
                            {1, 64, 4, 64}}) {
    const auto x = normal(size_t(B) * H), w = normal(size_t(E) * H, 1.0f / std::sqrt(float(H)));
    const auto bias = normal(E, 0.2f);
    auto d_x = upload(x), d_w = upload(w), d_bias = upload(bias);
    auto d_logits = poisoned(size_t(B) * E * 4), d_e = poisoned(size_t(B) * K * 4),
         d_wt = poisoned(size_t(B) * K * 4);
    TestGroups gr = poisoned_groups(B, K, E);
    cuda::router_group(d_x.data<float>(), d_w.data<float>(), d_bias.data<float>(), B, H, E, K,
                       d_logits.data<float>(), done.data<unsigned>(), d_e.data<int>(),
                       d_wt.data<float>(), gr.g, nullptr);
    const auto experts = download<int>(d_e, size_t(B) * K);
    const auto weights = download<float>(d_wt, size_t(B) * K);
    const auto logits = download<float>(d_logits, size_t(B) * E);
    ASSERT_EQ(download<unsigned>(done, 1)[0], 0u) << "the block counter is left at 0";
    for (int r = 0; r < B; ++r) {
      std::vector<double> ref(E);
      std::vector<float> ref_f(E);
      for (int e = 0; e < E; ++e) {
        ref[e] = decode_dot(w, e, x, r, H);
        ASSERT_NEAR(logits[size_t(r) * E + e], ref[e], 1e-4 * (1 + std::abs(ref[e])));
        ref_f[e] = float(ref[e]) + bias[e];
      }
      std::vector<int> we(K);
      std::vector<float> ww(K);
      cpu::router_topk(ref_f.data(), E, K, we.data(), ww.data());
      // A row whose K-th and (K+1)-th logits are closer than the f32 dot's rounding may pick
      // either: only rows with a clear boundary are compared.
      std::vector<float> sorted = ref_f;
      std::sort(sorted.rbegin(), sorted.rend());
      if (K < E && sorted[K - 1] - sorted[K] < 1e-4f) continue;
      ++rows_checked;
      for (int s = 0; s < K; ++s) {
        ASSERT_EQ(experts[size_t(r) * K + s], we[s]) << "B=" << B << " row " << r << " slot " << s;
        ASSERT_NEAR(weights[size_t(r) * K + s], ww[s], 1e-5) << "row " << r << " slot " << s;
      }
    }
    // The grouping, as moe_group's test checks it.
    ASSERT_NO_FATAL_FAILURE(
        expect_moe_grouping(download<int>(gr.buf, size_t(2 * (E + 1) + 3 * B * K)), experts, K, E));
  }
  EXPECT_GT(rows_checked, 60);
}

// One layer's decode chain after attention (out projection into the residual, norm, router,
// experts, combine + next norm) captured in a CUDA graph with programmatic dependent launches
// (the backend's default; the kernels without PDL support in between take ordinary edges),
// replayed several times with fresh inputs: the same bits as plain launches on a stream.
TEST_F(CudaDecodeTest, PdlChainInAGraphMatchesPlainLaunches) {
  SCOPED_TRACE(seed);
  const ActType t = ActType::kBF16;
  const int B = 1, K = 4, E = 32, H = 2880, I = 2880, NHD = 4096, A = B * K;
  const auto w_out = rounded(normal(size_t(H) * NHD, 1.0f / 64.0f), t);
  const auto b_out = normal(H, 0.1f), norm1 = normal(H, 0.1f), norm2 = normal(H, 0.1f);
  const auto gate_w = normal(size_t(E) * H, 1.0f / 50.0f), gate_b = normal(E, 0.1f);
  const auto b1 = bytes(size_t(E) * 2 * I * H / 2, 0, 255),
             s1 = bytes(size_t(E) * 2 * I * H / 32, 118, 122);
  const auto b2 = bytes(size_t(E) * H * I / 2, 0, 255),
             s2 = bytes(size_t(E) * H * I / 32, 118, 122);
  const auto bias1 = normal(size_t(E) * 2 * I, 0.5f), bias2 = normal(size_t(E) * H, 0.5f);
  auto d_wout = upload(to_act(w_out, t)), d_bout = upload(b_out), d_n1 = upload(norm1),
       d_n2 = upload(norm2), d_gw = upload(gate_w), d_gb = upload(gate_b);
  auto d_b1 = upload(b1), d_s1 = upload(s1), d_b2 = upload(b2), d_s2 = upload(s2);
  auto d_bias1 = upload(bias1), d_bias2 = upload(bias2);
  cuda::DeviceBuffer attn(size_t(B) * NHD * 2), x(size_t(B) * H * 4), tb(size_t(B) * H * 2),
      t32(size_t(B) * H * 4), logits(size_t(B) * E * 4), done(4), topk_e(A * 4), topk_w(A * 4),
      act(size_t(A) * I * 2), y(size_t(A) * H * 4), xq(size_t(B) * H), xd(size_t(B) * H / 32 * 4),
      aq(size_t(A) * I), ad(size_t(A) * I / 32 * 4);
  cuda::check(cudaMemset(done.data(), 0, 4), "test memset");
  TestGroups gr = poisoned_groups(B, K, E);
  cudaStream_t s = nullptr;
  cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "test stream");
  auto chain = [&] {
    cuda::decode_linear_residual(attn.data(), d_wout.data(), d_bout.data<float>(), B, NHD, H,
                                 x.data<float>(), s);
    cuda::residual_rmsnorm(t, x.data<float>(), nullptr, nullptr, d_n1.data<float>(), B, H, 1e-5f,
                           tb.data(), t32.data<float>(), s);
    cuda::router_group(t32.data<float>(), d_gw.data<float>(), d_gb.data<float>(), B, H, E, K,
                       logits.data<float>(), done.data<unsigned>(), topk_e.data<int>(),
                       topk_w.data<float>(), gr.g, s);
    cuda::quantize_q8_32(t, tb.data(), B, H, xq.data<int8_t>(), xd.data<float>(), s);
    cuda::moe_mlp1_swiglu_mf4_q8(t, xq.data<int8_t>(), xd.data<float>(), d_b1.data<uint8_t>(),
                                 d_s1.data<uint8_t>(), d_bias1.data<float>(), gr.g, std::min(E, A),
                                 1, H, I, 7.0f, act.data(), s);
    cuda::quantize_q8_32(t, act.data(), A, I, aq.data<int8_t>(), ad.data<float>(), s);
    cuda::moe_mlp2_mf4_q8(aq.data<int8_t>(), ad.data<float>(), d_b2.data<uint8_t>(),
                          d_s2.data<uint8_t>(), d_bias2.data<float>(), gr.g, std::min(E, A), 1, H,
                          I, y.data<float>(), s);
    cuda::moe_combine_rmsnorm(t, x.data<float>(), y.data<float>(), gr.g.assign_at,
                              topk_w.data<float>(), K, d_n2.data<float>(), B, H, 1e-5f, tb.data(),
                              nullptr, s);
  };
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  {
    const cuda::PdlScope pdl(true);
    cuda::check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "test capture");
    chain();
    cuda::check(cudaStreamEndCapture(s, &graph), "test capture");
  }
  cuda::check(cudaGraphInstantiate(&exec, graph, 0), "test graph instantiate");
  for (int rep = 0; rep < 3; ++rep) {
    const auto a0 = rounded(normal(size_t(B) * NHD), t), x0 = normal(size_t(B) * H, 3.0f);
    const auto a_bits = to_act(a0, t);
    auto run = [&](bool graph_run) {
      cuda::check(cudaMemcpy(attn.data(), a_bits.data(), a_bits.size(), cudaMemcpyHostToDevice),
                  "test upload");
      cuda::check(cudaMemcpy(x.data(), x0.data(), x0.size() * 4, cudaMemcpyHostToDevice),
                  "test upload");
      cuda::check(cudaMemset(tb.data(), 0xff, size_t(B) * H * 2), "test poison");
      cuda::check(cudaMemset(y.data(), 0xff, size_t(A) * H * 4), "test poison");
      if (graph_run)
        cuda::check(cudaGraphLaunch(exec, s), "test graph launch");
      else
        chain();
      cuda::check(cudaStreamSynchronize(s), "test chain");
      return std::make_pair(download<float>(x, size_t(B) * H),
                            download<uint16_t>(tb, size_t(B) * H));
    };
    const auto plain = run(false), replay = run(true);
    ASSERT_EQ(std::memcmp(plain.first.data(), replay.first.data(), plain.first.size() * 4), 0)
        << "residual, replay " << rep;
    ASSERT_EQ(std::memcmp(plain.second.data(), replay.second.data(), plain.second.size() * 2), 0)
        << "normed output, replay " << rep;
    for (float v : plain.first) ASSERT_TRUE(std::isfinite(v));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

// stream_read (the floor the decode benchmarks compare against) reads every 16-byte word exactly
// once: the XOR of all words, which a missed or repeated word would change, matches the host's,
// from sizes below one round of the grid to several; bad ranges are refused by name.
TEST_F(CudaDecodeTest, StreamReadReadsEveryWordOnce) {
  SCOPED_TRACE(seed);
  for (size_t bytes :
       {size_t(16), size_t(48), size_t(4096) + 16, size_t(3) << 20, (size_t(37) << 20) + 4080}) {
    std::vector<uint32_t> words(bytes / 4);
    for (auto& w : words) w = uint32_t(rng());
    uint32_t want = 0;
    for (uint32_t w : words) want ^= w;
    auto d = upload(words);
    const size_t sink_words = size_t(cuda::stream_read_sink_words());
    auto sink = upload(std::vector<uint32_t>(sink_words, 0u));
    cuda::stream_read(d.data(), bytes, sink.data<unsigned>(), nullptr);
    uint32_t got = 0;
    for (uint32_t w : download<uint32_t>(sink, sink_words)) got ^= w;
    EXPECT_EQ(got, want) << bytes << " bytes";
  }
  cuda::DeviceBuffer b(1024);
  for (auto [offset, bytes] : {std::pair{size_t(4), size_t(64)}, {size_t(0), size_t(40)}}) {
    try {
      cuda::stream_read(b.data<char>() + offset, bytes, b.data<unsigned>(), nullptr);
      ADD_FAILURE() << "a range at +" << offset << " of " << bytes << " bytes was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("stream_read"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace mind4

#else  // no CUDA line in this build

TEST(CudaDecode, NotCompiledIn) {
  GTEST_SKIP() << "CUDA decode kernel tests skipped: this build has no CUDA line (nvcc not found "
                  "or MIND4_CUDA=OFF)";
}

#endif
