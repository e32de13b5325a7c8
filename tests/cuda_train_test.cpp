// The CUDA training line against the CPU one: each training kernel against the templates of
// train/ops.h on random inputs (outputs NaN-poisoned first), the whole model's loss and every
// parameter's gradient in float32 against TrainModel<double> (tight) and in bfloat16 (loose),
// AdamW steps of the CUDA engine against the CPU engine, and `mind4 train` with backend: cuda end
// to end with a resume (on the GPU and, from the same checkpoint, on the CPU). Without a GPU the
// CUDA tests skip; the one that checks the error a CUDA config gives without a GPU runs in CI.
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

std::vector<float> ct_random(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = float(d(rng));
  return v;
}
std::vector<double> ct_d(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ---- kernels

TEST(CudaTrainKernels, RmsNormForwardBackwardAndScaleGradient) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(1);
  for (auto [NT, H] : {std::pair{1, 32}, std::pair{7, 45}, std::pair{33, 768}}) {
    auto x = ct_random(size_t(NT) * H, rng), g = ct_random(H, rng), bias = ct_random(H, rng),
         dy = ct_random(size_t(NT) * H, rng);
    std::vector<double> xb(x.size()), y(x.size()), dx(x.size()), dg(H, 0.0), rs(NT);
    for (size_t i = 0; i < x.size(); ++i) xb[i] = double(x[i]) + bias[i % H];
    const auto gd = ct_d(g), dyd = ct_d(dy);
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
      auto part = poisoned(size_t(cuda::train_colsum_partial_size(NT, H)) * 4);
      cuda::train_colsum(ActType::kF32, ddy.data(), H, NT, H, dxv.data<float>(), rstd.data<float>(),
                         part.data<float>(), dgo.data<float>(), nullptr);
      EXPECT_LT(rel_error(download<float>(dgo, H), dg), 1e-5);
    }
  }
}

TEST(CudaTrainKernels, ColumnSumsOfActRowsWithStride) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(2);
  for (auto [R, N, ld] : {std::tuple{1, 5, 5}, std::tuple{700, 33, 40}, std::tuple{257, 2, 3}}) {
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      const auto a = cuda_test::rounded(ct_random(size_t(R) * ld, rng), t);
      std::vector<float> start = ct_random(N, rng);
      std::vector<double> ref(start.begin(), start.end());
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < N; ++j) ref[j] += a[size_t(r) * ld + j];
      auto da = upload(cuda_test::to_act(a, t)), out = upload(start);
      auto part = poisoned(size_t(cuda::train_colsum_partial_size(R, N)) * 4);
      cuda::train_colsum(t, da.data(), ld, R, N, nullptr, nullptr, part.data<float>(),
                         out.data<float>(), nullptr);
      EXPECT_LT(rel_error(download<float>(out, N), ref), 1e-5) << R << " rows";
    }
  }
}

TEST(CudaTrainKernels, SwigluForwardBackward) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(3);
  const int A = 37, I = 19, E = 3;
  const float limit = 1.5f;
  const auto h0 = ct_random(size_t(A) * 2 * I, rng, 2.0), bias = ct_random(size_t(E) * 2 * I, rng),
             dact0 = ct_random(size_t(A) * I, rng);
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
    std::vector<double> hb(h.size()), ref(size_t(A) * I), dref(h.size());
    for (int a = 0; a < A; ++a)
      for (int j = 0; j < 2 * I; ++j)
        hb[size_t(a) * 2 * I + j] =
            double(h[size_t(a) * 2 * I + j]) + bias[size_t(ge[a]) * 2 * I + j];
    EXPECT_LT(rel_error(hsv, hb), cuda_test::tol(t));
    for (int a = 0; a < A; ++a)
      swiglu_fwd(hb.data() + size_t(a) * 2 * I, I, double(limit), ref.data() + size_t(a) * I);
    EXPECT_LT(rel_error(cuda_test::download_act(act, ref.size(), t), ref), 2 * cuda_test::tol(t));
    // Backward from the saved (device-rounded) pre-activations.
    const auto hsd = ct_d(hsv), dd_d = ct_d(dact);
    for (int a = 0; a < A; ++a)
      swiglu_bwd(hsd.data() + size_t(a) * 2 * I, I, double(limit), dd_d.data() + size_t(a) * I,
                 dref.data() + size_t(a) * 2 * I);
    auto dho = poisoned(h.size() * cuda::act_size(t));
    cuda::train_swiglu_bwd(t, hs.data(), dd.data(), A, I, limit, dho.data(), nullptr);
    EXPECT_LT(rel_error(cuda_test::download_act(dho, h.size(), t), dref), 2 * cuda_test::tol(t));
  }
}

TEST(CudaTrainKernels, RouterTopkProbsAndCrossEntropy) {
  MIND4_REQUIRE_GPU();
  std::mt19937_64 rng(4);
  for (auto [NT, E, K] : {std::tuple{1, 4, 1}, std::tuple{29, 8, 2}, std::tuple{5, 6, 6}}) {
    auto lg = ct_random(size_t(NT) * E, rng), bias = ct_random(E, rng);
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
    const auto lg0 = ct_random(size_t(NT) * V, rng, 3.0);
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
  auto qkv = ct_random(size_t(B) * S * QKV, rng), bias = ct_random(QKV, rng);
  const int G = NH / NKV;
  // dk, dv per query head (the products' output): the KV head's gradient sums its group.
  auto dq = ct_random(size_t(B) * NH * S * D, rng), dk = ct_random(size_t(B) * NH * S * D, rng),
       dv = ct_random(size_t(B) * NH * S * D, rng);
  std::vector<double> ref(qkv.size()), dref(qkv.size());
  const std::vector<double> csd = ct_d(cs), snd = ct_d(sn);
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
  const auto sinks = ct_random(NH, rng);
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
      const auto sc = cuda_test::rounded(ct_random(size_t(n), rng, 2.0), t);
      const auto dp = cuda_test::rounded(ct_random(size_t(n), rng), t);
      const auto delta = ct_random(size_t(B) * NH * S, rng);
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
  const std::vector<float> logits = ct_random(size_t(NT) * E, rng);
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
  auto weights = ct_random(size_t(NT) * K, rng), probs = ct_random(size_t(NT) * E, rng);
  for (auto& w : weights) w = std::abs(w);
  for (auto& p : probs) p = std::abs(p) / 3;
  const auto dweights = ct_random(size_t(NT) * K, rng), dx = ct_random(size_t(NT) * H, rng),
             xmid = ct_random(size_t(NT) * H, rng), bias = ct_random(size_t(E) * H, rng);
  const float aux_scale = 0.3f;
  for (ActType t : {ActType::kF32, ActType::kBF16}) {
    const auto dxe = cuda_test::rounded(ct_random(size_t(A) * H, rng), t);
    const auto y = cuda_test::rounded(ct_random(size_t(A) * H, rng), t);
    // References.
    std::vector<double> dlog(size_t(NT) * E, 0.0), dt(size_t(NT) * H, 0.0), xout(size_t(NT) * H),
        dw(size_t(NT) * K), dy(size_t(A) * H, 0.0);
    std::vector<double> aux_g(E);
    for (int e = 0; e < E; ++e) aux_g[e] = aux_scale * double(offsets[e + 1] - offsets[e]) / NT;
    for (int r = 0; r < NT; ++r) {
      std::vector<double> w(weights.begin() + r * K, weights.begin() + (r + 1) * K),
          dwv(dweights.begin() + r * K, dweights.begin() + (r + 1) * K),
          p(probs.begin() + r * E, probs.begin() + (r + 1) * E);
      router_bwd(experts.data() + r * K, w.data(), dwv.data(), K, dlog.data() + r * E);
      softmax_bwd(p.data(), aux_g.data(), E, dlog.data() + r * E);
      for (int j = 0; j < H; ++j) {
        double v = xmid[r * H + j];
        for (int s = 0; s < K; ++s) {
          const int at = assign_at[r * K + s], e = experts[r * K + s];
          dt[r * H + j] += dxe[size_t(at) * H + j];
          v += weights[r * K + s] * (y[size_t(at) * H + j] + bias[e * H + j]);
        }
        xout[r * H + j] = v;
      }
      for (int s = 0; s < K; ++s) {
        const int at = assign_at[r * K + s], e = experts[r * K + s];
        double d = 0;
        for (int j = 0; j < H; ++j) {
          d += dx[r * H + j] * (y[size_t(at) * H + j] + bias[e * H + j]);
          dy[size_t(at) * H + j] = weights[r * K + s] * dx[r * H + j];
        }
        dw[r * K + s] = d;
      }
    }
    auto d_ex = upload(experts), d_at = upload(assign_at), d_w = upload(weights),
         d_dw = upload(dweights), d_p = upload(probs), d_off = upload(offsets),
         d_dxe = upload(cuda_test::to_act(dxe, t)), d_y = upload(cuda_test::to_act(y, t)),
         d_dx = upload(dx), d_xmid = upload(xmid), d_bias = upload(bias);
    auto dl = poisoned(dlog.size() * cuda::act_size(t)), ddt = poisoned(dt.size() * 4);
    cuda::train_router_bwd(t, d_ex.data<int>(), d_w.data<float>(), d_dw.data<float>(),
                           d_p.data<float>(), d_off.data<int>(), aux_scale, d_dxe.data(),
                           d_at.data<int>(), NT, E, K, H, dl.data(), ddt.data<float>(), nullptr);
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
  auto table = ct_random(size_t(V) * H, rng);
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
  auto p = ct_random(size_t(n), rng), g = ct_random(size_t(n), rng), mm = ct_random(size_t(n), rng),
       v = ct_random(size_t(n), rng);
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
  EXPECT_LT(rel_error(download<float>(dp, size_t(n)), ct_d(pc)), 1e-6);
  EXPECT_LT(rel_error(download<float>(dm, size_t(n)), ct_d(opt.m())), 1e-6);
  EXPECT_LT(rel_error(download<float>(dv, size_t(n)), ct_d(opt.v())), 1e-6);
  EXPECT_LT(rel_error(cuda_test::download_act(pbf, size_t(n), ActType::kBF16), ct_d(pc)), 4e-3);
}

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
std::vector<double> ct_compare_model(const CtShape& s, const char* dtype, double grad_tol,
                                     double loss_tol) {
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
  auto engine = make_cuda_train_engine(cfg, layout, {s.attn_tile, s.keep_probs});
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
                           " keep_probs=" + std::to_string(s.keep_probs);
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
  for (const CtShape& s : kCtShapes) ct_compare_model(s, "float32", 1e-4, 1e-6);
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
  EXPECT_LT(rel_error(pg, ct_d(pc)), 1e-5);
  EXPECT_LT(rel_error(mg, ct_d(mc)), 1e-3);
  EXPECT_LT(rel_error(vg, ct_d(vc)), 1e-3);
}

// ---- `mind4 train` with backend: cuda, end to end

std::string ct_binary() {
  const char* env = std::getenv("MIND4_BINARY");
  return env ? env : MIND4_BINARY;
}
int ct_shell(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str());
}
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
  std::string text;
  std::mt19937 rng(9);
  const char* words[] = {"and", "the",   "lord",   "said",  "unto", "him",  "behold", "light",
                         "day", "night", "waters", "earth", "was",  "good", "god",    "made"};
  for (int i = 0; i < 3000; ++i) text += std::string(words[rng() % 16]) + (i % 12 ? " " : ".\n");
  write_file(dir / "corpus.txt", text);
  const std::string tok = dir / "vocab.tiktoken", data = dir / "data";
  ASSERT_EQ(ct_shell(ct_binary() + " train-tokenizer --input " + (dir / "corpus.txt") +
                     " --vocab-size 300 --out " + tok),
            0);
  ASSERT_EQ(ct_shell("MIND4_NO_PROGRESS=1 " + ct_binary() + " prepare-data --chunk-bytes 512 " +
                     "--input " + (dir / "corpus.txt") + " --tokenizer " + tok + " --out " + data),
            0);
  const std::string a = dir / "ck_a", b = dir / "ck_b", c = dir / "ck_c";
  write_file(dir / "a.yaml", ct_yaml(data, tok, a, "cuda", "float32", 12));
  write_file(dir / "b.yaml", ct_yaml(data, tok, b, "cuda", "float32", 12));
  write_file(dir / "c.yaml", ct_yaml(data, tok, c, "cpu", "float32", 12));
  std::string ay = read_file(dir / "a.yaml");
  ay.replace(ay.find("export: \"\""), 10, "export: " + (dir / "export"));
  write_file(dir / "a.yaml", ay);
  ASSERT_EQ(ct_shell(ct_binary() + " train " + (dir / "a.yaml")), 0);
  // b: stop after 6 (checkpointed), resume on the GPU; c: the same first 6 steps' checkpoint
  // resumed on the CPU.
  ASSERT_EQ(ct_shell(ct_binary() + " train " + (dir / "b.yaml") + " --stop-after 6"), 0);
  std::filesystem::copy(b, c, std::filesystem::copy_options::recursive);
  ASSERT_EQ(ct_shell(ct_binary() + " train " + (dir / "b.yaml")), 0);
  ASSERT_EQ(ct_shell(ct_binary() + " train " + (dir / "c.yaml")), 0);
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
    EXPECT_EQ(ct_shell(ct_binary() + " generate --checkpoint " + (dir / "export") +
                       " --tokenizer auto --backend " + backend +
                       " --max-new-tokens 4 --temperature 0 'the lord'"),
              0)
        << backend;
}

#endif  // MIND4_HAVE_CUDA

}  // namespace
}  // namespace mind4::train
