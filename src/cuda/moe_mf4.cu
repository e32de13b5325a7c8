// Mixture-of-experts products on MXFP4 weights read as stored: 16 bytes of e2m1 pairs and one
// e8m0 scale per 32 weights. One kernel serves decode (GEMV: one row per expert) and prefill
// (a grouped GEMM: the rows of each expert are staged TOK at a time and every weight block read
// is used for all of them). Grid: x over tiles of weight rows, y over active-expert slots; the
// number of active experts is read on the device, so a step needs no host synchronisation.
//
// Each warp owns kMf4RowsAtOnce weight rows at a time; lane j takes 32-weight block j of each
// (a 16-byte load), so a warp streams 512 contiguous bytes per row and iteration. Activations
// sit in shared memory as f32, 33 floats per 32 (padding: lane j reads bank (j + i) % 32, no
// conflicts); the 16 e2m1 values come from a 16-float table in shared memory (16 distinct
// banks). mlp1 rows interleave gate and linear, so the pair meets in one warp and the clamped
// SwiGLU is applied before anything is written.
#include <algorithm>

#include "cuda/device_util.cuh"
#include "cuda/pdl.cuh"

namespace mind4::cuda {
namespace {

constexpr int kMf4Warps = 4;
constexpr int kMf4RowsAtOnce = 4;  // even: whole (gate, linear) pairs
constexpr int kMf4RowIters = 2;
constexpr int kMf4RowsPerBlock = kMf4Warps * kMf4RowsAtOnce * kMf4RowIters;

__constant__ float kMf4E2M1[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

__device__ __forceinline__ float mf4_scale(uint8_t s) {
  return __uint_as_float(s ? uint32_t(s) << 23 : 0x00400000u);  // 2^(s-127); s = 0: 2^-127
}

// SWIGLU: mlp1 (x gathered through group_row, output act [A, N/2]); else mlp2 (x grouped,
// output f32 [A, N]).
template <typename T, int TOK, bool SWIGLU>
__global__ void __launch_bounds__(kMf4Warps * 32)
    moe_mf4w_kernel(const T* __restrict__ x, const uint8_t* __restrict__ blocks,
                    const uint8_t* __restrict__ scales, const float* __restrict__ bias, MoeGroups g,
                    int N, int Kd, float limit, T* __restrict__ act_out,
                    float* __restrict__ y_out) {
  extern __shared__ float mf4_xs[];  // [TOK][nb * 33]
  __shared__ float lut[16];
  const int n_active = g.active[0];
  if (int(blockIdx.y) >= n_active) return;
  const int e = g.active[1 + blockIdx.y];
  const int a0 = g.offsets[e], count = g.offsets[e + 1] - a0;
  const int nb = Kd / 32, stride = nb * 33;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (threadIdx.x < 16) lut[threadIdx.x] = kMf4E2M1[threadIdx.x];
  const int row_base = blockIdx.x * kMf4RowsPerBlock + warp * kMf4RowsAtOnce * kMf4RowIters;

  for (int t0 = 0; t0 < count; t0 += TOK) {
    __syncthreads();  // the previous group's readers are done with mf4_xs
    for (int idx = threadIdx.x; idx < TOK * (Kd / 2); idx += blockDim.x) {
      const int tt = idx / (Kd / 2), c = (idx % (Kd / 2)) * 2;
      float2 v = make_float2(0.0f, 0.0f);
      if (t0 + tt < count) {
        const int a = a0 + t0 + tt;
        const int64_t src_row = SWIGLU ? g.group_row[a] : a;
        v = load2(x + src_row * Kd + c);
      }
      float* dst = mf4_xs + tt * stride + (c / 32) * 33 + c % 32;
      dst[0] = v.x;
      dst[1] = v.y;
    }
    __syncthreads();

#pragma unroll 1
    for (int it = 0; it < kMf4RowIters; ++it) {
      const int r0 = row_base + it * kMf4RowsAtOnce;
      if (r0 >= N) break;
      float acc[TOK][kMf4RowsAtOnce];
#pragma unroll
      for (int tt = 0; tt < TOK; ++tt)
#pragma unroll
        for (int rr = 0; rr < kMf4RowsAtOnce; ++rr) acc[tt][rr] = 0.0f;
      const int64_t row0 = int64_t(e) * N + r0;
      const uint8_t* wrow = blocks + row0 * nb * 16;
      const uint8_t* srow = scales + row0 * nb;
      for (int j = lane; j < nb; j += 32) {
        uint4 w[kMf4RowsAtOnce];
        float sc[kMf4RowsAtOnce];
#pragma unroll
        for (int rr = 0; rr < kMf4RowsAtOnce; ++rr) {
          w[rr] = __ldg(reinterpret_cast<const uint4*>(wrow + (int64_t(rr) * nb + j) * 16));
          sc[rr] = mf4_scale(srow[int64_t(rr) * nb + j]);
        }
        const float* xj = mf4_xs + j * 33;
        float part[TOK][kMf4RowsAtOnce];
#pragma unroll
        for (int tt = 0; tt < TOK; ++tt)
#pragma unroll
          for (int rr = 0; rr < kMf4RowsAtOnce; ++rr) part[tt][rr] = 0.0f;
#pragma unroll
        for (int b = 0; b < 16; ++b) {
          float x0[TOK], x1[TOK];
#pragma unroll
          for (int tt = 0; tt < TOK; ++tt) {
            x0[tt] = xj[tt * stride + 2 * b];
            x1[tt] = xj[tt * stride + 2 * b + 1];
          }
#pragma unroll
          for (int rr = 0; rr < kMf4RowsAtOnce; ++rr) {
            const uint32_t word = b < 4 ? w[rr].x : b < 8 ? w[rr].y : b < 12 ? w[rr].z : w[rr].w;
            const uint32_t byte = (word >> (8 * (b % 4))) & 0xffu;
            const float w0 = lut[byte & 15u], w1 = lut[byte >> 4];
#pragma unroll
            for (int tt = 0; tt < TOK; ++tt) part[tt][rr] += w0 * x0[tt] + w1 * x1[tt];
          }
        }
#pragma unroll
        for (int tt = 0; tt < TOK; ++tt)
#pragma unroll
          for (int rr = 0; rr < kMf4RowsAtOnce; ++rr) acc[tt][rr] += part[tt][rr] * sc[rr];
      }
#pragma unroll
      for (int tt = 0; tt < TOK; ++tt)
#pragma unroll
        for (int rr = 0; rr < kMf4RowsAtOnce; ++rr) acc[tt][rr] = warp_sum(acc[tt][rr]);
      if (lane == 0) {
        const float* b = bias + row0;
#pragma unroll
        for (int tt = 0; tt < TOK; ++tt) {
          if (t0 + tt >= count) break;
          const int64_t a = a0 + t0 + tt;
          if constexpr (SWIGLU) {
#pragma unroll
            for (int q = 0; q < kMf4RowsAtOnce / 2; ++q) {
              const float v =
                  moe_swiglu(acc[tt][2 * q] + b[2 * q], acc[tt][2 * q + 1] + b[2 * q + 1], limit);
              act_out[a * (N / 2) + r0 / 2 + q] = from_f32<T>(v);
            }
          } else {
#pragma unroll
            for (int rr = 0; rr < kMf4RowsAtOnce; ++rr)
              y_out[a * N + r0 + rr] = acc[tt][rr] + b[rr];
          }
        }
      }
    }
  }
}

// 32 consecutive activations of one row as floats (16-byte loads; the row is L1/L2-resident, read
// by every warp of the step).
__device__ __forceinline__ void mf4_load_x32(const float* p, float* v) {
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float4 q = reinterpret_cast<const float4*>(p)[k];
    v[4 * k] = q.x, v[4 * k + 1] = q.y, v[4 * k + 2] = q.z, v[4 * k + 3] = q.w;
  }
}
__device__ __forceinline__ void mf4_load_x32(const __nv_bfloat16* p, float* v) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint4 q = reinterpret_cast<const uint4*>(p)[k];
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[8 * k + 2 * i] = __uint_as_float(w[i] << 16);
      v[8 * k + 2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
}

// Decode (about one row per expert): no staging in shared memory and no block-wide barrier. A
// warp owns kGemvRows weight rows; each lane first issues the 16-byte loads of all the blocks it
// will need (up to kGemvIters per row; 3 x 32 blocks cover gpt-oss's rows of 2880 weights in one
// pass), then computes: ncu showed the version that loaded one block at a time stalled on each
// load with 28% of DRAM bandwidth in use. Activations come straight from global memory
// (L1-resident). Passes of four blocks a lane spilled in mlp2's combine kernel at its 80
// registers, and were slower in mlp1 too (docs/perf-notes.md, S13.2).
constexpr int kGemvRows = 2;  // one (gate, linear) pair in mlp1
constexpr int kGemvIters = 3;

// Both decode GEMVs (float and int8 activations) start a pass the same way: every load of the
// lane's blocks for this pass is issued before any is used (blocks past the row read as zero).
// kRows consecutive weight rows from wrow (scales from srow).
template <int kRows>
__device__ __forceinline__ void mf4_gemv_issue_rows(const uint8_t* wrow, const uint8_t* srow,
                                                    int nb, int j0, int lane,
                                                    uint4 (&w)[kGemvIters][kRows],
                                                    uint32_t (&sc)[kGemvIters][kRows]) {
#pragma unroll
  for (int it = 0; it < kGemvIters; ++it) {
    const int j = j0 + it * 32 + lane;
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr) {
      if (j < nb) {
        w[it][rr] = __ldg(reinterpret_cast<const uint4*>(wrow + (int64_t(rr) * nb + j) * 16));
        sc[it][rr] = srow[int64_t(rr) * nb + j];
      } else {
        w[it][rr] = make_uint4(0, 0, 0, 0);
        sc[it][rr] = 0;
      }
    }
  }
}

template <typename T, bool SWIGLU>
__global__ void __launch_bounds__(kMf4Warps * 32)
    moe_mf4w_gemv_kernel(const T* __restrict__ x, const uint8_t* __restrict__ blocks,
                         const uint8_t* __restrict__ scales, const float* __restrict__ bias,
                         MoeGroups g, int N, int Kd, float limit, T* __restrict__ act_out,
                         float* __restrict__ y_out) {
  __shared__ float lut[16];
  const int n_active = g.active[0];
  if (int(blockIdx.y) >= n_active) return;
  if (threadIdx.x < 16) lut[threadIdx.x] = kMf4E2M1[threadIdx.x];
  __syncthreads();
  const int e = g.active[1 + blockIdx.y];
  const int a0 = g.offsets[e], count = g.offsets[e + 1] - a0;
  const int nb = Kd / 32, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r0 = (blockIdx.x * kMf4Warps + warp) * kGemvRows;
  if (r0 >= N) return;
  const int64_t row0 = int64_t(e) * N + r0;
  const uint8_t* wrow = blocks + row0 * nb * 16;
  const uint8_t* srow = scales + row0 * nb;
  for (int tt = 0; tt < count; ++tt) {
    const int64_t a = a0 + tt;
    const T* xr = x + (SWIGLU ? int64_t(g.group_row[a]) : a) * Kd;
    float acc[kGemvRows] = {};
    for (int j0 = 0; j0 < nb; j0 += 32 * kGemvIters) {
      uint4 w[kGemvIters][kGemvRows];
      uint32_t sc[kGemvIters][kGemvRows];
      mf4_gemv_issue_rows<kGemvRows>(wrow, srow, nb, j0, lane, w, sc);
#pragma unroll
      for (int it = 0; it < kGemvIters; ++it) {
        const int j = j0 + it * 32 + lane;
        if (j >= nb) break;
        float xv[32];
        mf4_load_x32(xr + j * 32, xv);
#pragma unroll
        for (int rr = 0; rr < kGemvRows; ++rr) {
          const uint32_t words[4] = {w[it][rr].x, w[it][rr].y, w[it][rr].z, w[it][rr].w};
          float part = 0.0f;
#pragma unroll
          for (int b = 0; b < 16; ++b) {
            const uint32_t byte = (words[b / 4] >> (8 * (b % 4))) & 0xffu;
            part += lut[byte & 15u] * xv[2 * b] + lut[byte >> 4] * xv[2 * b + 1];
          }
          acc[rr] += part * mf4_scale(uint8_t(sc[it][rr]));
        }
      }
    }
#pragma unroll
    for (int rr = 0; rr < kGemvRows; ++rr) acc[rr] = warp_sum(acc[rr]);
    if (lane == 0) {
      const float* b = bias + row0;
      if constexpr (SWIGLU) {
        act_out[a * (N / 2) + r0 / 2] =
            from_f32<T>(moe_swiglu(acc[0] + b[0], acc[1] + b[1], limit));
      } else {
#pragma unroll
        for (int rr = 0; rr < kGemvRows; ++rr) y_out[a * N + r0 + rr] = acc[rr] + b[rr];
      }
    }
  }
}

// e2m1 values doubled, as int8 ({0, 1, 2, 3, 4, 6, 8, 12} and their negatives), for four
// nibbles at once (elements in order in the low 16 bits of sel): one byte permute looks the
// magnitudes up in the positive table, one in the negative table, and a third takes each byte
// from one or the other by the nibble's sign bit.
__device__ __forceinline__ int mf4_nibbles_to_i8x4(uint32_t sel) {
  const uint32_t mag = sel & 0x7777u;
  const uint32_t pos = __byte_perm(0x03020100u, 0x0C080604u, mag);
  const uint32_t neg = __byte_perm(0xFDFEFF00u, 0xF4F8FAFCu, mag);
  return int(__byte_perm(pos, neg, 0x3210u | ((sel & 0x8888u) >> 1)));
}

// 32 weights (16 bytes) as eight words of four int8 each.
__device__ __forceinline__ void mf4_block_to_i8(const uint4& w, int (&wi)[8]) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    wi[2 * q] = mf4_nibbles_to_i8x4(words[q] & 0xffffu);
    wi[2 * q + 1] = mf4_nibbles_to_i8x4(words[q] >> 16);
  }
}

// PTX prmt in its default mode, where a selector nibble with its top bit set yields the sign of
// the byte it selects (0x00 or 0xff) instead of the byte (CUDA's __byte_perm documents 3-bit
// selectors only). The selector is the low 16 bits of sel.
__device__ __forceinline__ uint32_t prmt_sign_mode(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

// Four nibbles (the low 16 bits of v) as int8: the doubled magnitude of each whose sign bit is
// clear, 0 for each whose sign bit is set (the table's bytes are all non-negative, so prmt's sign
// mode yields 0x00 for them).
__device__ __forceinline__ int mf4_nonnegative_i8x4(uint32_t v) {
  return int(prmt_sign_mode(0x03020100u, 0x0C080604u, v));
}

// 32 weights (16 bytes) times 32 int8 activations. Each group of four nibbles is looked up twice,
// as it is (its non-negative weights) and with its sign bits flipped (its negative weights'
// magnitudes), and the dot product is the difference of the two dp4a sums. Three ALU instructions
// a group of four weights instead of the six of mf4_nibbles_to_i8x4, for a second dp4a (another
// pipe): the ALU pipe, not memory, bounded the decode GEMVs (docs/perf-notes.md, S13.1). The sum
// is the same integer.
__device__ __forceinline__ int mf4_dot_q8(const uint4& w, const int4& xa, const int4& xb) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  const int x[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
  int pos = 0, neg = 0;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t v = words[q], flipped = v ^ 0x88888888u;
    pos = __dp4a(mf4_nonnegative_i8x4(v), x[2 * q], pos);
    neg = __dp4a(mf4_nonnegative_i8x4(flipped), x[2 * q], neg);
    pos = __dp4a(mf4_nonnegative_i8x4(v >> 16), x[2 * q + 1], pos);
    neg = __dp4a(mf4_nonnegative_i8x4(flipped >> 16), x[2 * q + 1], neg);
  }
  return pos - neg;
}

// mf4_dot_q8 with int16 activations (x: 16 words of two, in order): each four weights' two
// lookups as there, each dp4a two dp2a (int16 times the low or high two int8 of the weights).
// The folded chain's mlp1 takes its input so: int8 activations there cost about 2% of the largest
// logit against HF on the fixtures (docs/perf-notes.md, S17.7). |sum| < 32 * 32767 * 12 < 2^24.
__device__ __forceinline__ int mf4_dot_q16(const uint4& w, const int (&x)[16]) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  int pos = 0, neg = 0;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t v = words[q], flipped = v ^ 0x88888888u;
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // weights 8q + 4h .. 8q + 4h + 3
      const int p4 = mf4_nonnegative_i8x4(v >> (16 * h));
      const int n4 = mf4_nonnegative_i8x4(flipped >> (16 * h));
      const int x01 = x[4 * q + 2 * h], x23 = x[4 * q + 2 * h + 1];
      pos = __dp2a_hi(x23, p4, __dp2a_lo(x01, p4, pos));
      neg = __dp2a_hi(x23, n4, __dp2a_lo(x01, n4, neg));
    }
  }
  return pos - neg;
}

// 32 int8 weights times 32 int8 activations: 8 dp4a.
__device__ __forceinline__ int mf4_dot_i8(const int (&wi)[8], const int4& xa, const int4& xb) {
  int s = 0;
  s = __dp4a(wi[0], xa.x, s);
  s = __dp4a(wi[1], xa.y, s);
  s = __dp4a(wi[2], xa.z, s);
  s = __dp4a(wi[3], xa.w, s);
  s = __dp4a(wi[4], xb.x, s);
  s = __dp4a(wi[5], xb.y, s);
  s = __dp4a(wi[6], xb.z, s);
  s = __dp4a(wi[7], xb.w, s);
  return s;
}

// The decode GEMV on int8 activations (bf16 mode): the float version spends its time in the
// shared-memory pipe (a table lookup per weight, 64 bytes of bf16 activations per 16 bytes of
// weights); here a weight costs about 0.9 ALU instructions and half a dp4a, activations 32 bytes.

// The rows r0, r0 + 1 of expert e for its count assignments from a0 (one warp), TOK assignments
// at a time: a weight is loaded and turned into int8 once for the group and multiplied with each
// assignment's activations (dp4a), so a batched step's expert costs about one pass over its
// weights per TOK assignments instead of one per assignment.
template <bool SWIGLU, int TOK, bool ONE_ROW = false>
__device__ __forceinline__ void mf4_q8_gemv_rows(
    const int8_t* __restrict__ xq, const float* __restrict__ xd, const uint8_t* __restrict__ blocks,
    const uint8_t* __restrict__ scales, const float* __restrict__ bias, const MoeGroups& g, int N,
    int Kd, float limit, __nv_bfloat16* __restrict__ act_out, float* __restrict__ y_out, int e,
    int a0, int count, int nb, int lane, int r0) {
  const int64_t row0 = int64_t(e) * N + r0;
  const uint8_t* wrow = blocks + row0 * nb * 16;
  const uint8_t* srow = scales + row0 * nb;
  // The first weight loads go out before the group's rows are read (each a round trip to L2).
  uint4 w[kGemvIters][kGemvRows];
  uint32_t sc[kGemvIters][kGemvRows];
  mf4_gemv_issue_rows<kGemvRows>(wrow, srow, nb, 0, lane, w, sc);
  // The bias too (lane 0 adds it), so that its round trip does not end the warp's work.
  float b[kGemvRows];
#pragma unroll
  for (int rr = 0; rr < kGemvRows; ++rr) b[rr] = lane == 0 ? bias[row0 + rr] : 0.0f;
  for (int t0 = 0; t0 < count; t0 += TOK) {
    const int nt = min(TOK, count - t0);
    int src[TOK];  // activation rows (32-bit: the addresses are recomputed, registers are scarce)
#pragma unroll
    for (int tt = 0; tt < TOK; ++tt) {
      const int a = a0 + t0 + min(tt, nt - 1);  // past nt: the group's last (never stored)
      src[tt] = SWIGLU ? (ONE_ROW ? 0 : g.group_row[a]) : a;
    }
    float acc[TOK][kGemvRows] = {};
    for (int j0 = 0; j0 < nb; j0 += 32 * kGemvIters) {
      if (t0 > 0 || j0 > 0) mf4_gemv_issue_rows<kGemvRows>(wrow, srow, nb, j0, lane, w, sc);
#pragma unroll
      for (int it = 0; it < kGemvIters; ++it) {
        const int j = j0 + it * 32 + lane;
        if (j >= nb) break;
        if constexpr (TOK == 1) {  // the conversion interleaved with the dp4a (fewer registers)
          const int8_t* xr = xq + int64_t(src[0]) * Kd + j * 32;
          const int4 xa = *reinterpret_cast<const int4*>(xr);
          const int4 xb = *reinterpret_cast<const int4*>(xr + 16);
          const float dx = 0.5f * xd[int64_t(src[0]) * nb + j];  // 0.5: e2m1 values doubled
#pragma unroll
          for (int rr = 0; rr < kGemvRows; ++rr)
            acc[0][rr] +=
                float(mf4_dot_q8(w[it][rr], xa, xb)) * (dx * mf4_scale(uint8_t(sc[it][rr])));
        } else {
#pragma unroll
          for (int rr = 0; rr < kGemvRows; ++rr) {
            // Row rr's 32 weights of block j as int8 (doubled e2m1 values) for every assignment
            // of the group; the activations come from L1 again for the next row.
            int wi[8];
            mf4_block_to_i8(w[it][rr], wi);
            const float ws = mf4_scale(uint8_t(sc[it][rr]));
#pragma unroll
            for (int tt = 0; tt < TOK; ++tt) {
              if (tt >= nt) break;
              const int8_t* xr = xq + int64_t(src[tt]) * Kd + j * 32;
              const int4 xa = *reinterpret_cast<const int4*>(xr);
              const int4 xb = *reinterpret_cast<const int4*>(xr + 16);
              const float dx = 0.5f * xd[int64_t(src[tt]) * nb + j];
              acc[tt][rr] += float(mf4_dot_i8(wi, xa, xb)) * (dx * ws);
            }
          }
        }
      }
    }
#pragma unroll
    for (int tt = 0; tt < TOK; ++tt) {
      if (tt >= nt) break;
#pragma unroll
      for (int rr = 0; rr < kGemvRows; ++rr) acc[tt][rr] = warp_sum(acc[tt][rr]);
      if (lane == 0) {
        const int64_t a = a0 + t0 + tt;
        if constexpr (SWIGLU) {
          const __nv_bfloat16 v =
              __float2bfloat16_rn(moe_swiglu(acc[tt][0] + b[0], acc[tt][1] + b[1], limit));
          act_out[a * (N / 2) + r0 / 2] = v;
        } else {
#pragma unroll
          for (int rr = 0; rr < kGemvRows; ++rr) y_out[a * N + r0 + rr] = acc[tt][rr] + b[rr];
        }
      }
    }
  }
}

// Six blocks per multiprocessor (80 registers): the plain kernel's natural size. Groups of 2 or 4
// assignments keep an accumulator pair each and spilled at 80: four blocks (up to 128 registers).
// ONE_ROW (mlp1 of a step of one row, TOK 1): the grouping of one row's K distinct experts is
// known without reading it (moe_group_one_row): active slot y holds assignment y, of row 0. So
// the block reads only its expert before its weight and activation loads, not two more dependent
// round trips to L2 (offsets, then group_row) before the activations (docs/perf-notes.md, S17.2;
// the folded chain's quantizing mlp1 below computes its rows the same way). Asking L1 for the
// activations first (prefetch.global.L1) made the kernel three times slower on an H100.
template <bool SWIGLU, int TOK = 1, bool ONE_ROW = false>
__global__ void __launch_bounds__(kMf4Warps * 32, TOK == 1 ? 6 : 4)
    moe_mf4w_q8_gemv_kernel(const int8_t* __restrict__ xq, const float* __restrict__ xd,
                            const uint8_t* __restrict__ blocks, const uint8_t* __restrict__ scales,
                            const float* __restrict__ bias, MoeGroups g, int N, int Kd, float limit,
                            __nv_bfloat16* __restrict__ act_out, float* __restrict__ y_out) {
  static_assert(!ONE_ROW || (SWIGLU && TOK == 1), "one row: mlp1's single-assignment kernel");
  pdl_wait();  // the grouping and the activations come from the kernels before
  const int nb = Kd / 32, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Both reads in flight at once (active holds 1 + E values; past n_active e is not used).
  const int n_active = g.active[0], e = g.active[1 + blockIdx.y];
  if (int(blockIdx.y) >= n_active) return;
  const int a0 = ONE_ROW ? int(blockIdx.y) : g.offsets[e];
  const int count = ONE_ROW ? 1 : g.offsets[e + 1] - a0;
  const int r0 = (blockIdx.x * kMf4Warps + warp) * kGemvRows;
  if (r0 < N)
    mf4_q8_gemv_rows<SWIGLU, TOK, ONE_ROW>(xq, xd, blocks, scales, bias, g, N, Kd, limit, act_out,
                                           y_out, e, a0, count, nb, lane, r0);
}

// mlp1 of a step of one row, on the router's int16 row (mf4_dot_q16), that also quantizes its
// output for mlp2 (quantize_q8_32's int8 blocks of 32 values). A block of kQ1Warps warps owns 32
// consecutive outputs (row pairs) of one slot, warp w the pairs w, w + kQ1Warps, ... (by block
// column: mf4_q16_mlp1_pairs); once all are written, warp 0 turns them into the int8 block and its
// scale. mlp2 then reads its input right after its wait, with no quantizing blocks and no count to
// poll in front of its products. On an H100 (docs/perf-notes.md, S17.3, then on int8 inputs): mlp1
// 16.3 -> 16.7 us and mlp2 9.7 -> 7.9 us a layer, decode at batch 1 +2.3%; the int16 inputs then
// cost 1.5 us more (S17.7), reading them by column 1.3 us less (S18.2). The 360
// blocks (three a multiprocessor) run in one wave; letting mlp2 launch only at their end (the PDL
// trigger after the products instead of at the wait) was 3% slower.
constexpr int kQ1Warps = 8;
constexpr int kQ1Outputs = 32;  // one int8 block
constexpr int kQ1Pairs = kQ1Outputs / kQ1Warps;

// Warp w's products of the quantizing mlp1: its kQ1Pairs row pairs (outputs i0, i0 + kQ1Warps,
// ...) of expert e, one block column (j = lane, lane + 32, ...) of all of them at a time, so that
// the lane reads its 64 bytes of int16 activations once a column for eight rows rather than once a
// pair: a pair at a time (mf4_q8_gemv_rows' loop), the activations were twice the weights' bytes
// through L1, and the kernel took 18.1 instead of 16.8 us a layer on an H100, decode at batch 1
// 2% slower (docs/perf-notes.md, S18.2).
__device__ __forceinline__ void mf4_q16_mlp1_pairs(const int16_t* __restrict__ xq,
                                                   const float* __restrict__ xd,
                                                   const uint8_t* __restrict__ blocks,
                                                   const uint8_t* __restrict__ scales, int N,
                                                   int nb, int e, int i0, int lane,
                                                   float (&acc)[kQ1Pairs][kGemvRows]) {
  for (int j = lane; j < nb; j += 32) {
    uint4 w[kQ1Pairs][kGemvRows];
    uint32_t sc[kQ1Pairs][kGemvRows];
#pragma unroll
    for (int p = 0; p < kQ1Pairs; ++p) {
      const int64_t row0 = int64_t(e) * N + 2 * (i0 + p * kQ1Warps);
#pragma unroll
      for (int rr = 0; rr < kGemvRows; ++rr) {
        w[p][rr] = __ldg(reinterpret_cast<const uint4*>(blocks + ((row0 + rr) * nb + j) * 16));
        sc[p][rr] = scales[(row0 + rr) * nb + j];
      }
    }
    const int4* xr = reinterpret_cast<const int4*>(xq + int64_t(j) * 32);
    int xv[16];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int4 u = xr[k];
      xv[4 * k] = u.x, xv[4 * k + 1] = u.y, xv[4 * k + 2] = u.z, xv[4 * k + 3] = u.w;
    }
    const float dx = 0.5f * xd[j];  // 0.5: e2m1 values doubled
#pragma unroll
    for (int p = 0; p < kQ1Pairs; ++p)
#pragma unroll
      for (int rr = 0; rr < kGemvRows; ++rr)
        acc[p][rr] += float(mf4_dot_q16(w[p][rr], xv)) * (dx * mf4_scale(uint8_t(sc[p][rr])));
  }
}

__global__ void __launch_bounds__(kQ1Warps * 32, 3)
    moe_mf4w_q8_mlp1_quant_kernel(const int16_t* __restrict__ xq, const float* __restrict__ xd,
                                  const uint8_t* __restrict__ blocks,
                                  const uint8_t* __restrict__ scales,
                                  const float* __restrict__ bias, MoeGroups g, int N, int Kd,
                                  float limit, __nv_bfloat16* __restrict__ act_out,
                                  int8_t* __restrict__ aq, float* __restrict__ ad) {
  __shared__ float out[kQ1Outputs];
  pdl_wait();
  const int nb = Kd / 32, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, I = N / 2;
  const int y = blockIdx.y, e = g.active[1 + y];
  if (y < g.active[0]) {  // the same for the whole block
    const int i0 = blockIdx.x * kQ1Outputs + warp;
    // Lane 2p + rr holds pair p's bias of row rr (one register, not eight: the kernel is at 80).
    const int bias_lane = min(lane, 2 * kQ1Pairs - 1);
    const float bias_of_lane =
        bias[int64_t(e) * N + 2 * (i0 + (bias_lane / 2) * kQ1Warps) + bias_lane % 2];
    float acc[kQ1Pairs][kGemvRows] = {};
    mf4_q16_mlp1_pairs(xq, xd, blocks, scales, N, nb, e, i0, lane, acc);
#pragma unroll
    for (int p = 0; p < kQ1Pairs; ++p) {
      const float gate = warp_sum(acc[p][0]) + __shfl_sync(~0u, bias_of_lane, 2 * p),
                  linear = warp_sum(acc[p][1]) + __shfl_sync(~0u, bias_of_lane, 2 * p + 1);
      if (lane == 0) {
        const __nv_bfloat16 v = __float2bfloat16_rn(moe_swiglu(gate, linear, limit));
        act_out[int64_t(y) * I + i0 + p * kQ1Warps] = v;
        out[warp + p * kQ1Warps] = __bfloat162float(v);
      }
    }
    __syncthreads();
    if (warp == 0) {  // quantize_q8_32's arithmetic
      const float v = out[lane], d = q8_scale(warp_max(fabsf(v)));
      aq[int64_t(y) * I + blockIdx.x * kQ1Outputs + lane] = int8_t(q8_round(v, d));
      if (lane == 0) ad[int64_t(y) * (I / 32) + blockIdx.x] = d;
    }
  }
}

// mlp2 of the folded decode chain with the combine: warp (n, r) computes output n of every slot
// s < K of residual row r (assignment a = assign_at[r, s], grouped; expert group_expert[a]), two
// slots at a time with all their weight loads in flight, writes y[a, n] = the product + bias, and
// adds sum_s weights[r, s] * y[a, n] (slots in order: moe_combine_rmsnorm's arithmetic) to x[r, n].
// The per-slot products are those of moe_mf4w_q8_gemv_kernel (same loads per lane, same order),
// so y is bit for bit what moe_mlp2_mf4_q8 writes. No block waits for another: the version that
// multiplied per expert and let the last block of each output tile add the combine (a counter,
// two fences, y read back through L2) took 13.9 us a layer at batch 1 on the H100, against 7.5 us
// for a kernel that only reads those 17.7 MB (docs/perf-notes.md, S8.9).
// Its input comes quantized from mlp1 (moe_mf4w_q8_mlp1_quant_kernel at one row, or
// quantize_q8_32), so its blocks wait only for the kernel before them. Until session 17 its own
// first blocks quantized mlp1's bf16 output and the product blocks polled a count of them: about
// 1.8 us more a layer at batch 1 on an H100 (docs/perf-notes.md, S17.3).
__global__ void __launch_bounds__(kMf4Warps * 32, 6) moe_mf4w_q8_mlp2_combine_kernel(
    const int8_t* __restrict__ xq, const float* __restrict__ xd, const uint8_t* __restrict__ blocks,
    const uint8_t* __restrict__ scales, const float* __restrict__ bias, MoeGroups g, int N, int Kd,
    float* __restrict__ y_out, const float* __restrict__ weights, int K, float* __restrict__ x) {
  const int n = blockIdx.x * kMf4Warps + (threadIdx.x >> 5), r = blockIdx.y;
  if (n >= N) {
    pdl_wait();
    return;
  }
  const int nb = Kd / 32, lane = threadIdx.x & 31;
  // Lane s < K holds slot s's assignment and expert (two dependent round trips to L2, once for
  // all slots); each pair of slots takes them by shuffles.
  const int slot_a = lane < K ? g.assign_at[r * K + lane] : 0;
  const int slot_e = lane < K ? g.group_expert[slot_a] : 0;
  // And slot s's combine weight: read after each pair of slots, it was a round trip to L2 between
  // that pair's products and the next pair's weight loads.
  const float slot_w = lane < K ? weights[r * K + lane] : 0.0f;
  // The residual value this warp adds to, read now rather than at the end: the out projection
  // wrote it three launches before this one (the router and mlp1 come between).
  const float x_old = lane == 0 ? x[int64_t(r) * N + n] : 0.0f;
  float m = 0.0f;
  for (int s0 = 0; s0 < K; s0 += 2) {
    // Slot s0 + p's assignment and expert; past K: slot K - 1 again (not added). Taken again
    // where used rather than held (at 80 registers holding them spilled).
    auto slot_of = [&](int v, int p) { return __shfl_sync(0xffffffffu, v, min(s0 + p, K - 1)); };
    int a[2];
#pragma unroll
    for (int p = 0; p < 2; ++p) a[p] = slot_of(slot_a, p);
    float acc[2] = {0.0f, 0.0f}, b[2];
    for (int j0 = 0; j0 < nb; j0 += 32 * kGemvIters) {
      uint4 w[kGemvIters][2];
      uint32_t sc[kGemvIters][2];
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        const int64_t row = int64_t(slot_of(slot_e, p)) * N + n;
        uint4 wp[kGemvIters][1];
        uint32_t sp[kGemvIters][1];
        mf4_gemv_issue_rows<1>(blocks + row * nb * 16, scales + row * nb, nb, j0, lane, wp, sp);
#pragma unroll
        for (int it = 0; it < kGemvIters; ++it) w[it][p] = wp[it][0], sc[it][p] = sp[it][0];
        // The bias of this slot's row with the first loads (lane 0 adds it), not at the end.
        if (j0 == 0) b[p] = lane == 0 ? bias[row] : 0.0f;
      }
      // The first weight loads are in flight before the wait: the routing they need was written
      // by the router, which completed before the kernel before this one began (see the launcher).
      if (s0 == 0 && j0 == 0) pdl_wait();
#pragma unroll
      for (int it = 0; it < kGemvIters; ++it) {
        const int j = j0 + it * 32 + lane;
        if (j >= nb) break;
#pragma unroll
        for (int p = 0; p < 2; ++p) {
          const int8_t* xr = xq + int64_t(a[p]) * Kd + j * 32;
          const int4 xa = *reinterpret_cast<const int4*>(xr);
          const int4 xb = *reinterpret_cast<const int4*>(xr + 16);
          const float dx = 0.5f * xd[int64_t(a[p]) * nb + j];  // 0.5: e2m1 values doubled
          acc[p] += float(mf4_dot_q8(w[it][p], xa, xb)) * (dx * mf4_scale(uint8_t(sc[it][p])));
        }
      }
    }
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      if (s0 + p >= K) break;
      const float y = warp_sum(acc[p]) + b[p];
      if (lane == 0) y_out[int64_t(a[p]) * N + n] = y;
      m += __shfl_sync(0xffffffffu, slot_w, s0 + p) * y;
    }
  }
  if (lane == 0) x[int64_t(r) * N + n] = x_old + m;
}

template <typename T, bool SWIGLU>
void moe_mf4_launch(const void* x, const uint8_t* blocks, const uint8_t* scales, const float* bias,
                    MoeGroups g, int max_active, int tokens_hint, int N, int Kd, float limit,
                    void* act_out, float* y_out, cudaStream_t stream) {
  const dim3 grid((N + kMf4RowsPerBlock - 1) / kMf4RowsPerBlock, max_active);
  auto go = [&](auto kernel, int tok) {
    const size_t smem = size_t(tok) * (Kd / 32) * 33 * sizeof(float);
    if (smem > 48 * 1024)
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
            "cudaFuncSetAttribute(moe_mf4w)");
    kernel<<<grid, kMf4Warps * 32, smem, stream>>>(static_cast<const T*>(x), blocks, scales, bias,
                                                   g, N, Kd, limit, static_cast<T*>(act_out),
                                                   y_out);
  };
  if (tokens_hint <= 1) {
    const int rows_per_block = kMf4Warps * kGemvRows;
    moe_mf4w_gemv_kernel<T, SWIGLU><<<dim3((N + rows_per_block - 1) / rows_per_block, max_active),
                                      kMf4Warps * 32, 0, stream>>>(static_cast<const T*>(x), blocks,
                                                                   scales, bias, g, N, Kd, limit,
                                                                   static_cast<T*>(act_out), y_out);
  } else if (tokens_hint <= 2)
    go(moe_mf4w_kernel<T, 2, SWIGLU>, 2);
  else if (tokens_hint <= 4)
    go(moe_mf4w_kernel<T, 4, SWIGLU>, 4);
  else
    go(moe_mf4w_kernel<T, 8, SWIGLU>, 8);
}

void moe_mf4_check(const char* launcher, const void* x, const uint8_t* blocks,
                   const uint8_t* scales, const float* bias, const MoeGroups& g, int max_active,
                   int H, int I) {
  MIND4_CUDA_ARG(x && blocks && scales && bias && g.offsets && g.active && g.group_row, launcher,
                 "null pointer");
  MIND4_CUDA_ARG(
      H > 0 && I > 0 && H % 32 == 0 && I % 32 == 0 && max_active >= 0 && max_active <= 65535,
      launcher, "H = ", H, ", I = ", I, " (multiples of 32), max_active = ", max_active);
  MIND4_CUDA_ARG(reinterpret_cast<uintptr_t>(blocks) % 16 == 0, launcher,
                 "blocks must be 16-byte aligned");
}

}  // namespace

void moe_mlp1_swiglu_mf4(ActType t, const void* x, const uint8_t* blocks, const uint8_t* scales,
                         const float* bias, MoeGroups g, int max_active, int tokens_hint, int H,
                         int I, float limit, void* act_out, cudaStream_t stream) {
  moe_mf4_check("moe_mlp1_swiglu_mf4", x, blocks, scales, bias, g, max_active, H, I);
  MIND4_CUDA_ARG(act_out, "moe_mlp1_swiglu_mf4", "null output");
  if (max_active == 0) return;
  dispatch_act(t, [&](auto tag) {
    moe_mf4_launch<decltype(tag), true>(x, blocks, scales, bias, g, max_active, tokens_hint, 2 * I,
                                        H, limit, act_out, nullptr, stream);
  });
  check_launch(t == ActType::kF32 ? "moe_mlp1_swiglu_f32_mf4w" : "moe_mlp1_swiglu_bf16_mf4w");
}

void moe_mlp2_mf4(ActType t, const void* act, const uint8_t* blocks, const uint8_t* scales,
                  const float* bias, MoeGroups g, int max_active, int tokens_hint, int H, int I,
                  float* y, cudaStream_t stream) {
  moe_mf4_check("moe_mlp2_mf4", act, blocks, scales, bias, g, max_active, H, I);
  MIND4_CUDA_ARG(y, "moe_mlp2_mf4", "null output");
  if (max_active == 0) return;
  dispatch_act(t, [&](auto tag) {
    moe_mf4_launch<decltype(tag), false>(act, blocks, scales, bias, g, max_active, tokens_hint, H,
                                         I, 0.0f, nullptr, y, stream);
  });
  check_launch(t == ActType::kF32 ? "moe_mlp2_f32_mf4w" : "moe_mlp2_bf16_mf4w");
}

namespace {

// The int8 GEMV over (N rows, max_active experts) with the token group that fits tokens_hint.
template <bool SWIGLU>
void launch_q8_gemv(const int8_t* xq, const float* xd, const uint8_t* blocks, const uint8_t* scales,
                    const float* bias, MoeGroups g, int max_active, int tokens_hint, int N, int Kd,
                    float limit, __nv_bfloat16* act_out, float* y_out, cudaStream_t stream,
                    bool one_row = false) {
  const int rows_per_block = kMf4Warps * kGemvRows;
  const dim3 grid((N + rows_per_block - 1) / rows_per_block, max_active);
  auto go = [&](auto kernel) {
    launch_pdl(SWIGLU ? "moe_mlp1_swiglu_bf16_q8a_mf4w" : "moe_mlp2_f32_q8a_mf4w", kernel, grid,
               dim3(kMf4Warps * 32), 0, stream, xq, xd, blocks, scales, bias, g, N, Kd, limit,
               act_out, y_out);
  };
  if constexpr (SWIGLU) {
    if (one_row) return go(moe_mf4w_q8_gemv_kernel<true, 1, true>);
  }
  if (tokens_hint <= 1)
    go(moe_mf4w_q8_gemv_kernel<SWIGLU, 1>);
  else if (tokens_hint <= 2)
    go(moe_mf4w_q8_gemv_kernel<SWIGLU, 2>);
  else
    go(moe_mf4w_q8_gemv_kernel<SWIGLU, 4>);
}

}  // namespace

void moe_mlp1_swiglu_mf4_q8(ActType t, const int8_t* xq, const float* xd, const uint8_t* blocks,
                            const uint8_t* scales, const float* bias, MoeGroups g, int max_active,
                            int tokens_hint, int H, int I, float limit, void* act_out,
                            cudaStream_t stream, bool one_row) {
  moe_mf4_check("moe_mlp1_swiglu_mf4_q8", xq, blocks, scales, bias, g, max_active, H, I);
  MIND4_CUDA_ARG(xd && act_out && t == ActType::kBF16, "moe_mlp1_swiglu_mf4_q8",
                 "null pointer, or activations not bf16 (the int8 route is bf16 mode's)");
  if (max_active == 0) return;
  launch_q8_gemv<true>(xq, xd, blocks, scales, bias, g, max_active, tokens_hint, 2 * I, H, limit,
                       static_cast<__nv_bfloat16*>(act_out), nullptr, stream, one_row);
}

void moe_mlp1_swiglu_mf4_q8_one_row(const int16_t* xq, const float* xd, const uint8_t* blocks,
                                    const uint8_t* scales, const float* bias, MoeGroups g,
                                    int max_active, int H, int I, float limit, void* act_out,
                                    int8_t* aq, float* ad, cudaStream_t stream) {
  moe_mf4_check("moe_mlp1_swiglu_mf4_q8_one_row", xq, blocks, scales, bias, g, max_active, H, I);
  MIND4_CUDA_ARG(xd && act_out && aq && ad, "moe_mlp1_swiglu_mf4_q8_one_row", "null pointer");
  MIND4_CUDA_ARG(reinterpret_cast<uintptr_t>(xq) % 16 == 0, "moe_mlp1_swiglu_mf4_q8_one_row",
                 "xq must be 16-byte aligned");
  if (max_active == 0) return;
  launch_pdl("moe_mlp1_swiglu_bf16_q8a_mf4w_quant", moe_mf4w_q8_mlp1_quant_kernel,
             dim3(I / kQ1Outputs, max_active), dim3(kQ1Warps * 32), 0, stream, xq, xd, blocks,
             scales, bias, g, 2 * I, H, limit, static_cast<__nv_bfloat16*>(act_out), aq, ad);
}

void moe_mlp2_mf4_q8(const int8_t* aq, const float* ad, const uint8_t* blocks,
                     const uint8_t* scales, const float* bias, MoeGroups g, int max_active,
                     int tokens_hint, int H, int I, float* y, cudaStream_t stream) {
  moe_mf4_check("moe_mlp2_mf4_q8", aq, blocks, scales, bias, g, max_active, H, I);
  MIND4_CUDA_ARG(ad && y, "moe_mlp2_mf4_q8", "null pointer");
  if (max_active == 0) return;
  launch_q8_gemv<false>(aq, ad, blocks, scales, bias, g, max_active, tokens_hint, H, I, 0.0f,
                        nullptr, y, stream);
}

void moe_mlp2_mf4_q8_combine(const int8_t* aq, const float* ad, const uint8_t* blocks,
                             const uint8_t* scales, const float* bias, MoeGroups g, int max_active,
                             int H, int I, float* y, const float* weights, int B, int K, float* x,
                             cudaStream_t stream) {
  moe_mf4_check("moe_mlp2_mf4_q8_combine", aq, blocks, scales, bias, g, max_active, H, I);
  MIND4_CUDA_ARG(ad && y && weights && x && g.assign_at && g.group_expert,
                 "moe_mlp2_mf4_q8_combine", "null pointer");
  MIND4_CUDA_ARG(B >= 1 && B <= 65535 && K >= 1 && K <= 32 && max_active >= 1,
                 "moe_mlp2_mf4_q8_combine", "B = ", B, " (1 to 65535), K = ", K,
                 " (1 to 32: a lane a slot), max_active = ", max_active, " (at least 1)");
  // With PDL the kernel reads the routing (g) before it waits: the grouping must come from a
  // kernel at least two launches earlier (the folded chain: router, mlp1, this), since a chain
  // kernel lets the next launch only after its own wait.
  launch_pdl("moe_mlp2_combine_f32_q8a_mf4w", moe_mf4w_q8_mlp2_combine_kernel,
             dim3((H + kMf4Warps - 1) / kMf4Warps, B), dim3(kMf4Warps * 32), 0, stream, aq, ad,
             blocks, scales, bias, g, H, I, y, weights, K, x);
}

}  // namespace mind4::cuda
