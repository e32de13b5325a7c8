// Every CPU kernel on every instruction-set path this machine has, against naive references in
// double precision written here from the definitions. Fresh random inputs per case, outputs
// filled with NaN before each run (so an unwritten element fails), edge shapes (one row, odd
// counts, K not a multiple of the vector width, partial row ranges, padded strides).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "cpu/isa.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "mind4/status.h"

namespace mind4::cpu {
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const double kE2M1[16] = {0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3, -4, -6};

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

// Restores the detected path after a test that forces others.
struct IsaGuard {
  Isa saved = active_isa();
  ~IsaGuard() { set_isa(saved); }
};

double rel_error(const std::vector<float>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i])) return std::numeric_limits<double>::infinity();
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct Rng {
  std::mt19937_64 gen{12345};
  std::vector<float> normal(size_t n, float sd = 1.0f) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
  }
  std::vector<uint8_t> bytes(size_t n, int lo = 0, int hi = 255) {
    std::uniform_int_distribution<int> d(lo, hi);
    std::vector<uint8_t> v(n);
    for (auto& x : v) x = uint8_t(d(gen));
    return v;
  }
};

enum class WeightKind { kBf16, kF32, kMf4 };

// Checks one matmul case: tokens x [k] (stride ldx) times rows [n_begin, n_end) of W [n, k].
void check_matmul(WeightKind kind, Rng& rng, int tokens, int n, int k, int n_begin, int n_end,
                  bool with_bias) {
  const int64_t ldx = k + 3, ldo = n + 2;
  std::vector<float> x = rng.normal(tokens * ldx);
  std::vector<float> bias = rng.normal(n);
  std::vector<double> wd(size_t(n) * k);  // exact weights in double
  std::vector<uint16_t> wb;
  std::vector<float> wf;
  std::vector<uint8_t> blocks, scales;
  if (kind == WeightKind::kBf16) {
    wb.resize(wd.size());
    for (size_t i = 0; i < wd.size(); ++i) {
      wb[i] = f32_to_bf16(rng.normal(1)[0]);
      wd[i] = bf16_to_f32(wb[i]);
    }
  } else if (kind == WeightKind::kF32) {
    wf = rng.normal(wd.size());
    for (size_t i = 0; i < wd.size(); ++i) wd[i] = wf[i];
  } else {
    blocks = rng.bytes(size_t(n) * k / 2);
    scales = rng.bytes(size_t(n) * k / 32, 117, 131);
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < k; ++j) {
        uint8_t byte = blocks[(size_t(r) * k + j) / 2];
        double v = kE2M1[j % 2 == 0 ? byte & 15 : byte >> 4];
        wd[size_t(r) * k + j] = v * std::ldexp(1.0, scales[(size_t(r) * k + j) / 32] - 127);
      }
  }
  // The MXFP4 kernel takes deinterleaved activations; the reference uses x as given.
  std::vector<float> xin = x;
  if (kind == WeightKind::kMf4)
    for (int t = 0; t < tokens; ++t) mf4_deinterleave(x.data() + t * ldx, k, xin.data() + t * ldx);

  std::vector<double> ref;
  std::vector<float> got;
  for (int t = 0; t < tokens; ++t)
    for (int r = n_begin; r < n_end; ++r) {
      double s = with_bias ? bias[r] : 0.0;
      for (int j = 0; j < k; ++j) s += double(x[t * ldx + j]) * wd[size_t(r) * k + j];
      ref.push_back(s);
    }
  std::vector<float> out(tokens * ldo, kNaN);
  const float* b = with_bias ? bias.data() : nullptr;
  switch (kind) {
    case WeightKind::kBf16:
      f32_bf16w_matmul(xin.data(), ldx, tokens, wb.data(), k, b, out.data(), ldo, n_begin, n_end);
      break;
    case WeightKind::kF32:
      f32_f32w_matmul(xin.data(), ldx, tokens, wf.data(), k, b, out.data(), ldo, n_begin, n_end);
      break;
    case WeightKind::kMf4:
      f32_mf4w_matmul(xin.data(), ldx, tokens, blocks.data(), scales.data(), k, b, out.data(),
                      ldo, n_begin, n_end);
      break;
  }
  for (int t = 0; t < tokens; ++t)
    for (int r = 0; r < ldo; ++r) {
      const float v = out[t * ldo + r];
      if (r >= n_begin && r < n_end)
        got.push_back(v);
      else
        ASSERT_TRUE(std::isnan(v)) << "wrote outside its rows: token " << t << " row " << r;
    }
  EXPECT_LT(rel_error(got, ref), 2e-6)
      << "isa " << isa_name(active_isa()) << " tokens " << tokens << " n " << n << " k " << k
      << " rows [" << n_begin << ", " << n_end << ")";
}

struct Shape {
  int tokens, n, k, n_begin, n_end;
};

TEST(CpuKernels, DenseMatmulsMatchDoubleReferenceOnEveryPath) {
  IsaGuard guard;
  Rng rng;
  const Shape shapes[] = {{1, 1, 1, 0, 1},     {1, 7, 15, 0, 7},    {1, 9, 16, 2, 9},
                          {3, 5, 17, 0, 5},    {4, 8, 33, 1, 7},    {5, 13, 100, 0, 13},
                          {9, 17, 64, 3, 16},  {2, 4, 2880, 0, 4},  {7, 6, 31, 5, 6},
                          {16, 33, 48, 0, 33}, {1, 64, 257, 0, 64}};
  for (Isa isa : supported_isas()) {
    set_isa(isa);
    for (const Shape& s : shapes)
      for (bool bias : {false, true}) {
        check_matmul(WeightKind::kBf16, rng, s.tokens, s.n, s.k, s.n_begin, s.n_end, bias);
        check_matmul(WeightKind::kF32, rng, s.tokens, s.n, s.k, s.n_begin, s.n_end, bias);
      }
  }
}

TEST(CpuKernels, Mxfp4MatmulMatchesDoubleReferenceOnEveryPath) {
  IsaGuard guard;
  Rng rng;
  const Shape shapes[] = {{1, 1, 32, 0, 1},  {1, 7, 64, 0, 7},   {2, 9, 96, 3, 8},
                          {3, 5, 32, 0, 5},  {4, 8, 160, 1, 7},  {5, 13, 64, 0, 13},
                          {9, 17, 128, 2, 17}, {1, 6, 2880, 0, 6}, {6, 4, 352, 0, 4}};
  for (Isa isa : supported_isas()) {
    set_isa(isa);
    for (const Shape& s : shapes)
      for (bool bias : {false, true})
        check_matmul(WeightKind::kMf4, rng, s.tokens, s.n, s.k, s.n_begin, s.n_end, bias);
  }
}

TEST(CpuKernels, Mxfp4ToF32IsExactOnEveryPath) {
  IsaGuard guard;
  Rng rng;
  for (Isa isa : supported_isas()) {
    set_isa(isa);
    for (int nblocks : {1, 2, 7}) {
      std::vector<uint8_t> blocks = rng.bytes(nblocks * 16), scales = rng.bytes(nblocks, 0, 254);
      scales[0] = 0;  // 2^-127 is a subnormal float: the exponent-bit path must still be exact
      std::vector<float> out(nblocks * 32 + 1, kNaN);
      mf4_to_f32(blocks.data(), scales.data(), nblocks, out.data());
      for (int i = 0; i < nblocks * 32; ++i) {
        uint8_t byte = blocks[i / 2];
        double want = kE2M1[i % 2 ? byte >> 4 : byte & 15] * std::ldexp(1.0, scales[i / 32] - 127);
        ASSERT_EQ(double(out[i]), want) << isa_name(isa) << " element " << i;
      }
      EXPECT_TRUE(std::isnan(out[nblocks * 32])) << "wrote past the end";
    }
  }
}

TEST(CpuKernels, DotMatchesDoubleReferenceOnEveryPath) {
  IsaGuard guard;
  Rng rng;
  for (Isa isa : supported_isas()) {
    set_isa(isa);
    for (int n : {1, 5, 16, 24, 31, 32, 33, 64, 100, 1000}) {
      auto a = rng.normal(n), b = rng.normal(n);
      double ref = 0;
      for (int i = 0; i < n; ++i) ref += double(a[i]) * b[i];
      EXPECT_NEAR(dot_f32(a.data(), b.data(), n), ref, 1e-5 * std::sqrt(double(n)))
          << isa_name(isa) << " n " << n;
    }
  }
}

TEST(CpuKernels, RmsNormMatchesDoubleReference) {
  Rng rng;
  for (int n : {1, 7, 64, 2880}) {
    auto x = rng.normal(n, 3.0f), scale = rng.normal(n);
    std::vector<float> out(n, kNaN);
    rmsnorm(x.data(), scale.data(), n, 1e-5f, out.data());
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    std::vector<double> ref(n);
    for (int i = 0; i < n; ++i) ref[i] = x[i] / std::sqrt(ss / n + 1e-5) * scale[i];
    EXPECT_LT(rel_error(out, ref), 1e-6) << n;
  }
}

TEST(CpuKernels, RopeTablesFollowYarnFormula) {
  for (float factor : {1.0f, 4.0f, 32.0f}) {
    ModelConfig c;
    c.head_dim = 24;
    c.rope_theta = 150000.0f;
    c.rope_scaling_factor = factor;
    c.initial_context_length = 4096;
    const int positions = 50, half = 12;
    std::vector<float> cos_t(positions * half, kNaN), sin_t(positions * half, kNaN);
    rope_tables(c, positions, cos_t.data(), sin_t.data());
    // Written again from MODEL.md, step by step.
    const double pi = std::numbers::pi;
    double conc = factor > 1 ? 0.1 * std::log(factor) + 1 : 1;
    double low = half * std::log(4096 / (32.0 * 2 * pi)) / std::log(150000.0);
    double high = half * std::log(4096 / (1.0 * 2 * pi)) / std::log(150000.0);
    for (int p = 0; p < positions; ++p)
      for (int i = 0; i < half; ++i) {
        double freq = std::pow(150000.0, 2.0 * i / 24);
        double inv = 1 / freq;
        if (factor > 1) {
          double ramp = (i - low) / (high - low);
          double mask = 1 - std::min(1.0, std::max(0.0, ramp));
          inv = 1 / (factor * freq) * (1 - mask) + 1 / freq * mask;
        }
        EXPECT_NEAR(cos_t[p * half + i], std::cos(p * inv) * conc, 1e-6);
        EXPECT_NEAR(sin_t[p * half + i], std::sin(p * inv) * conc, 1e-6);
      }
  }
}

TEST(CpuKernels, RopeApplyRotatesHalfSplitPairs) {
  Rng rng;
  const int heads = 3, d = 10;
  auto x = rng.normal(heads * d), c = rng.normal(d / 2), s = rng.normal(d / 2);
  auto y = x;
  rope_apply(y.data(), heads, d, c.data(), s.data());
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < d / 2; ++i) {
      double x1 = x[h * d + i], x2 = x[h * d + i + d / 2];
      EXPECT_NEAR(y[h * d + i], x1 * c[i] - x2 * s[i], 1e-6);
      EXPECT_NEAR(y[h * d + i + d / 2], x2 * c[i] + x1 * s[i], 1e-6);
    }
}

TEST(CpuKernels, AttentionHeadWithSinkMatchesDoubleReferenceOnEveryPath) {
  IsaGuard guard;
  Rng rng;
  for (Isa isa : supported_isas()) {
    set_isa(isa);
    for (int count : {1, 2, 7, 130}) {
      for (int d : {16, 24, 64}) {
        const int64_t stride = 3 * d;  // keys of other kv heads in between
        auto q = rng.normal(d), k = rng.normal(count * stride), v = rng.normal(count * stride);
        const float sink = rng.normal(1)[0], scale = 1.0f / std::sqrt(float(d));
        std::vector<float> scores(count, kNaN), out(d, kNaN);
        attention_head(q.data(), k.data(), v.data(), stride, count, d, sink, scale, scores.data(),
                       out.data());
        std::vector<double> s(count), ref(d, 0.0);
        double m = sink;
        for (int j = 0; j < count; ++j) {
          s[j] = 0;
          for (int i = 0; i < d; ++i) s[j] += double(q[i]) * k[j * stride + i];
          s[j] *= scale;
          m = std::max(m, s[j]);
        }
        double den = std::exp(sink - m);
        for (int j = 0; j < count; ++j) den += std::exp(s[j] - m);
        for (int j = 0; j < count; ++j)
          for (int i = 0; i < d; ++i) ref[i] += std::exp(s[j] - m) / den * v[j * stride + i];
        EXPECT_LT(rel_error(out, ref), 1e-5) << isa_name(isa) << " count " << count << " d " << d;
      }
    }
  }
}

TEST(CpuKernels, SwigluClampsAndGates) {
  Rng rng;
  const int n = 37;
  const float limit = 7.0f;
  auto h = rng.normal(2 * n, 6.0f);
  h[0] = 100.0f, h[1] = -100.0f;  // both clamps engaged
  std::vector<float> out(n, kNaN);
  swiglu_interleaved(h.data(), n, limit, out.data());
  std::vector<double> ref(n);
  for (int i = 0; i < n; ++i) {
    double g = std::min<double>(h[2 * i], limit);
    double l = std::min<double>(std::max<double>(h[2 * i + 1], -limit), limit);
    ref[i] = g / (1 + std::exp(-1.702 * g)) * (l + 1);
  }
  EXPECT_LT(rel_error(out, ref), 1e-6);
}

TEST(CpuKernels, RouterTopkBreaksTiesByLowerIndexAndSoftmaxesTheK) {
  const float logits[8] = {0.5f, 2.0f, -1.0f, 2.0f, 3.0f, 0.5f, 0.5f, -4.0f};
  int experts[4];
  float weights[4];
  router_topk(logits, 8, 4, experts, weights);
  EXPECT_EQ(experts[0], 4);
  EXPECT_EQ(experts[1], 1);  // tie with 3: lower index first
  EXPECT_EQ(experts[2], 3);
  EXPECT_EQ(experts[3], 0);  // tie with 5 and 6
  double den = std::exp(3.0) + 2 * std::exp(2.0) + std::exp(0.5);
  EXPECT_NEAR(weights[0], std::exp(3.0) / den, 1e-6);
  EXPECT_NEAR(weights[3], std::exp(0.5) / den, 1e-6);
}

TEST(CpuKernels, IsaSelectionRejectsUnknownNames) {
  IsaGuard guard;
  const char* outer = std::getenv("MIND4_CPU_ISA");
  const std::string saved = outer ? outer : "";
  ::setenv("MIND4_CPU_ISA", "sse9", 1);
  EXPECT_THROW(detect_isa(), Error);
  ::setenv("MIND4_CPU_ISA", "scalar", 1);
  EXPECT_EQ(detect_isa(), Isa::kScalar);
  if (outer)
    ::setenv("MIND4_CPU_ISA", saved.c_str(), 1);
  else
    ::unsetenv("MIND4_CPU_ISA");
}

}  // namespace
}  // namespace mind4::cpu
