#include "core/dtype.h"

#include <algorithm>

namespace mind4 {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF64: case DType::kI64: return 8;
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF16: case DType::kBF16: case DType::kI16: return 2;
    case DType::kI8: case DType::kU8: case DType::kBool: return 1;
  }
  return 0;
}

namespace {
struct DTypeName {
  DType type;
  std::string_view name;
};
constexpr DTypeName kNames[] = {
    {DType::kF32, "F32"}, {DType::kF16, "F16"}, {DType::kBF16, "BF16"}, {DType::kF64, "F64"},
    {DType::kI64, "I64"}, {DType::kI32, "I32"}, {DType::kI16, "I16"},   {DType::kI8, "I8"},
    {DType::kU8, "U8"},   {DType::kBool, "BOOL"},
};
}  // namespace

std::string_view dtype_name(DType t) {
  for (const auto& n : kNames)
    if (n.type == t) return n.name;
  return "?";
}

bool parse_dtype(std::string_view name, DType* out) {
  for (const auto& n : kNames)
    if (n.name == name) {
      *out = n.type;
      return true;
    }
  return false;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: value = mant * 2^-24
    float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // rounds to infinity
  if (a < 6.103515625e-05f) {                // subnormal range: multiples of 2^-24
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));
  }
  uint32_t e = (std::bit_cast<uint32_t>(a) >> 23) - 112;
  uint32_t m = std::bit_cast<uint32_t>(a) & 0x7fffffu;
  uint32_t h = (e << 10) | (m >> 13);
  uint32_t rest = m & 0x1fffu;  // round to nearest even on the 13 dropped bits
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return sign | uint16_t(h);
}

uint8_t f32_to_e2m1(float x) {
  uint8_t sign = std::signbit(x) ? 8 : 0;
  float a = std::fabs(x);
  if (std::isnan(a)) return 0;
  uint8_t code;
  // Midpoints between neighbouring e2m1 values; a tie goes to the even mantissa.
  if (a <= 0.25f) code = 0;
  else if (a < 0.75f) code = 1;
  else if (a <= 1.25f) code = 2;
  else if (a < 1.75f) code = 3;
  else if (a <= 2.5f) code = 4;
  else if (a < 3.5f) code = 5;
  else if (a <= 5.0f) code = 6;
  else code = 7;  // saturates at 6
  return sign | code;
}

void quantize_mxfp4_block(const float* x, uint8_t* packed16, uint8_t* scale) {
  float amax = 0.0f;
  for (int i = 0; i < kMxfp4BlockSize; ++i) amax = std::max(amax, std::fabs(x[i]));
  int shared_exp = 0;
  if (amax > 0.0f && std::isfinite(amax)) {
    shared_exp = std::ilogb(amax) - 2;  // floor(log2(amax)) - emax(e2m1)
  }
  shared_exp = std::clamp(shared_exp, -127, 127);
  *scale = uint8_t(shared_exp + 127);
  float inv = std::ldexp(1.0f, -shared_exp);
  for (int i = 0; i < kMxfp4BlockSize; i += 2) {
    uint8_t lo = f32_to_e2m1(x[i] * inv), hi = f32_to_e2m1(x[i + 1] * inv);
    packed16[i / 2] = uint8_t(lo | (hi << 4));
  }
}

void dequantize_mxfp4_block(const uint8_t* packed16, uint8_t scale, float* out32) {
  float s = e8m0_to_f32(scale);
  for (int i = 0; i < kMxfp4BlockBytes; ++i) {
    out32[2 * i] = kE2M1Values[packed16[i] & 0xf] * s;
    out32[2 * i + 1] = kE2M1Values[packed16[i] >> 4] * s;
  }
}

}  // namespace mind4
