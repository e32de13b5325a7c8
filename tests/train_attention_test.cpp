// The vectorised float attention of training (train/attention.cpp) against the double templates of
// train/ops.h (which the finite-difference tests check), on every instruction-set path this CPU
// has, on shapes that hit the edges: head_dim not a multiple of the vector width (tails and masks),
// odd sequence lengths, windows shorter than the sequence, groups of 1 and 3 query heads per kv
// head. Outputs are poisoned before each run; error = ||out - ref|| / ||ref||.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "cpu/isa.h"
#include "train/ops.h"

namespace mind4::train {
namespace {

double tat_rel_err(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(got[i]) - ref[i];
    num += d * d, den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

void tat_check(const AttnShape& a, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  const int64_t n = a.S * a.qkv_stride(), no = int64_t(a.S) * a.NH * a.D;
  std::vector<double> qkv(static_cast<size_t>(n)), sinks(static_cast<size_t>(a.NH)),
      dout(static_cast<size_t>(no));
  for (auto& x : qkv) x = nd(rng);
  for (auto& x : sinks) x = nd(rng);
  for (auto& x : dout) x = nd(rng);
  const double scale = 1.0 / std::sqrt(double(a.D));
  // The double reference.
  std::vector<double> out(static_cast<size_t>(no)), lse(static_cast<size_t>(a.S) * a.NH),
      scr(2 * static_cast<size_t>(a.S)), dqkv(static_cast<size_t>(n), 0.0),
      dsinks(static_cast<size_t>(a.NH), 0.0);
  for (int kvh = 0; kvh < a.NKV; ++kvh)
    attention_fwd(a, kvh, qkv.data(), sinks.data(), scale, out.data(), lse.data(), scr.data());
  for (int kvh = 0; kvh < a.NKV; ++kvh)
    attention_bwd(a, kvh, qkv.data(), sinks.data(), scale, out.data(), lse.data(), dout.data(),
                  dqkv.data(), dsinks.data(), scr.data());

  auto to_f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  const std::vector<float> fqkv = to_f(qkv), fsinks = to_f(sinks), fdout = to_f(dout);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (cpu::Isa isa : {cpu::Isa::kScalar, cpu::Isa::kAvx2, cpu::Isa::kAvx512}) {
    if (!cpu::isa_supported(isa)) continue;
    cpu::set_isa(isa);
    SCOPED_TRACE(std::string(cpu::isa_name(isa)) + " S=" + std::to_string(a.S) +
                 " D=" + std::to_string(a.D) + " window=" + std::to_string(a.window));
    std::vector<float> fout(static_cast<size_t>(no), nan), flse(lse.size(), nan),
        fscr(scr.size(), nan), fdq(static_cast<size_t>(n), 0.0f),
        fds(static_cast<size_t>(a.NH), 0.0f);
    // q rows of dqkv are overwritten by the backward: poison them.
    for (int s = 0; s < a.S; ++s) std::fill_n(fdq.begin() + s * a.qkv_stride(), a.NH * a.D, nan);
    for (int kvh = 0; kvh < a.NKV; ++kvh)
      attention_fwd(a, kvh, fqkv.data(), fsinks.data(), float(scale), fout.data(), flse.data(),
                    fscr.data());
    for (int kvh = 0; kvh < a.NKV; ++kvh)
      attention_bwd(a, kvh, fqkv.data(), fsinks.data(), float(scale), fout.data(), flse.data(),
                    fdout.data(), fdq.data(), fds.data(), fscr.data());
    // float against double over <= a few hundred terms: ~1e-6 relative; 2e-5 leaves room for
    // exp's and the reductions' rounding without letting a wrong index or a missed tail through.
    EXPECT_LT(tat_rel_err(fout, out), 2e-5);
    EXPECT_LT(tat_rel_err(flse, lse), 2e-5);
    EXPECT_LT(tat_rel_err(fdq, dqkv), 2e-5);
    EXPECT_LT(tat_rel_err(fds, dsinks), 2e-5);
  }
  cpu::set_isa(cpu::detect_isa());
}

TEST(TrainAttentionF32, MatchesTheDoubleReferenceOnEveryPath) {
  tat_check({37, 4, 2, 64, 0}, 1);   // the bundled model's head, full attention
  tat_check({37, 4, 2, 64, 8}, 2);   // sliding window
  tat_check({19, 6, 2, 24, 5}, 3);   // D = 16 + 8: an AVX2 remainder block, an AVX-512 mask
  tat_check({23, 3, 3, 10, 0}, 4);   // D = 10: scalar tail on AVX2; one query head per kv head
  tat_check({64, 2, 1, 80, 17}, 5);  // D = 80: 2.5 AVX-512 pairs; window 17
}

}  // namespace
}  // namespace mind4::train
