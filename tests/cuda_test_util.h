// Helpers of the CUDA tests: skip without a GPU, move vectors to and from the device, poison
// outputs (NaN bytes) before a kernel runs, and the relative error ||out - ref|| / ||ref||.
#pragma once

#ifdef MIND4_HAVE_CUDA

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cpu/ops.h"
#include "cuda/buffer.h"
#include "cuda/kernels.h"

namespace mind4::cuda_test {

// Empty when a Hopper-class GPU is usable; otherwise why not.
inline std::string cuda_gpu_missing() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("no usable CUDA GPU (") + cudaGetErrorString(e) + ")";
  if (n == 0) return "no CUDA GPU on this machine";
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  if (p.major < 9) return std::string("GPU ") + p.name + " is older than compute capability 9.0";
  return "";
}

#define MIND4_REQUIRE_GPU()                                         \
  do {                                                              \
    const std::string why = ::mind4::cuda_test::cuda_gpu_missing(); \
    if (!why.empty())                                               \
      GTEST_SKIP() << "CUDA test skipped: " << why                  \
                   << " (the CUDA line is "                         \
                      "compiled in)";                               \
  } while (0)

// Fresh random inputs: a new seed every run, so that no test is tuned to its inputs (tests print
// it with SCOPED_TRACE(seed), which makes a failure reproducible).
struct RandomInputs {
  unsigned seed = std::random_device{}();
  std::mt19937 rng{seed};
  std::vector<float> normal(size_t n, float sd = 1.0f, float mean = 0.0f) {
    std::normal_distribution<float> d(mean, sd);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
  }
  std::vector<uint8_t> bytes(size_t n, int lo, int hi) {
    std::uniform_int_distribution<int> d(lo, hi);
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = uint8_t(d(rng));
    return v;
  }
};

template <typename T>
cuda::DeviceBuffer upload(const std::vector<T>& v) {
  cuda::DeviceBuffer b(std::max<size_t>(v.size() * sizeof(T), 1));
  cuda::check(cudaMemcpy(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice),
              "test upload");
  return b;
}

// A buffer of `bytes` filled with 0xff bytes: NaN as f32 and bf16, -1 as int.
inline cuda::DeviceBuffer poisoned(size_t bytes) {
  cuda::DeviceBuffer b(std::max<size_t>(bytes, 1));
  cuda::check(cudaMemset(b.data(), 0xff, bytes), "test poison");
  return b;
}

template <typename T>
std::vector<T> download(const cuda::DeviceBuffer& b, size_t n) {
  cuda::check(cudaDeviceSynchronize(), "test kernel");
  std::vector<T> v(n);
  cuda::check(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost),
              "test download");
  return v;
}

// Activation values as the device holds them (bf16 rounds) and back to float.
inline std::vector<uint8_t> to_act(const std::vector<float>& v, cuda::ActType t) {
  std::vector<uint8_t> out(v.size() * cuda::act_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == cuda::ActType::kF32)
      reinterpret_cast<float*>(out.data())[i] = v[i];
    else
      reinterpret_cast<uint16_t*>(out.data())[i] = f32_to_bf16(v[i]);
  }
  return out;
}
inline std::vector<float> from_act(const std::vector<uint8_t>& b, cuda::ActType t) {
  const size_t n = b.size() / cuda::act_size(t);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = t == cuda::ActType::kF32 ? reinterpret_cast<const float*>(b.data())[i]
                                      : bf16_to_f32(reinterpret_cast<const uint16_t*>(b.data())[i]);
  return out;
}
// What the device sees of v in dtype t (bf16 rounding applied).
inline std::vector<float> rounded(const std::vector<float>& v, cuda::ActType t) {
  return from_act(to_act(v, t), t);
}
inline std::vector<float> download_act(const cuda::DeviceBuffer& b, size_t n, cuda::ActType t) {
  return from_act(download<uint8_t>(b, n * cuda::act_size(t)), t);
}

// ||out - ref|| / ||ref||; infinity when any output is NaN (an unwritten, poisoned element).
inline double rel_error(const std::vector<float>& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i])) return INFINITY;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Tolerance of a result computed from inputs in dtype t with f32 accumulation.
inline double tol(cuda::ActType t) {
  return t == cuda::ActType::kF32 ? 1e-5 : 1e-2;
}

// The buffers of moe_group's output for B rows of K assignments over E experts, poisoned (for a
// kernel to fill), and `experts`: the assignments they were made from, where there are any.
struct TestGroups {
  cuda::DeviceBuffer buf;
  cuda::MoeGroups g{};
  std::vector<int> experts;  // [B * K] expert of assignment (r, s)
};
inline TestGroups poisoned_groups(int B, int K, int E) {
  const int A = B * K;
  TestGroups out;
  out.buf = poisoned(size_t(2 * (E + 1) + 3 * A) * 4);
  int* p = out.buf.data<int>();
  out.g = {p, p + E + 1, p + 2 * (E + 1), p + 2 * (E + 1) + A, p + 2 * (E + 1) + 2 * A};
  return out;
}
// B rows routed to K distinct random experts each, grouped on the device by moe_group.
inline TestGroups random_groups(std::mt19937& rng, int B, int K, int E) {
  TestGroups out = poisoned_groups(B, K, E);
  for (int r = 0; r < B; ++r) {
    std::vector<int> all(E);
    for (int e = 0; e < E; ++e) all[e] = e;
    std::shuffle(all.begin(), all.end(), rng);
    out.experts.insert(out.experts.end(), all.begin(), all.begin() + K);
  }
  auto d_e = upload(out.experts);
  cuda::moe_group(d_e.data<int>(), B * K, K, E, out.g, nullptr);
  cuda::check(cudaDeviceSynchronize(), "moe_group");
  return out;
}

// moe_group's output for `experts` (K per row, E experts), downloaded whole from its buffer
// ([offsets E + 1][active E + 1][group_row A][group_expert A][assign_at A]): each expert's segment
// holds exactly its assignments, the active list names the experts with any, in order, and every
// assignment's slot holds its row and expert.
inline void expect_moe_grouping(const std::vector<int>& all, const std::vector<int>& experts, int K,
                                int E) {
  const int A = int(experts.size());
  ASSERT_EQ(all.size(), size_t(2 * (E + 1) + 3 * A));
  const int* offsets = all.data();
  const int* active = offsets + E + 1;
  const int* group_row = active + E + 1;
  const int* group_expert = group_row + A;
  const int* assign_at = group_expert + A;
  ASSERT_EQ(offsets[0], 0);
  ASSERT_EQ(offsets[E], A);
  int n_active = 0;
  for (int e = 0; e < E; ++e) {
    int cnt = 0;
    for (int i = 0; i < A; ++i) cnt += experts[i] == e;
    ASSERT_EQ(offsets[e + 1] - offsets[e], cnt) << "expert " << e;
    if (cnt) ASSERT_EQ(active[1 + n_active++], e);
  }
  ASSERT_EQ(active[0], n_active);
  for (int i = 0; i < A; ++i) {
    const int at = assign_at[i];
    ASSERT_TRUE(at >= offsets[experts[i]] && at < offsets[experts[i] + 1]) << i;
    ASSERT_EQ(group_row[at], i / K);
    ASSERT_EQ(group_expert[at], experts[i]);
  }
}

// Attention by the CPU line (cpu::attention_head), as the CUDA kernels are checked against it:
// query row r (qkv [B, (NH + 2 NKV) D]) at position pos[r] of cache slot slot[r] (kc, vc
// [slots, P, NKV D]), each query head over the keys it sees (window 0: every earlier position).
// Returns [B, NH, D].
inline std::vector<double> attention_ref(const std::vector<float>& qkv,
                                         const std::vector<float>& kc, const std::vector<float>& vc,
                                         const std::vector<float>& sinks, int NH, int NKV, int D,
                                         int P, const std::vector<int>& pos,
                                         const std::vector<int>& slot, int window, float scale) {
  const int QKV = (NH + 2 * NKV) * D, W = NKV * D;
  std::vector<double> want;
  std::vector<float> scores(P), o(D);
  for (size_t r = 0; r < pos.size(); ++r)
    for (int h = 0; h < NH; ++h) {
      const int first = window ? std::max(0, pos[r] - window + 1) : 0;
      const size_t base = (size_t(slot[r]) * P + first) * W + size_t(h / (NH / NKV)) * D;
      cpu::attention_head(qkv.data() + r * QKV + h * D, kc.data() + base, vc.data() + base, W,
                          pos[r] - first + 1, D, sinks[h], scale, scores.data(), o.data());
      want.insert(want.end(), o.begin(), o.end());
    }
  return want;
}
// A prefill step's rows: positions pos0 .. pos0 + B - 1 of one slot.
inline std::vector<double> prefill_attention_ref(const std::vector<float>& qkv,
                                                 const std::vector<float>& kc,
                                                 const std::vector<float>& vc,
                                                 const std::vector<float>& sinks, int NH, int NKV,
                                                 int D, int B, int P, int slot, int pos0,
                                                 int window, float scale) {
  std::vector<int> pos(B), slots(B, slot);
  for (int r = 0; r < B; ++r) pos[r] = pos0 + r;
  return attention_ref(qkv, kc, vc, sinks, NH, NKV, D, P, pos, slots, window, scale);
}

}  // namespace mind4::cuda_test

#endif  // MIND4_HAVE_CUDA
