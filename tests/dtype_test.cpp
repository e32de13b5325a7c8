// Number formats against values worked out by hand from the format definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"

namespace mind4 {
namespace {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 lies exactly between bf16 1.0 and 1.0078125: ties go to the even mantissa (1.0).
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  // 1 + 3*2^-8 lies between 1.0078125 (odd) and 1.015625 (even): goes up.
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-INFINITY)), -INFINITY);
}

TEST(DType, F16MatchesIeeeHalf) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    uint16_t h = uint16_t(rng());
    if (((h >> 10) & 0x1f) == 31) continue;  // inf/nan
    EXPECT_EQ(f32_to_f16(f16_to_f32(h)), h) << std::hex << h;
  }
}

TEST(DType, E2M1RoundsToNearestWithTiesToEven) {
  EXPECT_EQ(f32_to_e2m1(0.0f), 0);
  EXPECT_EQ(f32_to_e2m1(0.25f), 0);   // tie between 0 and 0.5
  EXPECT_EQ(f32_to_e2m1(0.75f), 2);   // tie between 0.5 and 1 -> 1 (even)
  EXPECT_EQ(f32_to_e2m1(2.5f), 4);    // tie between 2 and 3 -> 2
  EXPECT_EQ(f32_to_e2m1(5.0f), 6);    // tie between 4 and 6 -> 4
  EXPECT_EQ(f32_to_e2m1(100.0f), 7);  // saturates at 6
  EXPECT_EQ(f32_to_e2m1(-1.5f), 8 | 3);
}

TEST(DType, Mxfp4BlockFollowsOcpSharedExponentRule) {
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = 0.1f * float(i - 16);
  // amax = 1.6: floor(log2 1.6) = 0, shared exponent 0 - 2 = -2, scale byte 125.
  uint8_t packed[16], scale;
  quantize_mxfp4_block(x, packed, &scale);
  EXPECT_EQ(scale, 125);
  float y[32];
  dequantize_mxfp4_block(packed, scale, y);
  for (int i = 0; i < 32; ++i) {
    // Every value is representable within half a step of the e2m1 grid times 0.25.
    EXPECT_NEAR(y[i], x[i], 0.25f * 1.0f + 1e-6f) << i;
    EXPECT_EQ(y[i], kE2M1Values[f32_to_e2m1(x[i] * 4.0f)] * 0.25f) << i;
  }
}

}  // namespace
}  // namespace mind4
