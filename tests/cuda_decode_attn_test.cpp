// The grouped decode attention (src/cuda/attention_decode_gqa.cu: one block per row, KV head and
// key split, all query heads of the group against one read of the keys and values) against the
// CPU reference attention (cpu::attention_head, as tests/cuda_ops_test.cpp checks the per-head
// kernel): fresh random inputs, NaN-poisoned outputs and split-K partials, per-row relative error.
// Shapes: 1 row and 64 rows of different sequences and positions; positions 0, 1, window - 1,
// window, far beyond the window; 4096 keys; NH = NKV, NH = 4 NKV (padded heads) and NH = 8 NKV;
// D 16, 32, 64 and 128; the split count of the heuristic, one split, and more splits than a row
// has tiles (splits without keys); both activation dtypes; in bf16 both kernels (tensor cores and
// CUDA cores).
#include <gtest/gtest.h>

#include "mind4/status.h"

#ifdef MIND4_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "cuda/kernels.h"
#include "cuda_test_util.h"

namespace mind4 {
namespace {

using cuda::ActType;
using namespace cuda_test;

struct CudaDecodeAttnTest : ::testing::TestWithParam<ActType>, RandomInputs {
  void SetUp() override { MIND4_REQUIRE_GPU(); }

  struct Case {
    int NH, NKV, D;
    int P, S;  // cache positions per slot, slots
    int window;
    std::vector<int> pos, slot;  // one per row
    int splits;                  // 0: attention_decode_gqa_splits' choice
    float q_sd = 1.0f;           // larger: sharper softmax (maxima that move across tiles)
  };

  static std::string describe(const Case& c, int splits) {
    std::ostringstream s;
    s << "NH=" << c.NH << " NKV=" << c.NKV << " D=" << c.D << " rows=" << c.pos.size()
      << " P=" << c.P << " window=" << c.window << " splits=" << splits << " q_sd=" << c.q_sd;
    if (c.pos.size() <= 4) {
      s << " pos=";
      for (int p : c.pos) s << p << ",";
    }
    return s.str();
  }

  // Runs the kernel on fresh random data and compares every row with the CPU reference.
  void check(const Case& c) {
    const ActType t = GetParam();
    const int NH = c.NH, NKV = c.NKV, D = c.D, B = int(c.pos.size());
    const int QKV = (NH + 2 * NKV) * D, W = NKV * D;
    ASSERT_TRUE(cuda::attention_decode_gqa_supported(NH, NKV, D));
    const auto qkv = rounded(normal(size_t(B) * QKV, c.q_sd), t);
    const auto kc = rounded(normal(size_t(c.S) * c.P * W), t);
    const auto vc = rounded(normal(size_t(c.S) * c.P * W), t);
    const auto sinks = normal(NH, 1.0f);
    const int max_keys = c.window ? std::min(c.window, c.P) : c.P;
    const int splits = c.splits ? c.splits
                                : cuda::attention_decode_gqa_splits(B, NKV, max_keys, 64,
                                                                    cuda::multiprocessor_count());
    const std::string what = describe(c, splits);
    const Inputs in{upload(to_act(qkv, t)), upload(to_act(kc, t)), upload(to_act(vc, t)),
                    upload(sinks),          upload(c.pos),         upload(c.slot)};
    const float scale = 1.0f / std::sqrt(float(D));
    const auto want_all =
        attention_ref(qkv, kc, vc, sinks, NH, NKV, D, c.P, c.pos, c.slot, c.window, scale);
    using K = cuda::DecodeAttnKernel;
    for (const K which : {K::kTensorCores, K::kCudaCores})
      check_kernel(c, which, what + (which == K::kTensorCores ? " tensor cores" : " CUDA cores"),
                   splits, max_keys, want_all, in);
  }

  struct Inputs {
    cuda::DeviceBuffer qkv, k, v, sinks, pos, slot;
  };

  // One kernel on the uploaded inputs against the reference outputs (f32 mode runs the CUDA-core
  // kernel for both).
  void check_kernel(const Case& c, cuda::DecodeAttnKernel which, const std::string& what,
                    int splits, int max_keys, const std::vector<double>& want_all,
                    const Inputs& in) {
    const ActType t = GetParam();
    const int NH = c.NH, NKV = c.NKV, D = c.D, B = int(c.pos.size());
    auto d_partial = poisoned(size_t(B) * NH * splits * (D + 2) * 4);
    auto d_out = poisoned(size_t(B) * NH * D * 4);
    const float scale = 1.0f / std::sqrt(float(D));
    cuda::attention_decode_gqa(t, in.qkv.data(), NH, NKV, D, {in.k.data(), in.v.data(), c.P},
                               in.pos.data<int>(), in.slot.data<int>(), in.sinks.data<float>(), B,
                               c.window, scale, splits, d_partial.data<float>(), d_out.data(),
                               nullptr, which);
    const auto out = download_act(d_out, size_t(B) * NH * D, t);
    double worst = 0;
    int worst_row = -1;
    for (int r = 0; r < B; ++r) {
      const std::vector<double> want(want_all.begin() + size_t(r) * NH * D,
                                     want_all.begin() + size_t(r + 1) * NH * D);
      const std::vector<float> got(out.begin() + size_t(r) * NH * D,
                                   out.begin() + size_t(r + 1) * NH * D);
      const double e = rel_error(got, want);
      if (!(e <= worst)) worst = e, worst_row = r;  // NaN and infinity count as worst
    }
    // The f32 reference sums its softmax denominator and outputs in float, one key after the
    // other: its own error grows like sqrt(keys) (about 3e-6 at 4096 keys), hence the bound.
    const double bound =
        t == ActType::kF32 ? 1e-5 * std::max(1.0, std::sqrt(max_keys / 512.0)) : tol(t);
    EXPECT_LT(worst, bound) << what << " (worst row " << worst_row << ", position "
                            << (worst_row >= 0 ? c.pos[worst_row] : -1) << ")";
  }
};

std::string act_name_of(const ::testing::TestParamInfo<ActType>& i) {
  return cuda::act_name(i.param);
}

// One row at the positions where the window and the first tiles have their edges.
TEST_P(CudaDecodeAttnTest, OneRowAtWindowEdges) {
  SCOPED_TRACE(seed);
  const int window = 128, P = 1000;
  for (int p : {0, 1, 31, 32, window - 1, window, window + 1, 700, P - 1})
    for (int splits : {0, 1, 5}) check({64, 8, 64, P, 2, window, {p}, {1}, splits});
  // Full attention over the same positions (window 0), and a window longer than the context.
  for (int p : {0, 1, window - 1, window, P - 1}) {
    check({64, 8, 64, P, 1, 0, {p}, {0}, 0});
    check({64, 8, 64, P, 1, 4000, {p}, {0}, 0});
  }
}

// 4096 keys, as BM_CudaAttentionDecode measures: full attention at the last position, and the
// sliding window far behind it.
TEST_P(CudaDecodeAttnTest, FourThousandKeys) {
  SCOPED_TRACE(seed);
  const int P = 4096;
  for (int splits : {0, 1, 7}) check({64, 8, 64, P, 2, 0, {P - 1}, {1}, splits});
  check({64, 8, 64, P, 2, 0, {P - 1, P - 2, 2047, 4000}, {0, 1, 1, 0}, 0, 3.0f});
  check({64, 8, 64, P, 2, 128, {P - 1, 3000}, {1, 0}, 0});
}

// 64 rows, each of its own sequence, at random positions (0 and the last position included),
// below and beyond the window.
TEST_P(CudaDecodeAttnTest, SixtyFourRowsOfDifferentSequences) {
  SCOPED_TRACE(seed);
  const int B = 64, P = 300;
  std::vector<int> pos(B), slot(B);
  for (int r = 0; r < B; ++r) pos[r] = int(rng() % P), slot[r] = (r * 37) % B;
  pos[0] = 0, pos[1] = 1, pos[2] = 127, pos[3] = 128, pos[B - 1] = P - 1;
  for (int window : {0, 128})
    for (int splits : {0, 1, 4}) check({64, 8, 64, P, B, window, pos, slot, splits});
  // Rows sharing a sequence at different positions (a batch of speculative or parallel steps).
  std::vector<int> same(B, 0);
  check({64, 8, 64, P, 1, 128, pos, same, 0, 2.0f});
}

// Head shapes: NH = NKV (one query head per block), 4 query heads per KV head (the kernel's
// padded heads must stay unwritten and not disturb the others), D 16, 32 and 128.
TEST_P(CudaDecodeAttnTest, HeadShapes) {
  SCOPED_TRACE(seed);
  struct Shape {
    int NH, NKV, D;
  };
  const int P = 400;
  for (const Shape s : {Shape{8, 8, 64}, Shape{8, 8, 32}, Shape{64, 8, 32}, Shape{16, 4, 32},
                        Shape{4, 4, 16}, Shape{16, 2, 128}, Shape{2, 2, 128}, Shape{8, 1, 16}}) {
    check({s.NH, s.NKV, s.D, P, 3, 0, {0, 1, 399, 250, 17}, {0, 1, 2, 2, 0}, 0});
    check({s.NH, s.NKV, s.D, P, 3, 100, {0, 99, 100, 399, 250}, {2, 1, 0, 2, 1}, 3, 3.0f});
    // One split (the window keeps every row within 256 keys): in bf16 the tensor-core kernel
    // shares each row's tiles among the warps of its block.
    check({s.NH, s.NKV, s.D, P, 3, 200, {0, 130, 199, 399, 250}, {2, 1, 0, 2, 1}, 0});
  }
}

TEST_P(CudaDecodeAttnTest, RejectsUnsupportedShapes) {
  EXPECT_FALSE(cuda::attention_decode_gqa_supported(64, 4, 64));  // 16 query heads per KV head
  EXPECT_FALSE(cuda::attention_decode_gqa_supported(64, 8, 48));  // D not a power of two
  EXPECT_FALSE(cuda::attention_decode_gqa_supported(64, 8, 256));
  EXPECT_FALSE(cuda::attention_decode_gqa_supported(6, 4, 64));
  EXPECT_TRUE(cuda::attention_decode_gqa_supported(64, 8, 64));
  cuda::DeviceBuffer b(64);
  try {
    cuda::attention_decode_gqa(GetParam(), b.data(), 64, 8, 48, {b.data(), b.data(), 4},
                               b.data<int>(), b.data<int>(), b.data<float>(), 1, 0, 1.0f, 1,
                               nullptr, b.data(), nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("attention_decode_gqa"), std::string::npos) << e.what();
  }
  try {  // several splits need the partial buffer
    cuda::attention_decode_gqa(GetParam(), b.data(), 64, 8, 64, {b.data(), b.data(), 4},
                               b.data<int>(), b.data<int>(), b.data<float>(), 1, 0, 1.0f, 2,
                               nullptr, b.data(), nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
  }
}

// The split count: enough blocks to fill the GPU (an H100 SXM's 132 multiprocessors, an H100
// PCIe's 114) where the keys allow it, never more splits than the partial buffer holds, never a
// split shorter than one 32-key tile per warp (128 keys), and one split up to 256 keys (no
// combine kernel). Host arithmetic: runs without a GPU.
TEST(CudaDecodeAttnSplits, FillTheGpuWithinTheBuffer) {
  for (int sms : {132, 114})
    for (int B : {1, 2, 16, 64})
      for (int keys : {1, 128, 129, 256, 257, 4096, 131072})
        for (int cap : {1, 8, 64}) {
          const int s = cuda::attention_decode_gqa_splits(B, 8, keys, cap, sms);
          EXPECT_GE(s, 1);
          EXPECT_LE(s, cap);
          EXPECT_LE(s, std::max(1, (keys + 127) / 128)) << B << " " << keys;
          // The split is below its bound only when the GPU already has 2 waves of blocks or more.
          if (keys <= 256) EXPECT_EQ(s, 1) << keys;
          if (keys > 256 && s < std::min(cap, (keys + 127) / 128)) {
            EXPECT_GE(B * 8 * s, 2 * sms) << sms << " " << B << " " << keys << " " << cap;
          }
        }
  EXPECT_EQ(cuda::attention_decode_gqa_splits(1, 8, 257, 64, 132), 3);
  EXPECT_EQ(cuda::attention_decode_gqa_splits(1, 8, 4096, 64, 132), 32);
  EXPECT_EQ(cuda::attention_decode_gqa_splits(16, 8, 4096, 64, 132), 9);
  EXPECT_EQ(cuda::attention_decode_gqa_splits(16, 8, 4096, 64, 114), 8);
  EXPECT_GE(64 * 8 * cuda::attention_decode_gqa_splits(64, 8, 4096, 64, 132), 2 * 3 * 132);
}

INSTANTIATE_TEST_SUITE_P(Act, CudaDecodeAttnTest, ::testing::Values(ActType::kF32, ActType::kBF16),
                         act_name_of);

}  // namespace
}  // namespace mind4

#else  // no CUDA line in this build

TEST(CudaDecodeAttn, NotCompiledIn) {
  GTEST_SKIP() << "CUDA decode attention tests skipped: this build has no CUDA line (nvcc not "
                  "found or MIND4_CUDA=OFF)";
}

#endif
