// The expert products of a large step (prefill, bf16 mode) as one grouped GEMM per matrix, on
// tensor cores, reading the packed MXFP4 weights: no expanded copy of the experts in memory and
// no host synchronisation. A tile plan (one small launch) lists each active expert's row tiles
// of 128 (or 256) assignments; a block multiplies one such tile by 128 weight rows of its expert.
// Per step of 64 along k the block copies its activation rows into shared memory (cp.async; mlp1
// gathers them through group_row, so no gathered copy exists either) and expands its 128 x 2 MXFP4
// blocks (16 bytes + one e8m0 scale each) to bf16 in shared memory: a 256-entry table turns each
// byte into two e2m1 values, and one bf16x2 multiply applies the power-of-two scale (exact).
// The next step's packed weights are loaded into registers while the tensor cores work on this
// one. Warps of 64 rows x 32 columns of the tile (8 of them, or 16 for 256 rows), mma.sync
// m16n8k16 with f32 accumulators.
// mlp1's epilogue adds the bias and applies the clamped SwiGLU (gate and linear columns
// interleave, so a lane's accumulator pair is one (gate, linear) pair); mlp2's adds the bias.
#include <algorithm>
#include <type_traits>

#include "cuda/device_util.cuh"
#include "cuda/mma.cuh"
#include "cuda/moe_gemm_launch.cuh"

namespace mind4::cuda {
namespace {

constexpr int kGemmK = 64;               // k per pipeline step: two MXFP4 blocks
constexpr int kGemmStride = kGemmK + 8;  // bf16 per shared row: 16 bytes of padding for ldmatrix
// Tiles of kRows assignments (BM) x kCols weight rows (BN), with (kRows / 64) x 4 warps
// (docs/perf-notes.md compares them):
// - 128 x 128 (warps of 64 x 32, two blocks per multiprocessor; the default);
// - 128 x 256 (warps of 64 x 64: 16 multiply-adds per byte that ldmatrix moves instead of 10.7,
//   but one block of 8 warps per multiprocessor, which left the latencies unhidden: slower);
// - 256 x 128 (16 warps of 64 x 32, one block per multiprocessor: each expanded weight tile serves
//   twice the rows; 3-7% faster with whole tiles, but 3-6% slower with a real step's uneven
//   experts, whose last tile now costs a whole multiprocessor however few rows it has).
constexpr int gemm_threads(int rows) {
  return 2 * rows;
}
// A and W tiles of two stages, then the byte table.
constexpr size_t gemm_smem_bytes(int rows, int cols) {
  return 2 * size_t(rows + cols) * kGemmStride * 2 + 256 * 4;
}

__constant__ float kGemmE2M1[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// One warp: lane l takes experts l, l + 32, ...; a warp scan of their tile counts gives each its
// first entry (one thread walking the experts took 4.5 us a layer at 32 of them).
__global__ void moe_tile_plan_kernel(const int* __restrict__ offsets, int E, int tile_rows,
                                     int* __restrict__ plan) {
  const int lane = threadIdx.x;
  int n = 0;  // entries of the experts before this chunk of 32
  for (int e0 = 0; e0 < E; e0 += 32) {
    const int e = e0 + lane;
    const int r0 = e < E ? offsets[e] : 0, r1 = e < E ? offsets[e + 1] : 0;
    const int tiles = (r1 - r0 + tile_rows - 1) / tile_rows;
    int incl = tiles;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    for (int i = 0, at = n + incl - tiles; i < tiles; ++i, ++at) {
      plan[1 + 2 * at] = e;
      plan[2 + 2 * at] = r0 + i * tile_rows;
    }
    n += __shfl_sync(0xffffffffu, incl, 31);
  }
  if (lane == 0) plan[0] = n;
}

// out = A W^T per tile: A rows a of the grouped assignments (activation row a_rows[a] of `a`
// when a_rows is given, else row a), W [E, N, K] in MXFP4. kSwiglu: out is act bf16 [*, N/2]
// (clamped SwiGLU of the interleaved pairs plus bias); else out is f32 [*, N] plus bias.
template <bool kSwiglu, int kRows, int kCols>
__global__ void __launch_bounds__(gemm_threads(kRows), kRows == 128 && kCols == 128 ? 2 : 1)
    moe_gemm_mf4_kernel(const __nv_bfloat16* __restrict__ a, const int* __restrict__ a_rows,
                        const uint8_t* __restrict__ blocks, const uint8_t* __restrict__ scales,
                        const float* __restrict__ bias, const int* __restrict__ offsets,
                        const int* __restrict__ plan, int N, int K, float limit,
                        void* __restrict__ out) {
  using bf16 = __nv_bfloat16;
  static_assert((kRows == 128 && (kCols == 128 || kCols == 256)) || (kRows == 256 && kCols == 128),
                "tiles of 128 x 128, 128 x 256 or 256 x 128");
  constexpr int kThreads = gemm_threads(kRows);
  constexpr int kWarpCols = kCols / 4;  // (kRows / 64) x 4 warps: 64 rows x kWarpCols columns each
  constexpr int kNt = kWarpCols / 8;    // 8-column MMA tiles per warp
  // A step's weights are kCols rows x 2 MXFP4 blocks = 4 halves (16 values, 8 bytes) a row; a
  // thread expands kWHalves consecutive halves of one row: 2 (one block), 4 (two) or 1.
  constexpr int kWHalves = 4 * kCols / kThreads;
  constexpr int kWBlocks = kWHalves >= 2 ? kWHalves / 2 : 1;  // blocks (scales) it touches
  constexpr int kWWords = 2 * kWHalves / kWBlocks;            // 32-bit words of each
  if (int(blockIdx.x) >= plan[0]) return;
  extern __shared__ __align__(16) unsigned char gemm_smem[];
  bf16* as = reinterpret_cast<bf16*>(gemm_smem);                              // [2][BM][stride]
  bf16* ws = as + 2 * kRows * kGemmStride;                                    // [2][BN][stride]
  uint32_t* lut = reinterpret_cast<uint32_t*>(ws + 2 * kCols * kGemmStride);  // [256]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int e = plan[1 + 2 * blockIdx.x], row0 = plan[2 + 2 * blockIdx.x];
  const int rows = min(kRows, offsets[e + 1] - row0);
  const int n0 = blockIdx.y * kCols, KB = K / 32, k_steps = (KB + 1) / 2;

  // Byte -> (low nibble, high nibble) as a bf16 pair (exact: e2m1 values have 2 significant bits).
  if (tid < 256) {
    const __nv_bfloat162 p = __floats2bfloat162_rn(kGemmE2M1[tid & 15], kGemmE2M1[tid >> 4]);
    lut[tid] = *reinterpret_cast<const uint32_t*>(&p);
  }

  // Activation copy: kRows rows x 8 chunks of 16 bytes per step, 4 chunks per thread, rows fixed
  // over k. Rows past the tile are zero-filled without a read (finite; never stored).
  const bf16* a_src[4];
  const int a_chunk = tid & 7;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = (tid >> 3) + kThreads / 8 * i, ga = row0 + min(r, rows - 1);
    a_src[i] = a + int64_t(a_rows ? a_rows[ga] : ga) * K + a_chunk * 8;
  }
  auto copy_a = [&](int step, int buf) {
    const int k = step * kGemmK + a_chunk * 8;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = (tid >> 3) + kThreads / 8 * i;
      cp_async16(as + (buf * kRows + r) * kGemmStride + a_chunk * 8, a_src[i] + step * kGemmK,
                 k < K && r < rows ? 16 : 0);
    }
    cp_async_commit();
  };
  // Weights: thread = (weight row, kWHalves of the step's four halves from w_h0 on). Rows past N
  // repeat row N-1.
  const int w_row = tid * kWHalves / 4, w_h0 = tid * kWHalves % 4;
  const int64_t w_block0 = (int64_t(e) * N + min(n0 + w_row, N - 1)) * KB + w_h0 / 2;
  uint32_t wq[kWBlocks][kWWords];
  uint32_t wsc[kWBlocks];
  auto load_w = [&](int step) {
#pragma unroll
    for (int j = 0; j < kWBlocks; ++j) {
      const int64_t blk = w_block0 + 2 * step + j;
      if (2 * step + w_h0 / 2 + j < KB) {
        if constexpr (kWWords == 4) {
          const uint4 v = *reinterpret_cast<const uint4*>(blocks + blk * 16);
          wq[j][0] = v.x, wq[j][1] = v.y, wq[j][2] = v.z, wq[j][3] = v.w;
        } else {
          const uint2 v = *reinterpret_cast<const uint2*>(blocks + blk * 16 + (w_h0 & 1) * 8);
          wq[j][0] = v.x, wq[j][1] = v.y;
        }
        wsc[j] = scales[blk];
      } else {  // the missing half of a K % 64 == 32 tail: zeros
#pragma unroll
        for (int q = 0; q < kWWords; ++q) wq[j][q] = 0;
        wsc[j] = 0;
      }
    }
  };
  auto expand_w = [&](int buf) {
#pragma unroll
    for (int j = 0; j < kWBlocks; ++j) {
      uint4* dst =
          reinterpret_cast<uint4*>(ws + (buf * kCols + w_row) * kGemmStride + w_h0 * 16 + j * 32);
      moe_expand_mf4_words<kWWords>(wq[j], wsc[j], lut, [&](int q, uint4 v) { dst[q] = v; });
    }
  };

  float acc[4][kNt][4];
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt)
      acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
  const int wm = warp >> 2, wn = warp & 3;
  const int mi = lane >> 3, ri = lane & 7;
  // 16-row groups of this warp that hold assignments: an expert's last tile is usually partial,
  // and with 128 experts (gpt-oss-120b) a prefill step has about 64 rows an expert.
  const int mt_live = min(4, max(0, (rows - wm * 64 + 15) / 16));

  copy_a(0, 0);
  load_w(0);
  __syncthreads();  // the table
  expand_w(0);
  for (int step = 0; step < k_steps; ++step) {
    const int buf = step & 1;
    cp_async_wait<0>();
    __syncthreads();  // A and W of this step are in place; everyone is done with the other stage
    const bool more = step + 1 < k_steps;
    if (more) {
      copy_a(step + 1, buf ^ 1);
      load_w(step + 1);
    }
    const bf16* at = as + (buf * kRows + wm * 64) * kGemmStride;
    const bf16* wt = ws + (buf * kCols + wn * kWarpCols) * kGemmStride;
    // Two copies of the step's products: straight-line code when all the warp's rows are live,
    // and one that stops at the first dead 16-row group (a branch per group).
    const auto products = [&](auto all_live) {
#pragma unroll
      for (int kk = 0; kk < kGemmK / 16; ++kk) {
        uint32_t bfr[kNt][2];
#pragma unroll
        for (int nt = 0; nt < kNt; nt += 2) {
          uint32_t b[4];
          ldmatrix_x4(b, wt + (8 * (nt + (mi >> 1)) + ri) * kGemmStride + 16 * kk + 8 * (mi & 1));
          bfr[nt][0] = b[0];
          bfr[nt][1] = b[1];
          bfr[nt + 1][0] = b[2];
          bfr[nt + 1][1] = b[3];
        }
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) {
          if (!decltype(all_live)::value && mt >= mt_live) break;  // warp-uniform
          uint32_t af[4];
          ldmatrix_x4(af, at + (16 * mt + (lane & 15)) * kGemmStride + 16 * kk + 8 * (lane >> 4));
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt) mma_bf16_16816(acc[mt][nt], af, bfr[nt][0], bfr[nt][1]);
        }
      }
    };
    if (mt_live == 4)
      products(std::true_type{});
    else if (mt_live > 0)
      products(std::false_type{});
    if (more) expand_w(buf ^ 1);
  }

  // Epilogue: lane holds rows l/4 (+8) and the column pair n, n + 1 of each 8-column tile.
  const int c2 = 2 * (lane & 3);
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
      const int n = n0 + wn * kWarpCols + nt * 8 + c2;
      const int r_lo = wm * 64 + mt * 16 + (lane >> 2);
      if (n >= N) continue;
      moe_gemm_store<kSwiglu>(acc[mt][nt], bias, e, n, N, r_lo, rows, row0, lane, limit, out);
    }
}

template <int kRows, int kCols>
const MoeGemmFamily kMmaFamily{moe_gemm_mf4_kernel<true, kRows, kCols>,
                               moe_gemm_mf4_kernel<false, kRows, kCols>,
                               "cudaFuncSetAttribute(moe_gemm_mf4)",
                               "moe_mlp1_swiglu_mf4_gemm",
                               "moe_mlp2_mf4_gemm",
                               "moe_mlp1_swiglu_mf4_gemm_bf16",
                               "moe_mlp2_mf4_gemm_f32",
                               gemm_smem_bytes(kRows, kCols),
                               gemm_threads(kRows),
                               kRows,
                               kCols};

// The family of a variant; the wgmma one only on a Hopper card (its kernels are sm_90a code).
const MoeGemmFamily& family_of(MoeGemmVariant v, const char* launcher) {
  switch (v) {
    case MoeGemmVariant::kMma:
      return kMmaFamily<128, 128>;
    case MoeGemmVariant::kMmaWide:
      return kMmaFamily<128, 256>;
    case MoeGemmVariant::kMmaTall:
      return kMmaFamily<256, 128>;
    case MoeGemmVariant::kWgmma:
      MIND4_CUDA_ARG(moe_gemm_wgmma_supported(), launcher,
                     "the wgmma kernel needs a Hopper (compute capability 9.x) card");
      return moe_wgmma_family();
    case MoeGemmVariant::kWgmmaRegs:
      MIND4_CUDA_ARG(moe_gemm_wgmma_supported(), launcher,
                     "the wgmma-regs kernel needs a Hopper (compute capability 9.x) card");
      return moe_wgmma_regs_family();
    case MoeGemmVariant::kSkinny:
      return moe_skinny_family();
  }
  MIND4_CUDA_ARG(false, launcher, "unknown kernel variant ", int(v));
  return kMmaFamily<128, 128>;
}

}  // namespace

int moe_tile_plan_capacity(int A, int E, int tile_rows) {
  return (A + tile_rows - 1) / tile_rows + std::min(A, E);
}

void moe_tile_plan(const int* offsets, int E, int tile_rows, int* plan, cudaStream_t stream) {
  MIND4_CUDA_ARG(offsets && plan, "moe_tile_plan", "null pointer");
  MIND4_CUDA_ARG(E > 0 && tile_rows > 0, "moe_tile_plan", "E = ", E, ", tile_rows = ", tile_rows);
  moe_tile_plan_kernel<<<1, 32, 0, stream>>>(offsets, E, tile_rows, plan);
  check_launch("moe_tile_plan_i32");
}

MoeGemmVariant moe_gemm_variant_named(const std::string& name) {
  if (name == "mma") return MoeGemmVariant::kMma;
  if (name == "mma256") return MoeGemmVariant::kMmaWide;
  if (name == "mma-tall") return MoeGemmVariant::kMmaTall;
  if (name == "wgmma") return MoeGemmVariant::kWgmma;
  if (name == "wgmma-regs") return MoeGemmVariant::kWgmmaRegs;
  if (name == "skinny") return MoeGemmVariant::kSkinny;
  MIND4_CUDA_ARG(false, "moe_gemm_variant_named", "unknown grouped GEMM kernel '", name,
                 "' (mma | mma256 | mma-tall | wgmma | wgmma-regs | skinny)");
  return MoeGemmVariant::kMma;
}

int moe_gemm_tile_rows(MoeGemmVariant v) {
  return v == MoeGemmVariant::kMmaTall ? 256 : v == MoeGemmVariant::kSkinny ? 16 : 128;
}

void moe_mlp1_swiglu_mf4_gemm(MoeGemmVariant v, ActType t, const void* x, const uint8_t* blocks,
                              const uint8_t* scales, const float* bias, MoeGroups g,
                              const int* plan, int A, int E, int H, int I, float limit,
                              void* act_out, cudaStream_t stream) {
  moe_mlp1_grouped(family_of(v, "moe_mlp1_swiglu_mf4_gemm"), t, x, blocks, scales, bias, g, plan, A,
                   E, H, I, limit, act_out, stream);
}

void moe_mlp2_mf4_gemm(MoeGemmVariant v, ActType t, const void* act, const uint8_t* blocks,
                       const uint8_t* scales, const float* bias, MoeGroups g, const int* plan,
                       int A, int E, int H, int I, float* y, cudaStream_t stream) {
  moe_mlp2_grouped(family_of(v, "moe_mlp2_mf4_gemm"), t, act, blocks, scales, bias, g, plan, A, E,
                   H, I, y, stream);
}

}  // namespace mind4::cuda
