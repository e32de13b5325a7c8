// Matrix products of fp32 activations with weights as the checkpoint stores them: bf16, f32, or
// packed MXFP4, read in place (never expanded to an fp32 copy). One call computes output columns
// [n_begin, n_end) for every token, so a thread pool splits the weight rows and each weight row
// is read once per batch of tokens (matrix-matrix in prefill, matrix-vector in decode, tokens=1).
//
//   out[t * ldo + n] = sum_k x[t * ldx + k] * W[n, k]  (+ bias[n] when bias != nullptr)
//
// W is row-major [N, K]. Accumulation is fp32 (register tiles of up to 4 rows x 4 tokens).
// Each function runs the path chosen by cpu::active_isa().
#pragma once

#include <cstdint>

namespace mind4::cpu {

void f32_bf16w_matmul(const float* x, int64_t ldx, int tokens, const uint16_t* w, int k,
                      const float* bias, float* out, int64_t ldo, int n_begin, int n_end);

void f32_f32w_matmul(const float* x, int64_t ldx, int tokens, const float* w, int k,
                     const float* bias, float* out, int64_t ldo, int n_begin, int n_end);

// MXFP4 weights: blocks [N, K/32, 16] bytes (low nibble = even element), scales [N, K/32]
// (e8m0: 2^(s-127)); K must be a multiple of 32. x must be in the deinterleaved order written
// by mf4_deinterleave (so that the low and high nibbles of a byte meet contiguous activations).
void f32_mf4w_matmul(const float* x_deint, int64_t ldx, int tokens, const uint8_t* blocks,
                     const uint8_t* scales, int k, const float* bias, float* out, int64_t ldo,
                     int n_begin, int n_end);

// Reorders each group of 32 activations as [x0 x2 .. x30, x1 x3 .. x31]; k % 32 == 0.
void mf4_deinterleave(const float* x, int k, float* out);

// Expands `nblocks` MXFP4 blocks (16 bytes + 1 scale each) to 32 floats each, in element order.
void mf4_to_f32(const uint8_t* blocks, const uint8_t* scales, int64_t nblocks, float* out);

// e8m0 scale byte -> 2^(s-127) built from exponent bits (s = 0 is the subnormal 2^-127).
inline float e8m0_scale(uint8_t s) {
  uint32_t bits = s ? uint32_t(s) << 23 : 0x00400000u;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

}  // namespace mind4::cpu
