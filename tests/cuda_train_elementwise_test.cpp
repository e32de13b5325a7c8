// The training's elementwise kernels down each of their paths: the wide one (16-byte loads and
// stores, rows of a multiple of 8 elements on the 16-byte grid), and the element-by-element one
// (odd widths, and aligned widths handed pointers off the 16-byte grid), over row counts that fill
// no whole block and expert segments with gap rows. Against the templates of train/ops.h (or an
// exact copy for gather_rows), fresh random inputs, outputs NaN-poisoned first. Without a GPU
// these tests skip.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "train/ops.h"
#include "train_test_util.h"

#ifdef MIND4_HAVE_CUDA
#include "cuda/train_kernels.h"
#include "cuda_placed.h"
#include "cuda_test_util.h"

namespace mind4::train {
namespace {

using cuda::ActType;
using cuda_test::placed;
using cuda_test::placed_act;
using cuda_test::placed_poisoned;
using cuda_test::rel_error;
using mind4::testing::as_doubles;
using mind4::testing::random_normals;

TEST(CudaTrainElementwise, SwigluWideAndElementPaths) {
  MIND4_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const int E = 3;
  const float limit = 1.5f;
  // (A, I, shift): I a multiple of 4 takes the wide path (1 row; rows that fill no whole block of
  // 8; the benchmark's I, a block per row), odd I and shifted pointers the element path.
  for (auto [A, I, shift] : {std::tuple{1, 4, 0}, std::tuple{37, 12, 0}, std::tuple{5, 1024, 0},
                             std::tuple{13, 19, 0}, std::tuple{11, 16, 1}}) {
    SCOPED_TRACE(::testing::Message() << "A " << A << ", I " << I << ", shift " << shift);
    const auto h0 = random_normals(size_t(A) * 2 * I, rng, 2.0),
               bias = random_normals(size_t(E) * 2 * I, rng),
               dact0 = random_normals(size_t(A) * I, rng);
    std::vector<int> ge(A);
    for (int a = 0; a < A; ++a) ge[a] = int(rng() % E);
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      SCOPED_TRACE(cuda::act_name(t));
      const auto h = cuda_test::rounded(h0, t), dact = cuda_test::rounded(dact0, t);
      const size_t as = cuda::act_size(t);
      auto dh = placed_act(h, t, shift), db = placed(bias, 4 * shift), dge = placed(ge, 0),
           dd = placed_act(dact, t, shift);
      auto hs = placed_poisoned(h.size() * as, shift * as),
           act = placed_poisoned(dact.size() * as, shift * as);
      cuda::train_swiglu_fwd(t, dh.p(), db.p<float>(), dge.p<int>(), A, I, limit, hs.p(), act.p(),
                             nullptr);
      const auto hsv = hs.act(t, h.size());
      const auto ref = mind4::testing::swiglu_rows_ref(h, bias, ge, I, limit);
      EXPECT_LT(rel_error(hsv, ref.hb), cuda_test::tol(t));
      EXPECT_LT(rel_error(act.act(t, ref.act.size()), ref.act), 2 * cuda_test::tol(t));
      // Backward from the saved (device-rounded) pre-activations.
      const auto dref =
          mind4::testing::swiglu_rows_bwd_ref(as_doubles(hsv), as_doubles(dact), I, limit);
      auto dho = placed_poisoned(h.size() * as, shift * as);
      cuda::train_swiglu_bwd(t, hs.p(), dd.p(), A, I, limit, dho.p(), nullptr);
      EXPECT_LT(rel_error(dho.act(t, h.size()), dref), 2 * cuda_test::tol(t));
    }
  }
}

TEST(CudaTrainElementwise, CrossEntropyRowsInRegistersAndTheFallback) {
  MIND4_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  // (NT, V, shift) and what each takes (16-byte words per row: V/8 in bf16, V/4 in f32): V 8 a
  // word or two; 1000 a fraction of the threads; 4104 one word past 512 threads (bf16) and 2+
  // words a thread (f32); 32768 (the benchmark) 8 words a thread, 512 threads in bf16 and 1024 in
  // f32; 65544 too long for the registers (the three-pass kernel); 1004 whole words in f32 only;
  // shifted pointers the three-pass kernel.
  for (auto [NT, V, shift] : {std::tuple{1, 8, 0}, std::tuple{3, 1000, 0}, std::tuple{5, 4104, 0},
                              std::tuple{2, 32768, 0}, std::tuple{2, 65544, 0},
                              std::tuple{3, 1004, 0}, std::tuple{3, 1000, 1}}) {
    SCOPED_TRACE(::testing::Message() << "NT " << NT << ", V " << V << ", shift " << shift);
    const auto lg0 = random_normals(size_t(NT) * V, rng, 3.0);
    std::vector<int> tg(NT);
    for (auto& x : tg) x = int(rng() % V);
    tg[0] = 0, tg[NT - 1] = V - 1;  // the first and the last element of a row
    const float scale = 0.25f;
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      SCOPED_TRACE(cuda::act_name(t));
      const auto lg = cuda_test::rounded(lg0, t);
      std::vector<double> ref(lg.begin(), lg.end()), loss(NT);
      for (int r = 0; r < NT; ++r)
        loss[r] = cross_entropy_fwd_bwd(ref.data() + size_t(r) * V, V, tg[r], double(scale));
      const size_t as = cuda::act_size(t);
      auto dl = placed_act(lg, t, shift), dt = placed(tg, 0);
      auto rl = placed_poisoned(NT * 4, 0), grad = placed_poisoned(lg.size() * as, shift * as);
      cuda::train_cross_entropy(t, dl.p(), dt.p<int>(), NT, V, scale, rl.p<float>(), grad.p(),
                                nullptr);
      EXPECT_LT(rel_error(rl.f32(NT), loss), 1e-5);
      EXPECT_LT(rel_error(grad.act(t, lg.size()), ref), cuda_test::tol(t));
      // Loss only: the same losses.
      auto rl2 = placed_poisoned(NT * 4, 0);
      cuda::train_cross_entropy(t, dl.p(), dt.p<int>(), NT, V, scale, rl2.p<float>(), nullptr,
                                nullptr);
      EXPECT_LT(rel_error(rl2.f32(NT), loss), 1e-5);
    }
  }
}

// Router backward, combine forward and backward, and the gather of the expert inputs, on expert
// segments with gap rows as the trainer lays them out (train_pad_groups).
TEST(CudaTrainElementwise, RouterBackwardCombineAndGatherOnPaddedSegments) {
  MIND4_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const int E = 5, K = 2, kGap = 3;
  const float aux_scale = 0.3f;
  // (NT, H, shift): H a multiple of 8 the wide path (13 rows fill no whole block of 8 rows at
  // H 40; H 768 is the benchmark's), H 37 and shifted pointers the element path.
  for (auto [NT, H, shift] : {std::tuple{1, 8, 0}, std::tuple{13, 40, 0}, std::tuple{13, 768, 0},
                              std::tuple{13, 37, 0}, std::tuple{13, 40, 1}}) {
    SCOPED_TRACE(::testing::Message() << "NT " << NT << ", H " << H << ", shift " << shift);
    const std::vector<float> logits = random_normals(size_t(NT) * E, rng);
    std::vector<int> experts(NT * K);
    for (int r = 0; r < NT; ++r) {
      std::vector<double> row(logits.begin() + r * E, logits.begin() + (r + 1) * E);
      std::vector<double> wt(K);
      router_fwd(row.data(), E, K, experts.data() + r * K, wt.data());
    }
    std::vector<int> offsets(E + 1, 0);
    for (int e : experts) ++offsets[e + 1];
    for (int e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
    // Segments of experts 2.. start kGap rows later: rows offsets[2] .. offsets[2] + kGap - 1 are
    // a gap that no assignment uses (its group row is 0, as the trainer zeroes them).
    std::vector<int> cursor(offsets.begin(), offsets.end() - 1), assign_at(NT * K);
    const int A = NT * K + kGap;
    std::vector<int> group_row(A, 0);
    for (int i = 0; i < NT * K; ++i) {
      assign_at[i] = cursor[experts[i]]++ + kGap * (experts[i] > 1);
      group_row[assign_at[i]] = i / K;
    }
    auto weights = random_normals(size_t(NT) * K, rng), probs = random_normals(size_t(NT) * E, rng);
    for (auto& w : weights) w = std::abs(w);
    for (auto& p : probs) p = std::abs(p) / 3;
    const auto dweights = random_normals(size_t(NT) * K, rng),
               dx = random_normals(size_t(NT) * H, rng), xmid = random_normals(size_t(NT) * H, rng),
               bias = random_normals(size_t(E) * H, rng);
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      SCOPED_TRACE(cuda::act_name(t));
      const size_t as = cuda::act_size(t);
      const auto dxe = cuda_test::rounded(random_normals(size_t(A) * H, rng), t);
      const auto y = cuda_test::rounded(random_normals(size_t(A) * H, rng), t);
      const auto xn = cuda_test::rounded(random_normals(size_t(NT) * H, rng), t);
      const auto ref = mind4::testing::router_combine_ref(experts, assign_at, weights, dweights,
                                                          probs, offsets, aux_scale, dxe, y, dx,
                                                          xmid, bias, NT, E, K, H, size_t(A));
      const auto &dlog = ref.dlog, &dt = ref.dt, &xout = ref.xout, &dw = ref.dw, &dy = ref.dy;
      const size_t fs = 4 * shift, ashift = as * shift;  // byte shifts of f32 and act arrays
      auto d_ex = placed(experts, 0), d_at = placed(assign_at, 0), d_w = placed(weights, 0),
           d_dw = placed(dweights, 0), d_p = placed(probs, 0), d_off = placed(offsets, 0),
           d_gr = placed(group_row, 0), d_dxe = placed_act(dxe, t, shift),
           d_y = placed_act(y, t, shift), d_xn = placed_act(xn, t, shift), d_dx = placed(dx, fs),
           d_xmid = placed(xmid, fs), d_bias = placed(bias, fs);

      auto dl = placed_poisoned(dlog.size() * as, 0), ddt = placed_poisoned(dt.size() * 4, fs);
      cuda::train_router_bwd(t, d_ex.p<int>(), d_w.p<float>(), d_dw.p<float>(), d_p.p<float>(),
                             d_off.p<int>(), aux_scale, d_dxe.p(), d_at.p<int>(), NT, E, K, H,
                             nullptr, dl.p(), ddt.p<float>(), nullptr);
      const auto dlog_got = dl.act(t, dlog.size());
      EXPECT_LT(rel_error(dlog_got, dlog), cuda_test::tol(t));
      EXPECT_LT(rel_error(ddt.f32(dt.size()), dt), 1e-5);
      // With the router product's input gradient folded in: dt + dlogits gate_w, from the logit
      // gradients as the kernel stored them (rounded to act).
      const auto gate_w = cuda_test::rounded(random_normals(size_t(E) * H, rng), t);
      std::vector<double> dt_fold(dt);
      for (int r = 0; r < NT; ++r)
        for (int e = 0; e < E; ++e)
          for (int j = 0; j < H; ++j)
            dt_fold[size_t(r) * H + j] +=
                double(dlog_got[size_t(r) * E + e]) * gate_w[size_t(e) * H + j];
      auto d_gw = placed_act(gate_w, t, shift), dl2 = placed_poisoned(dlog.size() * as, 0),
           ddt2 = placed_poisoned(dt.size() * 4, fs);
      cuda::train_router_bwd(t, d_ex.p<int>(), d_w.p<float>(), d_dw.p<float>(), d_p.p<float>(),
                             d_off.p<int>(), aux_scale, d_dxe.p(), d_at.p<int>(), NT, E, K, H,
                             d_gw.p(), dl2.p(), ddt2.p<float>(), nullptr);
      EXPECT_EQ(dl2.act(t, dlog.size()), dlog_got);
      EXPECT_LT(rel_error(ddt2.f32(dt.size()), dt_fold), 1e-5) << "folded router gradient";

      auto dxo = placed_poisoned(xout.size() * 4, fs);
      cuda::train_moe_combine_fwd(t, d_xmid.p<float>(), d_y.p(), d_bias.p<float>(), d_ex.p<int>(),
                                  d_at.p<int>(), d_w.p<float>(), NT, K, H, dxo.p<float>(), nullptr);
      EXPECT_LT(rel_error(dxo.f32(xout.size()), xout), 1e-5);

      // dy: the gap rows stay as the trainer zeroed them.
      auto ddw = placed_poisoned(dw.size() * 4, 0),
           ddy = placed(std::vector<uint8_t>(dy.size() * as, 0), ashift);
      cuda::train_moe_combine_bwd(t, d_dx.p<float>(), d_y.p(), d_bias.p<float>(), d_ex.p<int>(),
                                  d_at.p<int>(), d_w.p<float>(), NT, K, H, ddw.p<float>(), ddy.p(),
                                  nullptr);
      EXPECT_LT(rel_error(ddw.f32(dw.size()), dw), 1e-5);
      EXPECT_LT(rel_error(ddy.act(t, dy.size()), dy), cuda_test::tol(t));

      // The expert inputs: row group_row[i] of the normed rows, an exact copy (gap rows: row 0).
      auto dxe_out = placed_poisoned(size_t(A) * H * as, ashift);
      cuda::gather_rows(t, d_xn.p(), d_gr.p<int>(), A, H, dxe_out.p(), nullptr);
      const auto got = dxe_out.fetch(size_t(A) * H * as);
      const auto src = cuda_test::to_act(xn, t);
      for (int i = 0; i < A; ++i)
        EXPECT_EQ(0, std::memcmp(got.data() + size_t(i) * H * as,
                                 src.data() + size_t(group_row[i]) * H * as, H * as))
            << "gathered row " << i;
    }
  }
}

// gather_rows' three word sizes: 16 bytes, 4 bytes (rows and pointers on the 4-byte grid, not all
// on the 16-byte one), 2 bytes (bf16 rows of an odd length, or pointers off the 4-byte grid); rows
// repeated and out of order; a single row.
TEST(CudaTrainElementwise, GatherRowsEveryWordSize) {
  MIND4_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  for (auto [R, L, H, shift] :
       {std::tuple{1, 1, 8, 0}, std::tuple{7, 19, 40, 0}, std::tuple{7, 19, 40, 1},
        std::tuple{7, 19, 40, 2}, std::tuple{5, 9, 37, 0}, std::tuple{300, 261, 1000, 0}}) {
    SCOPED_TRACE(::testing::Message()
                 << "R " << R << ", L " << L << ", H " << H << ", shift " << shift);
    std::vector<int> rows(L);
    for (auto& r : rows) r = int(rng() % R);
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      SCOPED_TRACE(cuda::act_name(t));
      const size_t as = cuda::act_size(t);
      const auto src = cuda_test::to_act(random_normals(size_t(R) * H, rng), t);
      auto d_src = placed(src, shift * as), d_rows = placed(rows, 0),
           dst = placed_poisoned(size_t(L) * H * as, shift * as);
      cuda::gather_rows(t, d_src.p(), d_rows.p<int>(), L, H, dst.p(), nullptr);
      const auto got = dst.fetch(size_t(L) * H * as);
      for (int i = 0; i < L; ++i)
        EXPECT_EQ(0, std::memcmp(got.data() + size_t(i) * H * as,
                                 src.data() + size_t(rows[i]) * H * as, H * as))
            << "row " << i;
    }
  }
}

}  // namespace
}  // namespace mind4::train

#endif  // MIND4_HAVE_CUDA
