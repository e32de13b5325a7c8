// The CUDA training kernels one by one against the templates of train/ops.h, direct references or
// the CPU optimizer, on random inputs with outputs NaN-poisoned first (the whole model, the engine
// and `mind4 train` on CUDA are in cuda_train_test.cpp). Without a GPU these tests skip.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/ops.h"
#include "train/ops.h"
#include "train/optimizer.h"
#include "train/params.h"
#include "train_test_util.h"

#ifdef MIND4_HAVE_CUDA
#include "cuda/train_kernels.h"
#include "cuda_test_util.h"

namespace mind4::train {
namespace {

using cuda::ActType;
using cuda_test::download;
using cuda_test::poisoned;
using cuda_test::rel_error;
using cuda_test::upload;

TEST(CudaTrainKernels, RmsNormForwardBackwardAndScaleGradient) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(1);
  // H 45: one float at a time; 32, 768 and 772 (lanes past the row on the last pass): 16-byte
  // words.
  for (auto [NT, H] : {std::pair{1, 32}, std::pair{7, 45}, std::pair{33, 768}, std::pair{5, 772}}) {
    auto x = mind4::testing::random_normals(size_t(NT) * H, rng),
         g = mind4::testing::random_normals(H, rng), bias = mind4::testing::random_normals(H, rng),
         dy = mind4::testing::random_normals(size_t(NT) * H, rng);
    std::vector<double> xb(x.size()), y(x.size()), dx(x.size()), dg(H, 0.0), rs(NT);
    for (size_t i = 0; i < x.size(); ++i) xb[i] = double(x[i]) + bias[i % H];
    const auto gd = mind4::testing::as_doubles(g), dyd = mind4::testing::as_doubles(dy);
    for (int r = 0; r < NT; ++r) {
      rs[r] = rmsnorm_fwd(xb.data() + r * H, gd.data(), H, y.data() + r * H);
      rmsnorm_bwd(xb.data() + r * H, gd.data(), rs[r], dyd.data() + r * H, H, dx.data() + r * H,
                  dg.data());
    }
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      auto dxv = upload(x), dg_dev = upload(g), db = upload(bias), ddy = upload(dy);
      auto out = poisoned(x.size() * cuda::act_size(t)), rstd = poisoned(NT * 4);
      cuda::train_rmsnorm_fwd(t, dxv.data<float>(), db.data<float>(), dg_dev.data<float>(), NT, H,
                              float(kRmsEps), out.data(), rstd.data<float>(), nullptr);
      EXPECT_LT(rel_error(download<float>(dxv, x.size()), xb), 1e-6);
      EXPECT_LT(rel_error(cuda_test::download_act(out, x.size(), t), y), cuda_test::tol(t));
      EXPECT_LT(rel_error(download<float>(rstd, NT), rs), 1e-5);
      auto ddx = poisoned(x.size() * 4);
      cuda::train_rmsnorm_bwd(dxv.data<float>(), dg_dev.data<float>(), rstd.data<float>(),
                              ddy.data<float>(), NT, H, false, ddx.data<float>(), nullptr);
      EXPECT_LT(rel_error(download<float>(ddx, x.size()), dx), 1e-5) << NT << "x" << H;
      // += on a second call doubles it.
      cuda::train_rmsnorm_bwd(dxv.data<float>(), dg_dev.data<float>(), rstd.data<float>(),
                              ddy.data<float>(), NT, H, true, ddx.data<float>(), nullptr);
      std::vector<double> dx2(dx);
      for (auto& v : dx2) v *= 2;
      EXPECT_LT(rel_error(download<float>(ddx, x.size()), dx2), 1e-5);
      std::vector<float> zeros(H, 0.0f);
      auto dgo = upload(zeros);
      auto part = poisoned(size_t(cuda::train_colsum_scratch_floats(H, 1)) * 4);
      cuda::train_colsum(ActType::kF32, ddy.data(), H, NT, H, dxv.data<float>(), rstd.data<float>(),
                         part.data<float>(), dgo.data<float>(), nullptr);
      EXPECT_LT(rel_error(download<float>(dgo, H), dg), 1e-5);
    }
  }
}

TEST(CudaTrainKernels, ColumnSumsOfActRowsWithStride) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(2);
  // Shapes: one row; partial column blocks; chunks longer than the minimum (20000 rows of 3
  // columns: the chunk count is capped); several column blocks with many chunks.
  for (auto [R, N, ld] : {std::tuple{1, 5, 5}, std::tuple{700, 33, 40}, std::tuple{257, 2, 3},
                          std::tuple{20000, 3, 3}, std::tuple{5000, 300, 301}}) {
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      const auto a = cuda_test::rounded(mind4::testing::random_normals(size_t(R) * ld, rng), t);
      std::vector<float> start = mind4::testing::random_normals(N, rng);
      std::vector<double> ref(start.begin(), start.end());
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < N; ++j) ref[j] += a[size_t(r) * ld + j];
      auto da = upload(cuda_test::to_act(a, t)), out = upload(start);
      auto part = poisoned(size_t(cuda::train_colsum_scratch_floats(N, 1)) * 4);
      cuda::train_colsum(t, da.data(), ld, R, N, nullptr, nullptr, part.data<float>(),
                         out.data<float>(), nullptr);
      EXPECT_LT(rel_error(download<float>(out, N), ref), 1e-5) << R << " rows";
    }
  }
}

// Per-segment column sums (the experts' bias gradients): uneven and empty segments, a gap before
// the first, one launch pair for all; each segment's sum lands in its own row of out.
TEST(CudaTrainKernels, ColumnSumsPerSegment) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(3);
  const std::vector<std::vector<int>> cases = {
      {0, 5}, {0, 300, 300, 1000, 1001, 4100}, {3, 3, 700, 700}, {0, 64, 128, 192, 256}};
  for (const std::vector<int>& seg : cases) {
    const int E = int(seg.size()) - 1, R = seg.back();
    int max_rows = 0;
    for (int e = 0; e < E; ++e) max_rows = std::max(max_rows, seg[e + 1] - seg[e]);
    for (int N : {7, 129, 2048}) {
      const int ld = N + 3;
      for (ActType t : {ActType::kF32, ActType::kBF16}) {
        const auto a = cuda_test::rounded(mind4::testing::random_normals(size_t(R) * ld, rng), t);
        std::vector<float> start = mind4::testing::random_normals(size_t(E) * N, rng);
        std::vector<double> ref(start.begin(), start.end());
        for (int e = 0; e < E; ++e)
          for (int r = seg[e]; r < seg[e + 1]; ++r)
            for (int j = 0; j < N; ++j) ref[size_t(e) * N + j] += a[size_t(r) * ld + j];
        auto da = upload(cuda_test::to_act(a, t)), out = upload(start), dseg = upload(seg);
        auto part = poisoned(size_t(cuda::train_colsum_scratch_floats(N, E)) * 4);
        cuda::train_colsum_segments(t, da.data(), ld, dseg.data<int>(), E, max_rows, N,
                                    part.data<float>(), out.data<float>(), nullptr);
        EXPECT_LT(rel_error(download<float>(out, size_t(E) * N), ref), 1e-5)
            << E << " segments, " << R << " rows, N = " << N;
      }
    }
  }
}

// The experts' segments placed on the GPU: counts 3, 0 and 297 rounded to 256-row tiles, packed or
// (when the largest fits uniform_max) uniform; worked out by hand.
TEST(CudaTrainKernels, ExpertSegmentsPackedOrUniform) {
  MIND4_REQUIRE_GPU();
  const std::vector<int> offsets = {0, 3, 3, 300};
  struct Case {
    int uniform_max;
    std::vector<int> want;
  };
  for (const Case& c : {Case{0, {0, 256, 256, 768}}, Case{256, {0, 256, 256, 768}},
                        Case{512, {0, 512, 1024, 1536}}}) {
    auto d_off = upload(offsets);
    auto d_poff = poisoned(offsets.size() * 4);
    cuda::train_expert_segments(d_off.data<int>(), 3, 256, c.uniform_max, d_poff.data<int>(),
                                nullptr);
    EXPECT_EQ(download<int>(d_poff, offsets.size()), c.want) << "uniform_max " << c.uniform_max;
  }
}

TEST(CudaTrainKernels, SwigluForwardBackward) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(3);
  const int A = 37, I = 19, E = 3;
  const float limit = 1.5f;
  const auto h0 = mind4::testing::random_normals(size_t(A) * 2 * I, rng, 2.0),
             bias = mind4::testing::random_normals(size_t(E) * 2 * I, rng),
             dact0 = mind4::testing::random_normals(size_t(A) * I, rng);
  std::vector<int> ge(A);
  for (int a = 0; a < A; ++a) ge[a] = int(rng() % E);
  for (ActType t : {ActType::kF32, ActType::kBF16}) {
    // The products' outputs come in the activation dtype.
    const auto h = cuda_test::rounded(h0, t), dact = cuda_test::rounded(dact0, t);
    auto dh = upload(cuda_test::to_act(h, t)), db = upload(bias), dge = upload(ge),
         dd = upload(cuda_test::to_act(dact, t));
    auto hs = poisoned(h.size() * cuda::act_size(t)),
         act = poisoned(dact.size() * cuda::act_size(t));
    cuda::train_swiglu_fwd(t, dh.data(), db.data<float>(), dge.data<int>(), A, I, limit, hs.data(),
                           act.data(), nullptr);
    const auto hsv = cuda_test::download_act(hs, h.size(), t);
    const auto ref = mind4::testing::swiglu_rows_ref(h, bias, ge, I, limit);
    EXPECT_LT(rel_error(hsv, ref.hb), cuda_test::tol(t));
    EXPECT_LT(rel_error(cuda_test::download_act(act, ref.act.size(), t), ref.act),
              2 * cuda_test::tol(t));
    // Backward from the saved (device-rounded) pre-activations.
    const auto dref = mind4::testing::swiglu_rows_bwd_ref(
        mind4::testing::as_doubles(hsv), mind4::testing::as_doubles(dact), I, limit);
    auto dho = poisoned(h.size() * cuda::act_size(t));
    cuda::train_swiglu_bwd(t, hs.data(), dd.data(), A, I, limit, dho.data(), nullptr);
    EXPECT_LT(rel_error(cuda_test::download_act(dho, h.size(), t), dref), 2 * cuda_test::tol(t));
  }
}

TEST(CudaTrainKernels, RouterTopkProbsAndCrossEntropy) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(4);
  for (auto [NT, E, K] : {std::tuple{1, 4, 1}, std::tuple{29, 8, 2}, std::tuple{5, 6, 6}}) {
    auto lg = mind4::testing::random_normals(size_t(NT) * E, rng),
         bias = mind4::testing::random_normals(E, rng);
    auto dl = upload(lg), db = upload(bias);
    auto de = poisoned(size_t(NT) * K * 4), dw = poisoned(size_t(NT) * K * 4),
         dp = poisoned(size_t(NT) * E * 4);
    cuda::train_router_fwd(dl.data<float>(), db.data<float>(), NT, E, K, de.data<int>(),
                           dw.data<float>(), dp.data<float>(), nullptr);
    const auto ex = download<int>(de, size_t(NT) * K);
    const auto wt = download<float>(dw, size_t(NT) * K), pr = download<float>(dp, size_t(NT) * E);
    for (int r = 0; r < NT; ++r) {
      std::vector<double> row(E);
      for (int e = 0; e < E; ++e) row[e] = double(lg[size_t(r) * E + e]) + bias[e];
      std::vector<int> re(K);
      std::vector<double> rw(K), rp(E);
      router_fwd(row.data(), E, K, re.data(), rw.data());
      softmax_fwd(row.data(), E, rp.data());
      for (int s = 0; s < K; ++s) {
        EXPECT_EQ(ex[size_t(r) * K + s], re[s]) << "row " << r << " slot " << s;
        EXPECT_NEAR(wt[size_t(r) * K + s], rw[s], 1e-6);
      }
      for (int e = 0; e < E; ++e) EXPECT_NEAR(pr[size_t(r) * E + e], rp[e], 1e-6);
    }
  }
  for (auto [NT, V] : {std::pair{1, 7}, std::pair{9, 1000}, std::pair{3, 32768}}) {
    const auto lg0 = mind4::testing::random_normals(size_t(NT) * V, rng, 3.0);
    std::vector<int> tg(NT);
    for (auto& x : tg) x = int(rng() % V);
    const float scale = 0.25f;
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      // Logits come from the unembedding product in the activation dtype.
      const auto lg = cuda_test::rounded(lg0, t);
      std::vector<double> ref(lg.begin(), lg.end()), loss(NT);
      for (int r = 0; r < NT; ++r)
        loss[r] = cross_entropy_fwd_bwd(ref.data() + size_t(r) * V, V, tg[r], double(scale));
      auto dl = upload(cuda_test::to_act(lg, t)), dt = upload(tg);
      auto rl = poisoned(NT * 4), grad = poisoned(lg.size() * cuda::act_size(t));
      cuda::train_cross_entropy(t, dl.data(), dt.data<int>(), NT, V, scale, rl.data<float>(),
                                grad.data(), nullptr);
      EXPECT_LT(rel_error(download<float>(rl, NT), loss), 1e-5);
      EXPECT_LT(rel_error(cuda_test::download_act(grad, lg.size(), t), ref), cuda_test::tol(t));
      // Loss only (evaluation): the same losses, no gradient written.
      auto rl2 = poisoned(NT * 4);
      cuda::train_cross_entropy(t, dl.data(), dt.data<int>(), NT, V, scale, rl2.data<float>(),
                                nullptr, nullptr);
      EXPECT_LT(rel_error(download<float>(rl2, NT), loss), 1e-5);
    }
  }
}

TEST(CudaTrainKernels, RopeForwardTransposeAndBackward) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(5);
  const int B = 2, S = 5, NH = 4, NKV = 2, D = 8, QKV = (NH + 2 * NKV) * D;
  ModelConfig c;
  c.head_dim = D, c.rope_theta = 10000.0f, c.rope_scaling_factor = 2.0f;
  c.initial_context_length = 4;
  std::vector<float> cs(size_t(S) * D / 2), sn(cs.size());
  cpu::rope_tables(c, S, cs.data(), sn.data());
  auto qkv = mind4::testing::random_normals(size_t(B) * S * QKV, rng),
       bias = mind4::testing::random_normals(QKV, rng);
  const int G = NH / NKV;
  // dk, dv per query head (the products' output): the KV head's gradient sums its group.
  auto dq = mind4::testing::random_normals(size_t(B) * NH * S * D, rng),
       dk = mind4::testing::random_normals(size_t(B) * NH * S * D, rng),
       dv = mind4::testing::random_normals(size_t(B) * NH * S * D, rng);
  std::vector<double> ref(qkv.size()), dref(qkv.size());
  const std::vector<double> csd = mind4::testing::as_doubles(cs),
                            snd = mind4::testing::as_doubles(sn);
  for (int r = 0; r < B * S; ++r) {
    const int b = r / S, s = r % S;
    double* row = ref.data() + size_t(r) * QKV;
    for (int j = 0; j < QKV; ++j) row[j] = double(qkv[size_t(r) * QKV + j]) + bias[j];
    rope_fwd(row, NH + NKV, D, csd.data() + s * D / 2, snd.data() + s * D / 2);
    double* drow = dref.data() + size_t(r) * QKV;
    for (int h = 0; h < NH; ++h)
      for (int d = 0; d < D; ++d) drow[h * D + d] = dq[((size_t(b) * NH + h) * S + s) * D + d];
    for (int h = 0; h < NKV; ++h)
      for (int d = 0; d < D; ++d) {
        double sk = 0, sv = 0;
        for (int g = 0; g < G; ++g) {
          sk += dk[((size_t(b) * NH + h * G + g) * S + s) * D + d];
          sv += dv[((size_t(b) * NH + h * G + g) * S + s) * D + d];
        }
        drow[(NH + h) * D + d] = sk;
        drow[(NH + NKV + h) * D + d] = sv;
      }
    rope_bwd(drow, NH + NKV, D, csd.data() + s * D / 2, snd.data() + s * D / 2);
  }
  auto dcs = upload(cs), dsn = upload(sn), dqkv = upload(qkv), db = upload(bias);
  auto q = poisoned(dq.size() * 4), k = poisoned(dk.size() * 4), v = poisoned(dv.size() * 4);
  cuda::train_qkv_rope_fwd(ActType::kF32, dqkv.data<float>(), db.data<float>(), dcs.data<float>(),
                           dsn.data<float>(), B, S, NH, NKV, D, q.data(), k.data(), v.data(),
                           nullptr);
  const auto qv = download<float>(q, dq.size()), kv = download<float>(k, dk.size()),
             vv = download<float>(v, dv.size());
  double err = 0;
  for (int r = 0; r < B * S; ++r) {
    const int b = r / S, s = r % S;
    for (int hh = 0; hh < NH + 2 * NKV; ++hh)
      for (int d = 0; d < D; ++d) {
        const double want = ref[size_t(r) * QKV + hh * D + d];
        if (hh < NH) {
          err = std::max(err, std::abs(qv[((size_t(b) * NH + hh) * S + s) * D + d] - want));
          continue;
        }
        // k and v are written once for each query head of the group.
        const bool is_k = hh < NH + NKV;
        const int kvh = is_k ? hh - NH : hh - NH - NKV;
        for (int g = 0; g < G; ++g) {
          const size_t at = ((size_t(b) * NH + kvh * G + g) * S + s) * D + d;
          err = std::max(err, std::abs((is_k ? kv : vv)[at] - want));
        }
      }
  }
  EXPECT_LT(err, 1e-5);
  auto ddq = upload(dq), ddk = upload(dk), ddv = upload(dv), out = poisoned(qkv.size() * 4);
  cuda::train_rope_bwd(ActType::kF32, ddq.data<float>(), ddk.data<float>(), ddv.data<float>(),
                       dcs.data<float>(), dsn.data<float>(), B, S, NH, NKV, D, out.data(), nullptr);
  EXPECT_LT(rel_error(download<float>(out, qkv.size()), dref), 1e-6);
}

TEST(CudaTrainKernels, AttentionSoftmaxTilesForwardAndBackward) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(7);
  const int B = 2, NH = 3, S = 11;
  const float scale = 0.35f;
  const auto sinks = mind4::testing::random_normals(NH, rng);
  // Tiles: the whole sequence; a middle tile of a causal layer; windowed tiles with the window
  // shorter than the tile, longer than it, and reaching back before the tile's keys.
  struct Case {
    cuda::AttnTile tile;
    int window;
  };
  for (const Case& cs : {Case{{0, 11, 0, 11}, 0}, Case{{4, 3, 0, 7}, 0}, Case{{6, 5, 3, 8}, 4},
                         Case{{3, 4, 0, 7}, 20}, Case{{8, 3, 7, 4}, 2}}) {
    const cuda::AttnTile tl = cs.tile;
    const int64_t n = int64_t(B) * NH * tl.nq * tl.nk;
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      const auto sc = cuda_test::rounded(mind4::testing::random_normals(size_t(n), rng, 2.0), t);
      const auto dp = cuda_test::rounded(mind4::testing::random_normals(size_t(n), rng), t);
      const auto delta = mind4::testing::random_normals(size_t(B) * NH * S, rng);
      std::vector<double> P(size_t(n), 0.0), dS(size_t(n), 0.0), lse(size_t(B) * NH * S, 0.0);
      for (int64_t row = 0; row < int64_t(B) * NH * tl.nq; ++row) {
        const int64_t bh = row / tl.nq;
        const int s = tl.q0 + int(row % tl.nq), h = int(bh % NH);
        const int first = cs.window > 0 ? std::max(0, s - cs.window + 1) : 0;
        double m = sinks[h];
        for (int j = 0; j < tl.nk; ++j)
          if (tl.k0 + j >= first && tl.k0 + j <= s)
            m = std::max(m, double(scale) * sc[row * tl.nk + j]);
        double sum = std::exp(sinks[h] - m);
        for (int j = 0; j < tl.nk; ++j)
          if (tl.k0 + j >= first && tl.k0 + j <= s)
            sum += std::exp(double(scale) * sc[row * tl.nk + j] - m);
        lse[bh * S + s] = m + std::log(sum);
        for (int j = 0; j < tl.nk; ++j) {
          if (tl.k0 + j < first || tl.k0 + j > s) continue;
          const double p = std::exp(double(scale) * sc[row * tl.nk + j] - m) / sum;
          P[row * tl.nk + j] = p;
          dS[row * tl.nk + j] = p * (dp[row * tl.nk + j] - delta[bh * S + s]) * scale;
        }
      }
      auto dsc = upload(cuda_test::to_act(sc, t)), ddp = upload(cuda_test::to_act(dp, t)),
           dsink = upload(sinks), ddelta = upload(delta);
      auto dP = poisoned(size_t(n) * cuda::act_size(t)), dlse = poisoned(lse.size() * 4);
      cuda::train_attn_softmax_fwd(t, dsc.data(), dsink.data<float>(), B, NH, S, tl, cs.window,
                                   scale, dP.data(), dlse.data<float>(), nullptr);
      const auto Pv = cuda_test::download_act(dP, size_t(n), t);
      EXPECT_LT(rel_error(Pv, P), cuda_test::tol(t)) << "tile q0 " << tl.q0;
      const auto lv = download<float>(dlse, lse.size());
      for (int64_t row = 0; row < int64_t(B) * NH * tl.nq; ++row) {
        const int64_t i = row / tl.nq * S + tl.q0 + row % tl.nq;
        EXPECT_NEAR(lv[i], lse[i], 1e-4 * (1 + std::abs(lse[i]))) << "lse of row " << row;
      }
      // Backward, recomputing P from lse, and from the kept P.
      auto P2 = poisoned(size_t(n) * cuda::act_size(t)),
           dS1 = poisoned(size_t(n) * cuda::act_size(t)),
           dS2 = poisoned(size_t(n) * cuda::act_size(t));
      cuda::train_attn_softmax_bwd(t, dsc.data(), ddp.data(), dlse.data<float>(),
                                   ddelta.data<float>(), B, NH, S, tl, cs.window, scale, P2.data(),
                                   dS1.data(), nullptr);
      EXPECT_LT(rel_error(cuda_test::download_act(P2, size_t(n), t), P), 2 * cuda_test::tol(t));
      EXPECT_LT(rel_error(cuda_test::download_act(dS1, size_t(n), t), dS), 2 * cuda_test::tol(t));
      cuda::train_attn_dsoftmax(t, dP.data(), ddp.data(), ddelta.data<float>(), B, NH, S, tl, scale,
                                dS2.data(), nullptr);
      EXPECT_LT(rel_error(cuda_test::download_act(dS2, size_t(n), t), dS), 2 * cuda_test::tol(t));
    }
  }
}

TEST(CudaTrainKernels, RouterBackwardCombineAndEmbeddingGradient) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(8);
  const int NT = 13, E = 5, K = 2, H = 37;
  // Assignments grouped by expert with a gap (as the padded groups): row r slot s at a place
  // of its own.
  std::vector<int> experts(NT * K), assign_at(NT * K);
  const std::vector<float> logits = mind4::testing::random_normals(size_t(NT) * E, rng);
  for (int r = 0; r < NT; ++r) {
    std::vector<double> row(logits.begin() + r * E, logits.begin() + (r + 1) * E);
    std::vector<int> ex(K);
    std::vector<double> wt(K);
    router_fwd(row.data(), E, K, ex.data(), wt.data());
    for (int s = 0; s < K; ++s) experts[r * K + s] = ex[s];
  }
  std::vector<int> offsets(E + 1, 0);
  for (int e : experts) ++offsets[e + 1];
  for (int e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
  std::vector<int> cursor(offsets.begin(), offsets.end() - 1);
  const int A = NT * K + 3;  // 3 unused rows
  for (int i = 0; i < NT * K; ++i) assign_at[i] = cursor[experts[i]]++ + 3 * (experts[i] > 1);
  auto weights = mind4::testing::random_normals(size_t(NT) * K, rng),
       probs = mind4::testing::random_normals(size_t(NT) * E, rng);
  for (auto& w : weights) w = std::abs(w);
  for (auto& p : probs) p = std::abs(p) / 3;
  const auto dweights = mind4::testing::random_normals(size_t(NT) * K, rng),
             dx = mind4::testing::random_normals(size_t(NT) * H, rng),
             xmid = mind4::testing::random_normals(size_t(NT) * H, rng),
             bias = mind4::testing::random_normals(size_t(E) * H, rng);
  const float aux_scale = 0.3f;
  for (ActType t : {ActType::kF32, ActType::kBF16}) {
    const auto dxe = cuda_test::rounded(mind4::testing::random_normals(size_t(A) * H, rng), t);
    const auto y = cuda_test::rounded(mind4::testing::random_normals(size_t(A) * H, rng), t);
    const auto ref = mind4::testing::router_combine_ref(experts, assign_at, weights, dweights,
                                                        probs, offsets, aux_scale, dxe, y, dx, xmid,
                                                        bias, NT, E, K, H, size_t(A));
    const auto &dlog = ref.dlog, &dt = ref.dt, &xout = ref.xout, &dw = ref.dw, &dy = ref.dy;
    auto d_ex = upload(experts), d_at = upload(assign_at), d_w = upload(weights),
         d_dw = upload(dweights), d_p = upload(probs), d_off = upload(offsets),
         d_dxe = upload(cuda_test::to_act(dxe, t)), d_y = upload(cuda_test::to_act(y, t)),
         d_dx = upload(dx), d_xmid = upload(xmid), d_bias = upload(bias);
    auto dl = poisoned(dlog.size() * cuda::act_size(t)), ddt = poisoned(dt.size() * 4);
    cuda::train_router_bwd(t, d_ex.data<int>(), d_w.data<float>(), d_dw.data<float>(),
                           d_p.data<float>(), d_off.data<int>(), aux_scale, d_dxe.data(),
                           d_at.data<int>(), NT, E, K, H, nullptr, dl.data(), ddt.data<float>(),
                           nullptr);
    EXPECT_LT(rel_error(cuda_test::download_act(dl, dlog.size(), t), dlog), cuda_test::tol(t));
    EXPECT_LT(rel_error(download<float>(ddt, dt.size()), dt), 1e-5);
    auto dxo = poisoned(xout.size() * 4);
    cuda::train_moe_combine_fwd(t, d_xmid.data<float>(), d_y.data(), d_bias.data<float>(),
                                d_ex.data<int>(), d_at.data<int>(), d_w.data<float>(), NT, K, H,
                                dxo.data<float>(), nullptr);
    EXPECT_LT(rel_error(download<float>(dxo, xout.size()), xout), 1e-5);
    std::vector<uint8_t> zero_dy(dy.size() * cuda::act_size(t), 0);
    auto ddw = poisoned(dw.size() * 4), ddy = upload(zero_dy);
    cuda::train_moe_combine_bwd(t, d_dx.data<float>(), d_y.data(), d_bias.data<float>(),
                                d_ex.data<int>(), d_at.data<int>(), d_w.data<float>(), NT, K, H,
                                ddw.data<float>(), ddy.data(), nullptr);
    EXPECT_LT(rel_error(download<float>(ddw, dw.size()), dw), 1e-5);
    EXPECT_LT(rel_error(cuda_test::download_act(ddy, dy.size(), t), dy), cuda_test::tol(t));
  }
  // Embedding gradient: rows of repeated tokens add up.
  const int V = 7;
  std::vector<int> tokens(NT);
  for (auto& x : tokens) x = int(rng() % 3) * 2;  // 0, 2, 4 only: repeats and untouched rows
  auto table = mind4::testing::random_normals(size_t(V) * H, rng);
  std::vector<double> ref(table.begin(), table.end());
  for (int r = 0; r < NT; ++r)
    for (int j = 0; j < H; ++j) ref[size_t(tokens[r]) * H + j] += dx[r * H + j];
  auto dtab = upload(table), dtok = upload(tokens), ddx = upload(dx);
  cuda::train_embedding_bwd(ddx.data<float>(), dtok.data<int>(), NT, H, dtab.data<float>(),
                            nullptr);
  EXPECT_LT(rel_error(download<float>(dtab, table.size()), ref), 1e-6);
}

TEST(CudaTrainKernels, AdamWAndGradientNormMatchTheCpu) {
  MIND4_REQUIRE_GPU();
  ModelConfig m;  // small: the layout's tensors and their decay flags are what matter here
  m.hidden_size = 24, m.num_hidden_layers = 2, m.num_attention_heads = 4;
  m.num_key_value_heads = 2, m.head_dim = 8, m.intermediate_size = 12, m.vocab_size = 53;
  m.num_experts = 3, m.experts_per_token = 1;
  const ParamLayout layout = make_param_layout(m);
  ThreadPool pool(2);
  std::mt19937_64 rng(9);
  const int64_t n = layout.total;
  auto p = mind4::testing::random_normals(size_t(n), rng),
       g = mind4::testing::random_normals(size_t(n), rng),
       mm = mind4::testing::random_normals(size_t(n), rng),
       v = mind4::testing::random_normals(size_t(n), rng);
  for (auto& x : v) x = x * x;
  // The CPU optimizer at step 3 (its state set by hand), then clipped gradients.
  AdamWConfig cfg;
  AdamW opt(layout, cfg);
  opt.m() = mm, opt.v() = v;
  opt.set_step(2);
  std::vector<float> pc = p, gc = g;
  const double norm = clip_grad_norm(pool, gc.data(), n, 0.5);
  const double lr = 3e-3;
  opt.update(pool, pc.data(), gc.data(), lr);
  std::vector<uint8_t> decay(size_t(n / 16), 0);
  for (const auto& t : layout.tensors)
    if (t.decay)
      for (int64_t c = t.offset / 16; c < (t.offset + t.numel + 15) / 16; ++c) decay[c] = 1;
  auto dp = upload(p), dg = upload(g), dm = upload(mm), dv = upload(v), ddecay = upload(decay);
  auto partial = poisoned(cuda::train_sumsq_blocks * 8);
  cuda::train_sumsq(dg.data<float>(), n, partial.data<double>(), nullptr);
  double ss = 0;
  for (double x : download<double>(partial, cuda::train_sumsq_blocks)) ss += x;
  EXPECT_NEAR(std::sqrt(ss), norm, 1e-9 * norm);
  const double bc1 = 1 - std::pow(cfg.beta1, 3.0), bc2 = 1 - std::pow(cfg.beta2, 3.0);
  cuda::AdamWStep st{float(0.5 / (norm + 1e-6)),
                     float(lr / bc1),
                     float(std::sqrt(bc2)),
                     float(1 - lr * cfg.weight_decay),
                     float(cfg.eps),
                     float(cfg.beta1),
                     float(cfg.beta2)};
  auto pbf = poisoned(size_t(n) * 2);
  cuda::train_adamw(dp.data<float>(), dg.data<float>(), dm.data<float>(), dv.data<float>(),
                    ddecay.data<uint8_t>(), n, st, pbf.data(), nullptr);
  EXPECT_LT(rel_error(download<float>(dp, size_t(n)), mind4::testing::as_doubles(pc)), 1e-6);
  EXPECT_LT(rel_error(download<float>(dm, size_t(n)), mind4::testing::as_doubles(opt.m())), 1e-6);
  EXPECT_LT(rel_error(download<float>(dv, size_t(n)), mind4::testing::as_doubles(opt.v())), 1e-6);
  EXPECT_LT(rel_error(cuda_test::download_act(pbf, size_t(n), ActType::kBF16),
                      mind4::testing::as_doubles(pc)),
            4e-3);
}

}  // namespace
}  // namespace mind4::train

#endif  // MIND4_HAVE_CUDA
