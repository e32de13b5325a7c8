// Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel Random
// Numbers: As Easy as 1, 2, 3" (SC'11). Written here from the paper's definition.
//
// A counter-based generator is a keyed bijection: block(counter, key) gives four 32-bit words,
// and any counter can be evaluated independently. That is why the sampler uses it: the draw for
// step n of a sequence depends only on (seed, n), never on which thread ran earlier steps, and a
// CUDA kernel can reproduce the same numbers with the same few integer operations. The functions
// are header-only, constexpr and free of library calls so that a .cu file can include them.
#pragma once

#include <array>
#include <cstdint>

#if defined(__CUDACC__)
#define MIND4_PHILOX_HD __host__ __device__
#else
#define MIND4_PHILOX_HD
#endif

namespace mind4::philox {

using Counter = std::array<uint32_t, 4>;
using Key = std::array<uint32_t, 2>;

// Multipliers and Weyl key increments from the paper (Table 2 / section 4.2).
inline constexpr uint32_t kMul0 = 0xD2511F53u;
inline constexpr uint32_t kMul1 = 0xCD9E8D57u;
inline constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
inline constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

MIND4_PHILOX_HD constexpr Counter round(const Counter& c, const Key& k) {
  uint64_t p0 = static_cast<uint64_t>(kMul0) * c[0];
  uint64_t p1 = static_cast<uint64_t>(kMul1) * c[2];
  auto hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  auto hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  return {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
}

// Ten rounds; the key is bumped by the Weyl constants between consecutive rounds.
MIND4_PHILOX_HD constexpr Counter block(Counter c, Key k) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k[0] += kWeyl0;
      k[1] += kWeyl1;
    }
    c = round(c, k);
  }
  return c;
}

// The key for a 64-bit seed: low word first.
MIND4_PHILOX_HD constexpr Key key_from_seed(uint64_t seed) {
  return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
}

// Uniform float in [0, 1): the top 24 bits, so every value is exactly representable and 1.0 is
// never produced (rounding a 32-bit fraction to float could give 1.0).
MIND4_PHILOX_HD constexpr float uniform_f32(uint32_t u) {
  return static_cast<float>(u >> 8) * (1.0f / 16777216.0f);
}

// Uniform double in [0, 1) from 53 bits of two words (a supplies the high 32).
MIND4_PHILOX_HD constexpr double uniform_f64(uint32_t a, uint32_t b) {
  uint64_t bits = (static_cast<uint64_t>(a) << 21) | (b >> 11);
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);
}

// A sequential view over the counter space: block i of stream s is counter {i_lo, i_hi, s_lo,
// s_hi}. Words come out in block order, four per block.
class Stream {
 public:
  MIND4_PHILOX_HD constexpr Stream(uint64_t seed, uint64_t stream = 0, uint64_t block_index = 0)
      : key_(key_from_seed(seed)), stream_(stream), next_block_(block_index) {}

  MIND4_PHILOX_HD constexpr uint32_t next_u32() {
    if (used_ == 4) {
      buffer_ = block(counter(next_block_++), key_);
      used_ = 0;
    }
    return buffer_[used_++];
  }
  MIND4_PHILOX_HD constexpr float next_f32() { return uniform_f32(next_u32()); }
  MIND4_PHILOX_HD constexpr double next_f64() {
    uint32_t a = next_u32();
    return uniform_f64(a, next_u32());
  }

  MIND4_PHILOX_HD constexpr Counter counter(uint64_t index) const {
    return {static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
            static_cast<uint32_t>(stream_), static_cast<uint32_t>(stream_ >> 32)};
  }

 private:
  Key key_;
  uint64_t stream_;
  uint64_t next_block_;
  Counter buffer_{};
  int used_ = 4;
};

}  // namespace mind4::philox
