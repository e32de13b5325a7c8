// The router's weight and bias gradient kernel (train_router_grad.cu) against a double-precision
// loop on the host: out_w [E, H] += dlogits^T t and out_b [E] += the column sums of dlogits, over
// 1 to 32 experts, 1 to 16384 rows, rows of 768 and 64 (16-byte words) and 772 elements or a
// pointer off the 16-byte grid (element by element), bf16 and f32. The outputs accumulate, so they
// start from random values; the scratch starts as NaN bytes. Fresh random inputs each run; the
// same bits on a second run. Without a GPU these tests skip.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "mind4/status.h"
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
using mind4::testing::random_normals;

// One call of the kernel on device copies of the inputs (t shifted `shift` elements into its
// buffer: 1 puts it off the 16-byte grid), outputs starting from w0 and b0.
struct RouterGradOut {
  std::vector<float> w, b;
};
RouterGradOut run_router_grad(ActType t, const std::vector<uint8_t>& dlog,
                              const std::vector<uint8_t>& rows, size_t shift, int NT, int E, int H,
                              const std::vector<float>& w0, const std::vector<float>& b0) {
  const size_t as = cuda::act_size(t);
  std::vector<uint8_t> shifted(shift * as, 0);
  shifted.insert(shifted.end(), rows.begin(), rows.end());
  auto d_dlog = upload(dlog), d_rows = upload(shifted), d_w = upload(w0), d_b = upload(b0);
  auto partial = poisoned(size_t(cuda::train_router_grad_scratch_floats(NT, E, H)) * 4);
  cuda::train_router_grad(t, d_dlog.data(), d_rows.data<uint8_t>() + shift * as, NT, E, H,
                          partial.data<float>(), d_w.data<float>(), d_b.data<float>(), nullptr);
  return {download<float>(d_w, w0.size()), download<float>(d_b, b0.size())};
}

TEST(CudaTrainRouterGrad, WeightAndBiasGradientsAgainstDoubleLoop) {
  MIND4_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  struct Width {
    int H;
    size_t shift;
  };
  for (int NT : {1, 7, 1000, 16384}) {
    for (Width wd : {Width{768, 0}, Width{772, 0}, Width{64, 0}, Width{768, 1}}) {
      const int H = wd.H;
      if (wd.shift && NT > 1000) continue;  // the element path is covered at 772 already
      const std::vector<float> x = random_normals(size_t(NT) * H, rng);
      for (int E : {1, 4, 8, 32}) {
        const std::vector<float> dlog = random_normals(size_t(NT) * E, rng);
        const std::vector<float> w0 = random_normals(size_t(E) * H, rng),
                                 b0 = random_normals(E, rng);
        for (ActType t : {ActType::kBF16, ActType::kF32}) {
          SCOPED_TRACE(::testing::Message() << cuda::act_name(t) << ", NT " << NT << ", H " << H
                                            << ", shift " << wd.shift << ", E " << E);
          // The reference from the values the device sees (bf16-rounded in bf16).
          const std::vector<float> xr = cuda_test::rounded(x, t), dr = cuda_test::rounded(dlog, t);
          std::vector<double> ref_w(w0.begin(), w0.end()), ref_b(b0.begin(), b0.end());
          for (int r = 0; r < NT; ++r) {
            const float* xrow = xr.data() + size_t(r) * H;
            for (int e = 0; e < E; ++e) {
              const double d = dr[size_t(r) * E + e];
              ref_b[e] += d;
              double* wrow = ref_w.data() + size_t(e) * H;
              for (int j = 0; j < H; ++j) wrow[j] += d * xrow[j];
            }
          }
          const auto dlog_act = cuda_test::to_act(dlog, t), x_act = cuda_test::to_act(x, t);
          const RouterGradOut got = run_router_grad(t, dlog_act, x_act, wd.shift, NT, E, H, w0, b0);
          EXPECT_LT(rel_error(got.w, ref_w), 1e-5);
          EXPECT_LT(rel_error(got.b, ref_b), 1e-5);
          // A fixed order of additions: the same bits again.
          const RouterGradOut again =
              run_router_grad(t, dlog_act, x_act, wd.shift, NT, E, H, w0, b0);
          EXPECT_EQ(0, std::memcmp(got.w.data(), again.w.data(), got.w.size() * 4));
          EXPECT_EQ(0, std::memcmp(got.b.data(), again.b.data(), got.b.size() * 4));
        }
      }
    }
  }
}

// No rows: the outputs keep their values (nothing is launched).
TEST(CudaTrainRouterGrad, NoRowsLeavesTheOutputs) {
  MIND4_REQUIRE_GPU();
  const std::vector<float> w0 = {1.0f, -2.0f, 3.0f, 0.5f}, b0 = {4.0f, -1.0f};
  const RouterGradOut got = run_router_grad(ActType::kBF16, {}, {}, 0, 0, 2, 2, w0, b0);
  EXPECT_EQ(got.w, w0);
  EXPECT_EQ(got.b, b0);
}

// The launcher refuses what the kernel is not written for, naming itself (the engine keeps
// cuBLAS beyond 32 experts).
TEST(CudaTrainRouterGrad, LauncherRefusesBadArguments) {
  MIND4_REQUIRE_GPU();
  cuda::DeviceBuffer buf(1 << 20);
  float* f = buf.data<float>();
  auto expect_refused = [&](const char* what, const void* dlog, const void* rows, int NT, int E,
                            int H, float* partial, float* w, float* b) {
    try {
      cuda::train_router_grad(ActType::kBF16, dlog, rows, NT, E, H, partial, w, b, nullptr);
      ADD_FAILURE() << "train_router_grad accepted " << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find("train_router_grad"), std::string::npos) << e.what();
    }
  };
  expect_refused("33 experts", f, f, 16, 33, 64, f, f, f);
  expect_refused("0 experts", f, f, 16, 0, 64, f, f, f);
  expect_refused("H = 0", f, f, 16, 8, 0, f, f, f);
  expect_refused("NT = -1", f, f, -1, 8, 64, f, f, f);
  expect_refused("no logit gradients", nullptr, f, 16, 8, 64, f, f, f);
  expect_refused("no rows", f, nullptr, 16, 8, 64, f, f, f);
  expect_refused("no scratch", f, f, 16, 8, 64, nullptr, f, f);
  expect_refused("no weight gradient", f, f, 16, 8, 64, f, nullptr, f);
  expect_refused("no bias gradient", f, f, 16, 8, 64, f, f, nullptr);
  EXPECT_EQ(cuda::train_router_grad_scratch_floats(0, 8, 64), 0);
  EXPECT_GE(cuda::train_router_grad_scratch_floats(16384, 8, 768), int64_t(8) * (768 + 1));
}

}  // namespace
}  // namespace mind4::train

#endif  // MIND4_HAVE_CUDA
