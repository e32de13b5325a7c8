// The training RMSNorm backward fused with the column sums over its rows
// (train_rmsnorm_bwd_sums): the new dx, the norm scale's gradient, the column sums of the new dx
// and its rounded copy, against double-precision loops (train/ops.h's rmsnorm_bwd) on fresh random
// inputs. Shapes for both paths: one pass (H a multiple of 128 up to 1024: 128, 768, 1024) and the
// separate kernels (772, 1152); one row, rows that leave warps idle, a partial last block, many
// blocks. Outputs that are written are NaN-poisoned first; the sums add to random starting values.
#include <gtest/gtest.h>

#ifdef MIND4_HAVE_CUDA

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/train_kernels.h"
#include "cuda_test_util.h"
#include "mind4/status.h"
#include "train/ops.h"
#include "train_test_util.h"

namespace mind4::train {
namespace {

using cuda::ActType;
using namespace cuda_test;

struct CudaTrainNormSums : ::testing::Test, RandomInputs {
  void SetUp() override { MIND4_REQUIRE_GPU(); }
};

TEST_F(CudaTrainNormSums, DxScaleGradientBiasSumsAndActCopyMatchDouble) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (auto [NT, H] :
       {std::tuple{1, 768}, std::tuple{5, 128}, std::tuple{1000, 768}, std::tuple{16389, 768},
        std::tuple{37, 1024}, std::tuple{33, 772}, std::tuple{9, 1152}}) {
    const auto x = normal(size_t(NT) * H), g = normal(H), dy = normal(size_t(NT) * H),
               dx_old = normal(size_t(NT) * H), scale_start = normal(H), sum_start = normal(H);
    std::vector<float> rstd(NT);
    for (int r = 0; r < NT; ++r) {
      double ss = 0;
      for (int j = 0; j < H; ++j) ss += double(x[size_t(r) * H + j]) * x[size_t(r) * H + j];
      rstd[r] = float(1.0 / std::sqrt(ss / H + 1e-5));
    }
    const auto xd = mind4::testing::as_doubles(x), gd = mind4::testing::as_doubles(g),
               dyd = mind4::testing::as_doubles(dy);
    for (bool accumulate : {true, false}) {
      std::vector<double> dx(size_t(NT) * H), scale(scale_start.begin(), scale_start.end()),
          sums(sum_start.begin(), sum_start.end());
      for (int r = 0; r < NT; ++r) {
        const size_t at = size_t(r) * H;
        rmsnorm_bwd(xd.data() + at, gd.data(), double(rstd[r]), dyd.data() + at, H, dx.data() + at,
                    scale.data());
        for (int j = 0; j < H; ++j) {
          if (accumulate) dx[at + j] += dx_old[at + j];
          sums[j] += dx[at + j];
        }
      }
      for (ActType t : {ActType::kF32, ActType::kBF16}) {
        // With and without the two optional outputs.
        for (bool extras : {true, false}) {
          const std::string what = std::to_string(NT) + "x" + std::to_string(H) +
                                   (accumulate ? " +=" : " =") + " " + act_name(t) +
                                   (extras ? " with sums and copy" : "");
          auto dx_dev = accumulate ? upload(dx_old) : poisoned(dx.size() * 4);
          auto x_dev = upload(x), g_dev = upload(g), dy_dev = upload(dy), rstd_dev = upload(rstd),
               scale_dev = upload(scale_start), sum_dev = upload(sum_start),
               act = poisoned(dx.size() * cuda::act_size(t)),
               partial = poisoned(size_t(cuda::train_colsum_scratch_floats(H, 1)) * 4);
          cuda::train_rmsnorm_bwd_sums(
              t, x_dev.data<float>(), g_dev.data<float>(), rstd_dev.data<float>(),
              dy_dev.data<float>(), NT, H, accumulate, dx_dev.data<float>(),
              scale_dev.data<float>(), extras ? sum_dev.data<float>() : nullptr,
              extras ? act.data() : nullptr, partial.data<float>(), nullptr);
          const auto got = download<float>(dx_dev, dx.size());
          EXPECT_LT(rel_error(got, dx), 1e-5) << what;
          EXPECT_LT(rel_error(download<float>(scale_dev, H), scale), 1e-5) << what;
          if (!extras) {
            EXPECT_EQ(download<float>(sum_dev, H), sum_start) << what << ": untouched";
            continue;
          }
          EXPECT_LT(rel_error(download<float>(sum_dev, H), sums), 1e-5) << what;
          // The copy is the kernel's own dx rounded once.
          const auto copy = download_act(act, dx.size(), t), want = rounded(got, t);
          size_t mismatches = 0;
          for (size_t i = 0; i < copy.size(); ++i) mismatches += copy[i] != want[i];
          EXPECT_EQ(mismatches, 0u) << what << ": act copy";
        }
      }
    }
  }
}

// A fixed order: two runs give the same bits (the sums are reductions across blocks).
TEST_F(CudaTrainNormSums, SameBitsEveryRun) {
  const int NT = 4099, H = 768;
  const auto x = normal(size_t(NT) * H), g = normal(H), dy = normal(size_t(NT) * H);
  std::vector<float> rstd(NT, 0.7f);
  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; ++run) {
    auto x_dev = upload(x), g_dev = upload(g), dy_dev = upload(dy), rstd_dev = upload(rstd);
    auto dx = poisoned(size_t(NT) * H * 4), act = poisoned(size_t(NT) * H * 2);
    std::vector<float> zeros(H, 0.0f);
    auto scale = upload(zeros), sums = upload(zeros);
    auto partial = poisoned(size_t(cuda::train_colsum_scratch_floats(H, 1)) * 4);
    cuda::train_rmsnorm_bwd_sums(ActType::kBF16, x_dev.data<float>(), g_dev.data<float>(),
                                 rstd_dev.data<float>(), dy_dev.data<float>(), NT, H, false,
                                 dx.data<float>(), scale.data<float>(), sums.data<float>(),
                                 act.data(), partial.data<float>(), nullptr);
    auto s = download<float>(scale, H), d = download<float>(sums, H);
    s.insert(s.end(), d.begin(), d.end());
    runs.push_back(s);
  }
  EXPECT_EQ(runs[0], runs[1]);
}

TEST_F(CudaTrainNormSums, RefusesNullPointersAndBadShapes) {
  std::vector<float> one(128, 1.0f);
  auto a = upload(one), b = upload(one), c = upload(one), d = upload(one), e = upload(one),
       f = upload(one);
  auto partial = poisoned(size_t(cuda::train_colsum_scratch_floats(128, 1)) * 4);
  EXPECT_THROW(
      cuda::train_rmsnorm_bwd_sums(ActType::kF32, a.data<float>(), b.data<float>(), c.data<float>(),
                                   d.data<float>(), 1, 128, false, e.data<float>(), nullptr,
                                   nullptr, nullptr, partial.data<float>(), nullptr),
      Error);
  EXPECT_THROW(
      cuda::train_rmsnorm_bwd_sums(ActType::kF32, a.data<float>(), b.data<float>(), c.data<float>(),
                                   d.data<float>(), 1, 0, false, e.data<float>(), f.data<float>(),
                                   nullptr, nullptr, partial.data<float>(), nullptr),
      Error);
}

}  // namespace
}  // namespace mind4::train

#else  // no CUDA line in this build

TEST(CudaTrainNormSums, NotCompiledIn) {
  GTEST_SKIP() << "CUDA RMSNorm backward sums tests skipped: this build has no CUDA line (nvcc not "
                  "found or MIND4_CUDA=OFF)";
}

#endif
