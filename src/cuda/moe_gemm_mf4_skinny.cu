// The grouped MXFP4 expert GEMM for steps with few rows an expert (batched decode: at 16 to 64
// sequences an expert holds about 2 to 8 rows). The prefill kernels decode every weight tile once
// per 128 assignments; with a handful of live rows that decode (and the padding rows' products)
// is nearly all the work, and the step streams each expert's weights at a fraction of the
// bandwidth. Here each warp streams 32 weight rows of one expert (two m16 tiles) straight from
// global memory into the A fragments of mma.m16n8k16 (weights x assignments) and multiplies them
// with the tile's up to 16 rows (one or two 8-wide products), so each weight is read and decoded
// once per tile of 16 rows, and no shared memory or barrier is involved.
//
// The k order inside a product is free as long as A and B agree. A quad's four lanes each take one
// MXFP4 block of a group of four (16 bytes and one scale each): lane t's fragment of product j
// (of the group's eight) is values 4j .. 4j + 3 of its block, whose activations are 8 contiguous
// bytes, so both operands come from plain vector loads.
#include "cuda/device_util.cuh"
#include "cuda/mma.cuh"
#include "cuda/moe_gemm_launch.cuh"

namespace mind4::cuda {
namespace {

constexpr int kSkTokens = 16;  // assignments per tile: two n8 products
constexpr int kSkWarps = 8;    // a block: 8 warps x (16 kM) weight rows
constexpr int kSkThreads = 32 * kSkWarps;
constexpr int sk_cols(int m_tiles) {
  return 16 * m_tiles * kSkWarps;
}
// Two m16 tiles a warp: one activation fragment serves two products, halving the L1 traffic of
// the activations (4 bytes of them per weight byte with one): decode at 64 rows +5.5% over one,
// 16 rows unchanged (an H100, docs/perf-notes.md S9.8).
constexpr int kSkM = 2;

// kM: m16 tiles a warp (16 kM weight rows), each activation fragment serving kM products.
template <bool kSwiglu, int kM>
__global__ void __launch_bounds__(kSkThreads)
    moe_gemm_mf4_skinny_kernel(const __nv_bfloat16* __restrict__ a, const int* __restrict__ a_rows,
                               const uint8_t* __restrict__ blocks,
                               const uint8_t* __restrict__ scales, const float* __restrict__ bias,
                               const int* __restrict__ offsets, const int* __restrict__ plan, int N,
                               int K, float limit, void* __restrict__ out) {
  if (int(blockIdx.x) >= plan[0]) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n_base = blockIdx.y * sk_cols(kM) + warp * 16 * kM;
  if (n_base >= N) return;  // warp-uniform (N % 32 == 0; a warp's last m16 tile may lie past N)
  const int e = plan[1 + 2 * blockIdx.x], row0 = plan[2 + 2 * blockIdx.x];
  const int rows = min(kSkTokens, offsets[e + 1] - row0);
  const bool two = rows > 8;  // the second 8-wide product has live rows
  const int KB = K / 32;
  // This lane's weight rows g and g + 8 of each of the warp's m16 tiles (rows past N repeat row
  // N - 1, never stored), and its assignments g and g + 8 of the tile (the B operand's column;
  // past the tile's rows they repeat its last one, never stored).
  const uint4* w[kM][2];
  const uint8_t* sc[kM][2];
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = int64_t(e) * N + min(n_base + 16 * m + 8 * h + g, N - 1);
      w[m][h] = reinterpret_cast<const uint4*>(blocks) + row * KB;
      sc[m][h] = scales + row * KB;
    }
  const auto x_row = [&](int r) {
    const int ga = row0 + min(r, rows - 1);
    return reinterpret_cast<const uint4*>(a + int64_t(a_rows ? a_rows[ga] : ga) * K);
  };
  const uint4* x0 = x_row(g);
  const uint4* x1 = x_row(g + 8);

  float acc[kM][2][4] = {};
  for (int blk = t; blk - t < KB; blk += 4) {  // a group of four blocks a trip, lane t's is blk
    const bool in = blk < KB;
    const uint4 z = make_uint4(0, 0, 0, 0);
    uint4 q[kM][2];
    uint32_t s2[kM][2];
#pragma unroll
    for (int m = 0; m < kM; ++m)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        q[m][h] = in ? __ldg(w[m][h] + blk) : z;
        s2[m][h] = mf4_scale_pair(in ? __ldg(sc[m][h] + blk) : 0u);
      }
    uint4 xa[4], xb[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      xa[i] = in ? __ldg(x0 + 4 * blk + i) : z;
      xb[i] = in && two ? __ldg(x1 + 4 * blk + i) : z;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {  // product j: values 4j .. 4j + 3 of each lane's block
      const uint4& va = xa[j >> 1];
      const uint4& vb = xb[j >> 1];
      const uint32_t b0 = (j & 1) ? va.z : va.x, b1 = (j & 1) ? va.w : va.y;
      const uint32_t b2 = (j & 1) ? vb.z : vb.x, b3 = (j & 1) ? vb.w : vb.y;
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        const uint32_t wa[4] = {q[m][0].x, q[m][0].y, q[m][0].z, q[m][0].w};
        const uint32_t wb[4] = {q[m][1].x, q[m][1].y, q[m][1].z, q[m][1].w};
        uint32_t af[4];
        // row g: (4j, 4j + 1), (4j + 2, 4j + 3); then row g + 8
        mf4_decode4(wa[j >> 1] >> (16 * (j & 1)), s2[m][0], af[0], af[2]);
        mf4_decode4(wb[j >> 1] >> (16 * (j & 1)), s2[m][1], af[1], af[3]);
        mma_bf16_16816(acc[m][0], af, b0, b1);
        if (two) mma_bf16_16816(acc[m][1], af, b2, b3);
      }
    }
  }

  // acc[m][h] = rows 16m + g (0, 1) and 16m + g + 8 (2, 3), assignments 8h + 2t + {0, 1}.
  const float* eb = bias + int64_t(e) * N;
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        moe_store_row_pair<kSwiglu>(acc[m][h][2 * r], acc[m][h][2 * r + 1], eb,
                                    n_base + 16 * m + 8 * r + g, N, 8 * h + 2 * t, rows, row0,
                                    limit, out);
}

}  // namespace

const MoeGemmFamily& moe_skinny_family() {
  static const MoeGemmFamily family{moe_gemm_mf4_skinny_kernel<true, kSkM>,
                                    moe_gemm_mf4_skinny_kernel<false, kSkM>,
                                    "cudaFuncSetAttribute(moe_gemm_mf4_skinny)",
                                    "moe_mlp1_swiglu_mf4_skinny",
                                    "moe_mlp2_mf4_skinny",
                                    "moe_mlp1_swiglu_mf4_skinny_bf16",
                                    "moe_mlp2_mf4_skinny_f32",
                                    0,
                                    kSkThreads,
                                    kSkTokens,
                                    sk_cols(kSkM)};
  return family;
}

}  // namespace mind4::cuda
