// The grouped MXFP4 expert GEMM for steps with few rows an expert (batched decode: at 16 to 64
// sequences an expert holds about 2 to 8 rows). The prefill kernels decode every weight tile once
// per 128 assignments; with a handful of live rows that decode (and the padding rows' products)
// is nearly all the work, and the step streams each expert's weights at a fraction of the
// bandwidth. Here each warp streams 16 weight rows of one expert straight from global memory into
// the A fragments of mma.m16n8k16 (weights x assignments) and multiplies them with the tile's up
// to 16 rows (one or two 8-wide products), so each weight is read and decoded once per tile of 16
// rows, and no shared memory or barrier is involved.
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
constexpr int kSkWarps = 8;    // a block: 8 warps x 16 weight rows
constexpr int kSkCols = 16 * kSkWarps;
constexpr int kSkThreads = 32 * kSkWarps;

template <bool kSwiglu>
__global__ void __launch_bounds__(kSkThreads)
    moe_gemm_mf4_skinny_kernel(const __nv_bfloat16* __restrict__ a, const int* __restrict__ a_rows,
                               const uint8_t* __restrict__ blocks,
                               const uint8_t* __restrict__ scales, const float* __restrict__ bias,
                               const int* __restrict__ offsets, const int* __restrict__ plan, int N,
                               int K, float limit, void* __restrict__ out) {
  if (int(blockIdx.x) >= plan[0]) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n_base = blockIdx.y * kSkCols + warp * 16;
  if (n_base >= N) return;  // warp-uniform (N % 16 == 0)
  const int e = plan[1 + 2 * blockIdx.x], row0 = plan[2 + 2 * blockIdx.x];
  const int rows = min(kSkTokens, offsets[e + 1] - row0);
  const bool two = rows > 8;  // the second 8-wide product has live rows
  const int KB = K / 32;
  // This lane's weight rows g and g + 8 of the warp's 16, and its assignments g and g + 8 of the
  // tile (the B operand's column); past the tile's rows they repeat its last one (never stored).
  const int64_t rowA = int64_t(e) * N + n_base + g, rowB = rowA + 8;
  const uint4* wA = reinterpret_cast<const uint4*>(blocks) + rowA * KB;
  const uint4* wB = reinterpret_cast<const uint4*>(blocks) + rowB * KB;
  const uint8_t* sA = scales + rowA * KB;
  const uint8_t* sB = scales + rowB * KB;
  const auto x_row = [&](int r) {
    const int ga = row0 + min(r, rows - 1);
    return reinterpret_cast<const uint4*>(a + int64_t(a_rows ? a_rows[ga] : ga) * K);
  };
  const uint4* x0 = x_row(g);
  const uint4* x1 = x_row(g + 8);

  float acc[2][4] = {};
  for (int blk = t; blk - t < KB; blk += 4) {  // a group of four blocks a trip, lane t's is blk
    const bool in = blk < KB;
    const uint4 z = make_uint4(0, 0, 0, 0);
    const uint4 qa = in ? __ldg(wA + blk) : z, qb = in ? __ldg(wB + blk) : z;
    const uint32_t s2a = mf4_scale_pair(in ? __ldg(sA + blk) : 0u);
    const uint32_t s2b = mf4_scale_pair(in ? __ldg(sB + blk) : 0u);
    uint4 xa[4], xb[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      xa[q] = in ? __ldg(x0 + 4 * blk + q) : z;
      xb[q] = in && two ? __ldg(x1 + 4 * blk + q) : z;
    }
    const uint32_t wa[4] = {qa.x, qa.y, qa.z, qa.w}, wb[4] = {qb.x, qb.y, qb.z, qb.w};
#pragma unroll
    for (int j = 0; j < 8; ++j) {  // product j: values 4j .. 4j + 3 of each lane's block
      const uint32_t ba = wa[j >> 1] >> (16 * (j & 1)), bb = wb[j >> 1] >> (16 * (j & 1));
      uint32_t af[4];
      mf4_decode4(ba, s2a, af[0], af[2]);  // row g: (4j, 4j + 1), (4j + 2, 4j + 3)
      mf4_decode4(bb, s2b, af[1], af[3]);  // row g + 8
      const uint4& va = xa[j >> 1];
      const uint32_t b0 = (j & 1) ? va.z : va.x, b1 = (j & 1) ? va.w : va.y;
      mma_bf16_16816(acc[0], af, b0, b1);
      if (two) {
        const uint4& vb = xb[j >> 1];
        mma_bf16_16816(acc[1], af, (j & 1) ? vb.z : vb.x, (j & 1) ? vb.w : vb.y);
      }
    }
  }

  // acc[h] = rows g (0, 1) and g + 8 (2, 3), assignments 8h + 2t + {0, 1}.
  const float* eb = bias + int64_t(e) * N;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    moe_store_row_pair<kSwiglu>(acc[h][0], acc[h][1], eb, n_base + g, N, 8 * h + 2 * t, rows, row0,
                                limit, out);
    moe_store_row_pair<kSwiglu>(acc[h][2], acc[h][3], eb, n_base + g + 8, N, 8 * h + 2 * t, rows,
                                row0, limit, out);
  }
}

}  // namespace

const MoeGemmFamily& moe_skinny_family() {
  static const MoeGemmFamily family{moe_gemm_mf4_skinny_kernel<true>,
                                    moe_gemm_mf4_skinny_kernel<false>,
                                    "cudaFuncSetAttribute(moe_gemm_mf4_skinny)",
                                    "moe_mlp1_swiglu_mf4_skinny",
                                    "moe_mlp2_mf4_skinny",
                                    "moe_mlp1_swiglu_mf4_skinny_bf16",
                                    "moe_mlp2_mf4_skinny_f32",
                                    0,
                                    kSkThreads,
                                    kSkTokens,
                                    kSkCols};
  return family;
}

}  // namespace mind4::cuda
