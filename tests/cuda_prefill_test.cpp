// The prefill kernels of the CUDA line's bf16 mode against the CPU reference: fused flash
// attention (attention_prefill.cu) against cpu::attention_head, and the grouped MXFP4 GEMM of the
// experts (moe_gemm_mf4.cu) against the CPU's MXFP4 decode in double. Fresh random inputs each
// run (the seed is printed on failure), outputs poisoned with NaN, edge shapes: 1 row, row counts
// that are not a multiple of the tiles, windows shorter and longer than the context, a prefill
// that continues a cache, head sizes below the tile, experts with 0 rows and with several tiles,
// k and n not multiples of the tile; and the whole model on the committed fixtures.
#include <gtest/gtest.h>

#ifdef MIND4_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cuda/kernels.h"
#include "cuda_test_util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "mind4/model.h"
#include "model/backend.h"
#include "model/model_impl.h"
#include "router_margins.h"

namespace mind4 {
namespace {

using cuda::ActType;
using namespace cuda_test;

struct CudaPrefillTest : ::testing::Test, RandomInputs {
  void SetUp() override { MIND4_REQUIRE_GPU(); }
};

// Rows are positions pos0 .. pos0 + B - 1 of one slot; the cache holds keys before pos0 too
// (a prefill that continues a sequence) and positions past the step hold stale values.
TEST_F(CudaPrefillTest, FlashAttentionMatchesCpu) {
  SCOPED_TRACE(seed);
  const ActType t = ActType::kBF16;
  struct Case {
    int NH, NKV, D, B, pos0, window;
  };
  for (const Case ac :
       {Case{64, 8, 64, 1, 0, 0}, Case{64, 8, 64, 1, 37, 0}, Case{64, 8, 64, 300, 0, 128},
        Case{64, 8, 64, 300, 50, 0}, Case{64, 8, 64, 200, 20, 1000}, Case{64, 8, 64, 700, 0, 128},
        Case{4, 4, 32, 77, 3, 5}, Case{6, 1, 24, 33, 10, 0}, Case{8, 2, 128, 70, 5, 17},
        Case{4, 2, 16, 7, 0, 1}, Case{2, 1, 8, 130, 0, 0}, Case{4, 2, 16, 48, 0, 8}}) {
    const int NH = ac.NH, NKV = ac.NKV, D = ac.D, B = ac.B, S = 2, slot = 1;
    const int P = ac.pos0 + B + 9, QKV = (NH + 2 * NKV) * D, W = NKV * D;
    const auto qkv = rounded(normal(size_t(B) * QKV), t);
    // Stale cache bytes past the step must not leak in: NaN there (every key the step sees is
    // rewritten below).
    auto kc = rounded(normal(size_t(S) * P * W), t), vc = rounded(normal(size_t(S) * P * W), t);
    for (int p = ac.pos0 + B; p < P; ++p)
      for (int j = 0; j < W; ++j)
        kc[(size_t(slot) * P + p) * W + j] = vc[(size_t(slot) * P + p) * W + j] = NAN;
    const auto sinks = normal(NH, 1.0f);
    auto d_qkv = upload(to_act(qkv, t)), d_k = upload(to_act(kc, t)), d_v = upload(to_act(vc, t));
    auto d_sinks = upload(sinks);
    auto d_out = poisoned(size_t(B) * NH * D * 2);
    const float scale = 1.0f / std::sqrt(float(D));
    cuda::attention_prefill_flash(t, d_qkv.data(), NH, NKV, D, {d_k.data(), d_v.data(), P}, slot,
                                  ac.pos0, d_sinks.data<float>(), B, ac.window, scale, d_out.data(),
                                  nullptr);
    const auto out = download_act(d_out, size_t(B) * NH * D, t);
    const auto want = prefill_attention_ref(qkv, kc, vc, sinks, NH, NKV, D, B, P, slot, ac.pos0,
                                            ac.window, scale);
    EXPECT_LT(rel_error(out, want), 1e-2)
        << "NH=" << NH << " NKV=" << NKV << " D=" << D << " B=" << B << " pos0=" << ac.pos0
        << " window=" << ac.window;
  }
}

TEST_F(CudaPrefillTest, FlashAttentionRejectsWhatItDoesNotServe) {
  EXPECT_FALSE(cuda::attention_prefill_flash_supported(ActType::kF32, 64));
  EXPECT_FALSE(cuda::attention_prefill_flash_supported(ActType::kBF16, 12));
  EXPECT_FALSE(cuda::attention_prefill_flash_supported(ActType::kBF16, 136));
  EXPECT_TRUE(cuda::attention_prefill_flash_supported(ActType::kBF16, 64));
  cuda::DeviceBuffer buf(1024);
  const cuda::KvLayer kv{buf.data(), buf.data(), 4};
  EXPECT_THROW(cuda::attention_prefill_flash(ActType::kF32, buf.data(), 4, 2, 16, kv, 0, 0,
                                             buf.data<float>(), 2, 0, 0.25f, buf.data(), nullptr),
               Error);
  EXPECT_THROW(cuda::attention_prefill_flash(ActType::kBF16, buf.data(), 4, 2, 16, kv, 0, 3,
                                             buf.data<float>(), 2, 0, 0.25f, buf.data(), nullptr),
               Error);  // pos0 + B past the cache
}

double prefill_swiglu_ref(double g, double l, double limit) {
  g = std::min(g, limit);
  l = std::clamp(l, -limit, limit);
  return g / (1.0 + std::exp(-1.702 * g)) * (l + 1.0);
}

// Every expert matrix [rows, cols] decoded to float on the CPU.
std::vector<float> prefill_decode(const std::vector<uint8_t>& blocks,
                                  const std::vector<uint8_t>& scales, int64_t values) {
  std::vector<float> w(static_cast<size_t>(values));
  cpu::mf4_to_f32(blocks.data(), scales.data(), values / 32, w.data());
  return w;
}

double prefill_dot(const float* w, const float* x, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += double(w[i]) * x[i];
  return s;
}

TEST_F(CudaPrefillTest, GroupedMxfp4GemmMatchesCpu) {
  SCOPED_TRACE(seed);
  const ActType t = ActType::kBF16;
  // (B, K, E, H, I, largest scale): one row; experts with 0 rows (E > A); partial tiles; experts
  // of several row tiles (about 320 rows each); k = 96 (a half step of 64 at the end); n = H = 160
  // (a partial column tile); block scales above 2^1 (e8m0 > 128: the skinny kernel's other
  // decode); the gpt-oss-20b shape.
  for (auto [B, K, E, H, I, s_hi] : {std::tuple{1, 4, 32, 128, 64, 126},
                                     {3, 2, 16, 96, 96, 126},
                                     {37, 4, 8, 160, 96, 126},
                                     {320, 4, 4, 64, 128, 126},
                                     {150, 1, 3, 256, 32, 126},
                                     {48, 2, 4, 64, 64, 126},
                                     {24, 4, 8, 64, 96, 131},
                                     {8, 4, 32, 2880, 2880, 126}}) {
    const int A = B * K;
    // Route each row to K distinct random experts and group on the device.
    std::vector<int> experts;
    for (int r = 0; r < B; ++r) {
      std::vector<int> all(E);
      for (int e = 0; e < E; ++e) all[e] = e;
      std::shuffle(all.begin(), all.end(), rng);
      experts.insert(experts.end(), all.begin(), all.begin() + K);
    }
    auto gbuf = poisoned(size_t(2 * (E + 1) + 3 * A) * 4);
    int* gp = gbuf.data<int>();
    const cuda::MoeGroups g{gp, gp + E + 1, gp + 2 * (E + 1), gp + 2 * (E + 1) + A,
                            gp + 2 * (E + 1) + 2 * A};
    auto d_experts = upload(experts);
    cuda::moe_group(d_experts.data<int>(), A, K, E, g, nullptr);

    const auto x = rounded(normal(size_t(B) * H), t);
    const auto b1 = bytes(size_t(E) * 2 * I * H / 2, 0, 255),
               s1 = bytes(size_t(E) * 2 * I * H / 32, 119, s_hi);
    const auto b2 = bytes(size_t(E) * H * I / 2, 0, 255),
               s2 = bytes(size_t(E) * H * I / 32, 119, s_hi);
    const auto bias1 = normal(size_t(E) * 2 * I, 0.5f), bias2 = normal(size_t(E) * H, 0.5f);
    const float limit = 7.0f;
    auto d_x = upload(to_act(x, t));
    auto d_b1 = upload(b1), d_s1 = upload(s1), d_b2 = upload(b2), d_s2 = upload(s2);
    auto d_bias1 = upload(bias1), d_bias2 = upload(bias2);
    const auto all = download<int>(gbuf, size_t(2 * (E + 1) + 3 * A));
    const int* assign_at = all.data() + 2 * (E + 1) + 2 * A;
    const auto w1 = prefill_decode(b1, s1, int64_t(E) * 2 * I * H);
    const auto w2 = prefill_decode(b2, s2, int64_t(E) * H * I);
    // Every kernel (each with a plan of its own tile rows): the mma.sync ones everywhere, the
    // warpgroup-MMA one on Hopper.
    using V = cuda::MoeGemmVariant;
    for (const V v : {V::kMma, V::kMmaWide, V::kMmaTall, V::kWgmma, V::kWgmmaRegs, V::kSkinny}) {
      if ((v == V::kWgmma || v == V::kWgmmaRegs) && !cuda::moe_gemm_wgmma_supported()) continue;
      const int tile_rows = cuda::moe_gemm_tile_rows(v);
      auto d_plan = poisoned(size_t(1 + 2 * cuda::moe_tile_plan_capacity(A, E, tile_rows)) * 4);
      cuda::moe_tile_plan(g.offsets, E, tile_rows, d_plan.data<int>(), nullptr);
      auto d_act = poisoned(size_t(A) * I * 2), d_y = poisoned(size_t(A) * H * 4);
      cuda::moe_mlp1_swiglu_mf4_gemm(v, t, d_x.data(), d_b1.data<uint8_t>(), d_s1.data<uint8_t>(),
                                     d_bias1.data<float>(), g, d_plan.data<int>(), A, E, H, I,
                                     limit, d_act.data(), nullptr);
      cuda::moe_mlp2_mf4_gemm(v, t, d_act.data(), d_b2.data<uint8_t>(), d_s2.data<uint8_t>(),
                              d_bias2.data<float>(), g, d_plan.data<int>(), A, E, H, I,
                              d_y.data<float>(), nullptr);
      const auto act = download_act(d_act, size_t(A) * I, t);
      const auto y = download<float>(d_y, size_t(A) * H);
      // mlp1 from x; mlp2 from the device's own act (the two checks are independent).
      std::vector<float> act_got, y_got;
      std::vector<double> act_want, y_want;
      for (int i = 0; i < A; ++i) {
        const int r = i / K, e = experts[i], at = assign_at[i];
        for (int p = 0; p < I; ++p) {
          const int64_t row = int64_t(e) * 2 * I + 2 * p;
          const float* xr = x.data() + size_t(r) * H;
          const double gate = prefill_dot(w1.data() + row * H, xr, H) + bias1[row];
          const double lin = prefill_dot(w1.data() + (row + 1) * H, xr, H) + bias1[row + 1];
          act_want.push_back(prefill_swiglu_ref(gate, lin, limit));
          act_got.push_back(act[size_t(at) * I + p]);
        }
        for (int n = 0; n < H; ++n) {
          const int64_t row = int64_t(e) * H + n;
          y_want.push_back(prefill_dot(w2.data() + row * I, act.data() + size_t(at) * I, I) +
                           bias2[row]);
          y_got.push_back(y[size_t(at) * H + n]);
        }
      }
      EXPECT_LT(rel_error(act_got, act_want), 1e-2)
          << "mlp1 B=" << B << " K=" << K << " E=" << E << " H=" << H << " I=" << I
          << " variant=" << int(v);
      EXPECT_LT(rel_error(y_got, y_want), 1e-5)
          << "mlp2 B=" << B << " K=" << K << " E=" << E << " H=" << H << " I=" << I
          << " variant=" << int(v);
    }
  }
}

// The tile plan against the host's walk of the same offsets: experts with no rows, more experts
// than a warp's lanes (the device scans them 32 at a time), tiles of 16 and 128 rows.
TEST_F(CudaPrefillTest, TilePlanListsEveryExpertsTilesInOrder) {
  SCOPED_TRACE(seed);
  for (const int E : {3, 32, 40, 128})
    for (const int tile_rows : {16, 128}) {
      std::vector<int> offsets(size_t(E) + 1, 0);
      for (int e = 0; e < E; ++e)
        offsets[size_t(e) + 1] = offsets[size_t(e)] + (rng() % 4 == 0 ? 0 : int(rng() % 300));
      const int A = offsets[size_t(E)];
      std::vector<int> want = {0};
      for (int e = 0; e < E; ++e)
        for (int r = offsets[size_t(e)]; r < offsets[size_t(e) + 1]; r += tile_rows) {
          want.push_back(e);
          want.push_back(r);
          ++want[0];
        }
      auto d_off = upload(offsets);
      const size_t n = size_t(1 + 2 * cuda::moe_tile_plan_capacity(A, E, tile_rows));
      auto d_plan = poisoned(n * 4);
      cuda::moe_tile_plan(d_off.data<int>(), E, tile_rows, d_plan.data<int>(), nullptr);
      const auto got = download<int>(d_plan, want.size());
      EXPECT_EQ(got, want) << "E = " << E << ", tile rows " << tile_rows;
    }
}

TEST_F(CudaPrefillTest, GroupedMxfp4GemmRejectsBadArguments) {
  cuda::DeviceBuffer buf(4096);
  const cuda::MoeGroups g{buf.data<int>(), buf.data<int>(), buf.data<int>(), buf.data<int>(),
                          buf.data<int>()};
  const auto* u8 = buf.data<uint8_t>();
  using V = cuda::MoeGemmVariant;
  EXPECT_THROW(
      cuda::moe_mlp1_swiglu_mf4_gemm(V::kMma, ActType::kF32, buf.data(), u8, u8, buf.data<float>(),
                                     g, buf.data<int>(), 4, 2, 64, 64, 7.0f, buf.data(), nullptr),
      Error);  // f32 keeps the expanded route
  EXPECT_THROW(
      cuda::moe_mlp2_mf4_gemm(V::kMmaWide, ActType::kBF16, buf.data(), u8, u8, buf.data<float>(), g,
                              buf.data<int>(), 4, 2, 48, 64, buf.data<float>(), nullptr),
      Error);  // H not a multiple of 32
  EXPECT_THROW(
      cuda::moe_mlp2_mf4_gemm(V::kWgmma, ActType::kF32, buf.data(), u8, u8, buf.data<float>(), g,
                              buf.data<int>(), 4, 2, 64, 64, buf.data<float>(), nullptr),
      Error);  // f32 (and, off Hopper, any dtype)
  EXPECT_THROW(cuda::moe_tile_plan(nullptr, 4, 128, buf.data<int>(), nullptr), Error);
  EXPECT_THROW(cuda::moe_tile_plan(buf.data<int>(), 4, 0, buf.data<int>(), nullptr), Error);
  EXPECT_EQ(cuda::moe_gemm_variant_named("mma256"), V::kMmaWide);
  EXPECT_EQ(cuda::moe_gemm_variant_named("mma-tall"), V::kMmaTall);
  EXPECT_EQ(cuda::moe_gemm_variant_named("wgmma-regs"), V::kWgmmaRegs);
  EXPECT_EQ(cuda::moe_gemm_tile_rows(V::kWgmmaRegs), 128);
  EXPECT_EQ(cuda::moe_gemm_variant_named("skinny"), V::kSkinny);
  EXPECT_EQ(cuda::moe_gemm_tile_rows(V::kSkinny), 16);
  EXPECT_EQ(cuda::moe_gemm_tile_rows(V::kMmaTall), 256);
  try {
    cuda::moe_gemm_variant_named("mma512");
    ADD_FAILURE() << "an unknown kernel name was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'mma512'"), std::string::npos) << e.what();
  }
}

// The whole model in bf16 mode: the prefill route of these kernels (one step through the fused
// attention and the grouped GEMM, forced down to the fixtures' few rows) and the CUDA-core route
// (steps of 16 rows) against the Hugging Face logits, bf16 bound 2e-2 * max|logit| as in
// cuda_model_test.cpp. bf16 rounding perturbs router logits by about 1e-2, so where the CPU
// line's router margin at a position is smaller, bf16 may pick another expert there than float64
// HF did, and that position and every later one (which attend to it) may differ by more than the
// bound on either route. The bound is checked on the positions before the first such near-tie;
// the errors over all positions are printed.
TEST(CudaPrefillModel, Bf16RoutesMatchTransformersBeforeTheFirstRouterNearTie) {
  MIND4_REQUIRE_GPU();
  for (const char* name : {"plain_bf16_mqa", "yarn32_mxfp4_mha", "yarn_mxfp4_gqa"}) {
    const std::string dir = std::string(MIND4_SOURCE_DIR) + "/tests/fixtures/" + name;
    auto file = SafeTensorsFile::open(dir + "/expected.safetensors");
    std::vector<int> tokens;
    std::vector<float> want;
    for (const SafeTensor& t : file->tensors()) {
      if (t.name == "tokens") {
        const int32_t* p = reinterpret_cast<const int32_t*>(t.data);
        tokens.assign(p, p + t.nbytes / 4);
      } else if (t.name == "logits") {
        const float* p = reinterpret_cast<const float*>(t.data);
        want.assign(p, p + t.nbytes / 4);
      }
    }
    ASSERT_FALSE(tokens.empty()) << name;
    const int T = int(tokens.size()), V = int(want.size()) / T;
    const auto margin = test::cpu_router_margins(dir, tokens);
    int clear = 0;  // positions before the first near-tie
    while (clear < T && margin[size_t(clear)] >= 1e-2) ++clear;
    Config c;
    c.paths.checkpoint = dir;
    c.execution.backend = Backend::kCuda;
    c.execution.dtype = ActivationDType::kBFloat16;
    auto model = Model::load(c);
    double top = 0;
    for (float v : want) top = std::max(top, double(std::abs(v)));
    const double bound = 2e-2 * top;
    double worst_clear[2] = {0, 0}, worst_all[2] = {0, 0};
    for (const bool prefill_route : {false, true}) {
      if (prefill_route) setenv("MIND4_CUDA_PREFILL_MIN_ROWS", "2", 1);
      Context ctx(model, {.context_length = T,
                          .max_batch_tokens = prefill_route ? T : 16,
                          .keep_all_logits = true});
      unsetenv("MIND4_CUDA_PREFILL_MIN_ROWS");
      const int a = ctx.new_sequence();
      ctx.append(a, tokens);
      ctx.process();
      auto all = ctx.all_logits(a);
      ASSERT_EQ(all.size(), want.size()) << name;
      for (size_t i = 0; i < all.size(); ++i) {
        const double err = std::abs(all[i] - want[i]);
        worst_all[prefill_route] = std::max(worst_all[prefill_route], err);
        if (int(i / size_t(V)) < clear)
          worst_clear[prefill_route] = std::max(worst_clear[prefill_route], err);
      }
    }
    std::printf(
        "%s bf16: first router near-tie at position %d of %d; max |logit - HF| before it: CUDA "
        "cores %.4g, prefill route %.4g; over all positions: %.4g, %.4g (bound %.4g)\n",
        name, clear, T, worst_clear[0], worst_clear[1], worst_all[0], worst_all[1], bound);
    EXPECT_LE(worst_clear[0], bound) << name << ": the CUDA-core route";
    EXPECT_LE(worst_clear[1], bound) << name << ": the prefill route";
  }
}

}  // namespace
}  // namespace mind4

#else

TEST(CudaPrefill, NotCompiledIn) {
  GTEST_SKIP() << "CUDA prefill kernel tests skipped: this build has no CUDA line (nvcc not found "
                  "or MIND4_CUDA=OFF)";
}

#endif  // MIND4_HAVE_CUDA
