// Number formats used by checkpoints and kernels: bf16, fp16, fp32, and MXFP4 (OCP MX: blocks of
// 32 e2m1 values sharing one e8m0 power-of-two scale). Conversions here are the scalar reference;
// vectorised kernels live in src/cpu/.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mind4 {

enum class DType : uint8_t { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// Size in bytes of one element. Packed MXFP4 blocks are stored as kU8 tensors.
size_t dtype_size(DType t);
// Safetensors spelling: "F32", "BF16", "U8", ...
std::string_view dtype_name(DType t);
// Parses a safetensors dtype string; returns false for an unknown one.
bool parse_dtype(std::string_view name, DType* out);

// bf16 is the top half of an fp32; conversion rounds to nearest even, NaN stays NaN.
inline float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// MXFP4: an e2m1 nibble (sign, 2 exponent bits, 1 mantissa bit) takes one of 16 values.
// In a packed byte the low nibble is the even element, the high nibble the odd one.
inline constexpr float kE2M1Values[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
inline constexpr int kMxfp4BlockSize = 32;   // values per shared scale
inline constexpr int kMxfp4BlockBytes = 16;  // packed bytes per block

// e8m0 scale byte s means 2^(s-127). (255 would be NaN in OCP MX; checkpoints never use it.)
inline float e8m0_to_f32(uint8_t s) { return std::ldexp(1.0f, int(s) - 127); }

// Rounds x to the nearest e2m1 value (ties to even mantissa), returning the nibble.
uint8_t f32_to_e2m1(float x);

// Quantises one block of 32 floats by the OCP MX rule: shared exponent floor(log2(amax)) - 2
// (e2m1's largest exponent), elements rounded to nearest e2m1 after scaling, saturating at 6.
void quantize_mxfp4_block(const float* x, uint8_t* packed16, uint8_t* scale);
// Expands one block back to floats.
void dequantize_mxfp4_block(const uint8_t* packed16, uint8_t scale, float* out32);

}  // namespace mind4
