// The expert bias gradients summed inside the SwiGLU and combine backwards
// (train_swiglu_bwd_bias, train_moe_combine_bwd_bias), down both paths: the fused one (segments
// starting on multiples of the chunk, 16-byte rows and pointers; chunks of 32 or 64 rows, and of
// 128 where those would not fit the scratch) and the fallback (the plain kernel, then
// train_colsum_segments: segments off the chunk grid, odd widths, pointers off the 16-byte grid).
// Segments of several sizes, empty experts among them and a last segment that ends inside a chunk.
// Against double-precision references (train/ops.h's SwiGLU backward; the combine's gradients
// written out), fresh random inputs, outputs and scratch NaN-poisoned first; and two runs give the
// same bits. Without a GPU these tests skip.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "train_test_util.h"

#ifdef MIND4_HAVE_CUDA
#include "cuda/train_kernels.h"
#include "cuda_placed.h"
#include "cuda_test_util.h"

namespace mind4::train {
namespace {

using cuda::ActType;
using cuda_test::placed;
using cuda_test::Placed;
using cuda_test::placed_poisoned;
using cuda_test::rel_error;
using mind4::testing::as_doubles;
using mind4::testing::random_normals;

// Segment offsets [E + 1] from the rows of each segment.
std::vector<int> bias_sums_offsets(const std::vector<int>& rows) {
  std::vector<int> seg(rows.size() + 1, 0);
  for (size_t e = 0; e < rows.size(); ++e) seg[e + 1] = seg[e] + rows[e];
  return seg;
}

// out[e, j] = init[e, j] + sum over rows of segment e of v[r, j].
std::vector<double> bias_sums_ref(const std::vector<double>& v, const std::vector<int>& seg, int N,
                                  const std::vector<float>& init) {
  std::vector<double> out(init.begin(), init.end());
  for (size_t e = 0; e + 1 < seg.size(); ++e)
    for (int r = seg[e]; r < seg[e + 1]; ++r)
      for (int j = 0; j < N; ++j) out[e * N + j] += v[size_t(r) * N + j];
  return out;
}

// Empty segments leave their row of the bias gradient as it was (0 is added).
void expect_empty_segments_kept(const std::vector<float>& got, const std::vector<float>& init,
                                const std::vector<int>& seg, int N) {
  for (size_t e = 0; e + 1 < seg.size(); ++e)
    if (seg[e] == seg[e + 1])
      for (int j = 0; j < N; ++j)
        ASSERT_EQ(got[e * N + j], init[e * N + j]) << "empty expert " << e << ", column " << j;
}

struct SwigluBiasCase {
  int I;
  std::vector<int> rows;  // per segment
  size_t shift;           // elements
  bool fused;             // the path the launcher must take
};

TEST(CudaTrainBiasSums, SwigluBackwardSumsItsBiasGradient) {
  MIND4_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const float limit = 1.5f;
  const std::vector<SwigluBiasCase> cases = {
      // The benchmark's I; empty experts between full ones; the last ends inside a 64-row chunk.
      {1024, {256, 0, 512, 0, 100}, 0, true},
      // 3 column groups of a block's 32; one-row last segment; an empty first one.
      {12, {0, 64, 128, 1}, 0, true},
      // 129 column groups: a fifth column block with one; a single segment.
      {516, {320}, 0, true},
      // 70000 rows of I 4: 64-row chunks would overflow the scratch, 128-row ones do not.
      {4, {25600, 0, 44288, 100}, 0, true},
      // Fallbacks: segments off the 64-row grid (by far, and by 32 rows); odd I; pointers off the
      // 16-byte grid.
      {1024, {100, 28, 300}, 0, false},
      {16, {32, 64}, 0, false},
      {13, {64, 64, 7}, 0, false},
      {16, {64, 0, 70}, 1, false},
  };
  for (const SwigluBiasCase& c : cases) {
    const std::vector<int> seg = bias_sums_offsets(c.rows);
    const int E = int(c.rows.size()), A = seg[E], I = c.I, N = 2 * I;
    SCOPED_TRACE(::testing::Message()
                 << "I " << I << ", A " << A << ", E " << E << ", shift " << c.shift);
    const auto h0 = random_normals(size_t(A) * N, rng, 2.0),
               dact0 = random_normals(size_t(A) * I, rng),
               init = random_normals(size_t(E) * N, rng);
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      SCOPED_TRACE(cuda::act_name(t));
      const size_t as = cuda::act_size(t);
      const auto h = cuda_test::rounded(h0, t), dact = cuda_test::rounded(dact0, t);
      const auto dh_ref =
          mind4::testing::swiglu_rows_bwd_ref(as_doubles(h), as_doubles(dact), I, limit);
      const auto db_ref = bias_sums_ref(dh_ref, seg, N, init);
      auto d_h = placed(cuda_test::to_act(h, t), c.shift * as),
           d_dact = placed(cuda_test::to_act(dact, t), c.shift * as), d_seg = placed(seg);
      auto partial = placed_poisoned(cuda::train_colsum_scratch_floats(N, E) * 4);
      std::vector<uint8_t> dh_bits, db_bits;
      for (int run = 0; run < 2; ++run) {
        auto d_dh = placed_poisoned(size_t(A) * N * as, c.shift * as), d_db = placed(init);
        ASSERT_EQ(
            cuda::train_swiglu_bwd_bias_fused(d_h.p(), d_dact.p(), I, seg.data(), E, d_dh.p()),
            c.fused);
        cuda::train_swiglu_bwd_bias(t, d_h.p(), d_dact.p(), I, limit, d_seg.p<int>(), seg.data(), E,
                                    d_dh.p(), partial.p<float>(), d_db.p<float>(), nullptr);
        const auto dh = d_dh.act(t);
        const auto db = d_db.f32();
        if (run == 0) {
          EXPECT_LT(rel_error(dh, dh_ref), 2 * cuda_test::tol(t));
          EXPECT_LT(rel_error(db, db_ref), 2 * cuda_test::tol(t));
          // Tighter: the sums of what the kernel stored (f32 accumulation only).
          EXPECT_LT(rel_error(db, bias_sums_ref(as_doubles(dh), seg, N, init)), 1e-5);
          expect_empty_segments_kept(db, init, seg, N);
          dh_bits = d_dh.fetch(), db_bits = d_db.fetch();
        } else {
          EXPECT_TRUE(d_dh.fetch() == dh_bits) << "dh differs between two runs";
          EXPECT_TRUE(d_db.fetch() == db_bits) << "the bias gradient differs between two runs";
        }
        // The scratch of the next run is poisoned again.
        cuda::check(cudaMemset(partial.buf.data(), 0xff, partial.bytes), "test poison");
      }
    }
  }
}

struct CombineBiasCase {
  int NT, K, H, E;
  int used;       // experts 0 .. used - 1 get assignments, the rest none (empty segments)
  int grid;       // segments start on multiples of this
  bool pad_last;  // the last segment padded to the grid too, or ending at its last assignment
  size_t shift;   // elements
  bool fused;
};

TEST(CudaTrainBiasSums, CombineBackwardSumsItsBiasGradient) {
  MIND4_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const std::vector<CombineBiasCase> cases = {
      // As the trainer lays them out (256-row grid) at the benchmark's H; experts 5..7 empty.
      {300, 4, 768, 8, 5, 256, true, 0, true},
      // 64- and 32-row grids, the last segment ending inside its chunk; H 40: 5 lanes of 32 busy.
      {97, 2, 40, 6, 6, 64, false, 0, true},
      {97, 2, 40, 6, 6, 32, false, 0, true},
      // A single row.
      {1, 1, 8, 3, 3, 256, false, 0, true},
      // 80000+ rows of H 8: 128-row chunks (32- and 64-row ones would overflow the scratch).
      {40000, 2, 8, 4, 4, 256, true, 0, true},
      // Fallbacks: segments off the 32-row grid; odd H; pointers off the 16-byte grid.
      {97, 2, 40, 6, 4, 8, true, 0, false},
      {50, 2, 37, 4, 4, 64, true, 0, false},
      {50, 2, 40, 4, 3, 64, true, 1, false},
  };
  for (const CombineBiasCase& c : cases) {
    const int NT = c.NT, K = c.K, H = c.H, E = c.E;
    SCOPED_TRACE(::testing::Message() << "NT " << NT << ", K " << K << ", H " << H << ", E " << E
                                      << ", grid " << c.grid << ", shift " << c.shift);
    // K distinct experts per row among the used ones.
    std::vector<int> experts(size_t(NT) * K), all(c.used);
    for (int r = 0; r < NT; ++r) {
      for (int e = 0; e < c.used; ++e) all[e] = e;
      std::shuffle(all.begin(), all.end(), rng);
      std::copy(all.begin(), all.begin() + K, experts.begin() + size_t(r) * K);
    }
    std::vector<int> count(E, 0), offsets(E + 1, 0), rows(E);
    for (int e : experts) ++count[e];
    for (int e = 0; e < E; ++e) {
      offsets[e + 1] = offsets[e] + count[e];
      rows[e] = (count[e] + c.grid - 1) / c.grid * c.grid;
    }
    int last = E - 1;
    while (last > 0 && count[last] == 0) --last;
    if (!c.pad_last) rows[last] = count[last];  // the experts after it are empty
    // The fallback case off the 32-row grid: make sure the second segment starts off it.
    if (!c.fused && c.grid < 32 && rows[0] % 32 == 0) rows[0] += c.grid;
    const std::vector<int> seg = bias_sums_offsets(rows);
    const int A = seg[E];
    // Assignment j of expert e at row seg[e] + j, in assignment order (as moe_group and
    // train_pad_groups place them); the gap rows' group row is 0.
    std::vector<int> assign_at(size_t(NT) * K), group_row(A, 0), cursor(seg.begin(), seg.end() - 1);
    for (int i = 0; i < NT * K; ++i) {
      assign_at[i] = cursor[experts[i]]++;
      group_row[assign_at[i]] = i / K;
    }
    auto weights = random_normals(size_t(NT) * K, rng);
    for (auto& w : weights) w = std::abs(w);
    const auto dx = random_normals(size_t(NT) * H, rng), bias = random_normals(size_t(E) * H, rng),
               init = random_normals(size_t(E) * H, rng), y0 = random_normals(size_t(A) * H, rng);
    for (ActType t : {ActType::kF32, ActType::kBF16}) {
      SCOPED_TRACE(cuda::act_name(t));
      const size_t as = cuda::act_size(t), fs = 4 * c.shift;
      const auto y = cuda_test::rounded(y0, t);
      std::vector<double> dw_ref(size_t(NT) * K), dy_ref(size_t(A) * H, 0.0);
      for (int i = 0; i < NT * K; ++i) {
        const int r = i / K, at = assign_at[i], e = experts[i];
        double d = 0;
        for (int j = 0; j < H; ++j) {
          const double g = dx[size_t(r) * H + j];
          d += g * (double(y[size_t(at) * H + j]) + bias[size_t(e) * H + j]);
          dy_ref[size_t(at) * H + j] = weights[i] * g;
        }
        dw_ref[i] = d;
      }
      const auto db_ref = bias_sums_ref(dy_ref, seg, H, init);
      auto d_dx = placed(dx, fs), d_y = placed(cuda_test::to_act(y, t), c.shift * as),
           d_bias = placed(bias, fs), d_ex = placed(experts), d_at = placed(assign_at),
           d_w = placed(weights), d_off = placed(offsets), d_gr = placed(group_row),
           d_seg = placed(seg);
      auto partial = placed_poisoned(cuda::train_colsum_scratch_floats(H, E) * 4);
      std::vector<uint8_t> dy_bits, dw_bits, db_bits;
      for (int run = 0; run < 2; ++run) {
        auto d_dy = placed_poisoned(size_t(A) * H * as, c.shift * as),
             d_dw = placed_poisoned(size_t(NT) * K * 4), d_db = placed(init);
        ASSERT_EQ(cuda::train_moe_combine_bwd_bias_fused(
                      d_dx.p<float>(), d_y.p(), d_bias.p<float>(), H, seg.data(), E, d_dy.p()),
                  c.fused);
        cuda::train_moe_combine_bwd_bias(
            t, d_dx.p<float>(), d_y.p(), d_bias.p<float>(), d_ex.p<int>(), d_at.p<int>(),
            d_w.p<float>(), d_off.p<int>(), d_gr.p<int>(), NT, K, H, d_seg.p<int>(), seg.data(), E,
            d_dw.p<float>(), d_dy.p(), partial.p<float>(), d_db.p<float>(), nullptr);
        const auto dy = d_dy.act(t);
        const auto db = d_db.f32();
        if (run == 0) {
          EXPECT_LT(rel_error(d_dw.f32(), dw_ref), 1e-5);
          EXPECT_LT(rel_error(dy, dy_ref), cuda_test::tol(t));
          for (int e = 0; e < E; ++e)  // the gap rows: zeros, written whatever was there
            for (int at = seg[e] + count[e]; at < seg[e + 1]; ++at)
              for (int j = 0; j < H; ++j)
                ASSERT_EQ(dy[size_t(at) * H + j], 0.0f) << "gap row " << at << ", column " << j;
          EXPECT_LT(rel_error(db, db_ref), cuda_test::tol(t));
          EXPECT_LT(rel_error(db, bias_sums_ref(as_doubles(dy), seg, H, init)), 1e-5);
          expect_empty_segments_kept(db, init, seg, H);
          dy_bits = d_dy.fetch(), dw_bits = d_dw.fetch(), db_bits = d_db.fetch();
        } else {
          EXPECT_TRUE(d_dy.fetch() == dy_bits) << "dy differs between two runs";
          EXPECT_TRUE(d_dw.fetch() == dw_bits) << "dweights differ between two runs";
          EXPECT_TRUE(d_db.fetch() == db_bits) << "the bias gradient differs between two runs";
        }
        cuda::check(cudaMemset(partial.buf.data(), 0xff, partial.bytes), "test poison");
      }
    }
  }
}

}  // namespace
}  // namespace mind4::train

#endif  // MIND4_HAVE_CUDA
