// The grouped MXFP4 expert GEMM of moe_gemm_mf4.cu on Hopper's warpgroup MMA (wgmma, sm_90a).
// Same tiles, tile plan, expansion and epilogues; what changes is who multiplies. mma.sync issues
// one instruction per 16 x 8 x 16 product from every warp, and beside the expansion (about 40% of
// the issue slots: see docs/perf-notes.md, v7) the issue slots ran out at about 250 TFLOP/s. Here
// each warpgroup (4 warps) issues four asynchronous 64 x 128 x 16 products per k step of 64 and
// then expands the next weight tile and copies later activation rows while the tensor cores work;
// it waits for them only before the next step's barrier. Three stages of tiles and weights loaded
// a step ahead: a step of tensor work (about half a microsecond) is shorter than a global load.
// Shared tiles use the no-swizzle core-matrix layout that wgmma reads through its descriptors:
// 8 rows x 16 bytes contiguous (a core matrix), the 8 core matrices of a row group along k one
// after another (128 bytes apart: the descriptor's leading byte offset), row groups 1024 bytes
// apart (its stride byte offset).
#include <algorithm>

#include "cuda/device_util.cuh"
#include "cuda/mma.cuh"
#include "cuda/moe_gemm_launch.cuh"
#include "cuda/wgmma.cuh"

namespace mind4::cuda {
namespace {

constexpr int kWgRows = 128;  // assignments per tile: two warpgroups of 64
constexpr int kWgCols = 128;  // weight rows per tile
constexpr int kWgK = 64;      // k per step: two MXFP4 blocks
constexpr int kWgThreads = 256;
constexpr int kWgTileBytes = kWgRows * kWgK * 2;  // 16 KB; the weight tile is the same
constexpr int kWgStages = 3;                      // A and W tiles in flight
constexpr size_t kWgSmemBytes = 2 * kWgStages * kWgTileBytes + 1024;  // + alignment slack

// Device helpers only where the kernel is built for sm_90a (a portable PTX pass leaves them out).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)
__constant__ float kWgE2M1[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Byte offset of (row, 16-byte chunk c of k) in a tile of 64 k.
__device__ __forceinline__ int wg_core_offset(int row, int c) {
  return ((row >> 3) * 8 + c) * 128 + (row & 7) * 16;
}

// d += A B^T for a 64 x 128 x 16 step of one warpgroup, A and B from shared memory through
// descriptors, f32 accumulators (sm_90a).
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t desc_a,
                                                      uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MIND4_WGMMA_D64
      ", %64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : MIND4_WGMMA_D64_OPERANDS(d)
      : "l"(desc_a), "l"(desc_b), "r"(1));
}

#endif

template <bool kSwiglu>
__global__ void __launch_bounds__(kWgThreads, 2)
    moe_gemm_mf4_wgmma_kernel(const __nv_bfloat16* __restrict__ a, const int* __restrict__ a_rows,
                              const uint8_t* __restrict__ blocks,
                              const uint8_t* __restrict__ scales, const float* __restrict__ bias,
                              const int* __restrict__ offsets, const int* __restrict__ plan, int N,
                              int K, float limit, void* __restrict__ out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using bf16 = __nv_bfloat16;
  if (int(blockIdx.x) >= plan[0]) return;
  extern __shared__ unsigned char wg_smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(wg_smem_raw) + 1023) & ~uintptr_t(1023));
  unsigned char* as = smem;                             // [stages][kWgTileBytes]
  unsigned char* ws = smem + kWgStages * kWgTileBytes;  // [stages][kWgTileBytes]
  __shared__ uint32_t lut[256];                         // byte -> its two e2m1 values as bf16
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int e = plan[1 + 2 * blockIdx.x], row0 = plan[2 + 2 * blockIdx.x];
  const int rows = min(kWgRows, offsets[e + 1] - row0);
  const int n0 = blockIdx.y * kWgCols, KB = K / 32, k_steps = (KB + 1) / 2;
  {
    const __nv_bfloat162 p = __floats2bfloat162_rn(kWgE2M1[tid & 15], kWgE2M1[tid >> 4]);
    lut[tid] = *reinterpret_cast<const uint32_t*>(&p);
  }

  // Activation copy: 128 rows x 8 chunks of 16 bytes per step, 4 per thread; rows past the
  // tile repeat its last row (finite; never stored).
  const int a_chunk = tid & 7;
  const bf16* a_src[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = (tid >> 3) + 32 * i, ga = row0 + min(r, rows - 1);
    a_src[i] = a + int64_t(a_rows ? a_rows[ga] : ga) * K + a_chunk * 8;
  }
  // One commit group per call, empty past the last step (the wait counts stay uniform).
  auto copy_a = [&](int step, int buf) {
    const int k = step * kWgK + a_chunk * 8;
    if (step < k_steps) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        cp_async16(as + buf * kWgTileBytes + wg_core_offset((tid >> 3) + 32 * i, a_chunk),
                   a_src[i] + (k < K ? step * kWgK : 0), k < K ? 16 : 0);
    }
    cp_async_commit();
  };
  // Weights: thread = (weight row, which of the step's two blocks); rows past N repeat row N-1.
  const int w_row = tid >> 1, w_half = tid & 1;
  const int64_t w_block0 = (int64_t(e) * N + min(n0 + w_row, N - 1)) * KB + w_half;
  // The packed weights of a step are loaded a step before they are expanded (registers).
  uint4 wq;
  uint32_t wsc;
  auto load_w = [&](int step) {
    wq = make_uint4(0, 0, 0, 0);  // the missing half of a K % 64 == 32 tail: zeros
    wsc = 0;
    if (2 * step + w_half < KB) {
      wq = *reinterpret_cast<const uint4*>(blocks + (w_block0 + 2 * step) * 16);
      wsc = scales[w_block0 + 2 * step];
    }
  };
  auto expand_w = [&](int buf) {
    moe_expand_mf4_block(wq, wsc, lut, [&](int q, uint4 v) {
      *reinterpret_cast<uint4*>(ws + buf * kWgTileBytes + wg_core_offset(w_row, w_half * 4 + q)) =
          v;
    });
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  // Warpgroup: tile rows 64 wg .. 64 wg + 63. Both warpgroups multiply every step, also the one
  // past an expert's last row (its rows repeat the last row and are never stored): a branch
  // around the wgmma sequence, even a warpgroup-uniform one, made ptxas serialize every wgmma
  // (C7518, "compiler-inserted WG.DP in divergent path").
  const int wg = warp >> 2;
  const uint32_t as_s = smem_addr(as) + wg * 8 * 1024, ws_s = smem_addr(ws);

  // Three stages: at step s the tensor cores read stage s % 3, the activation rows of step s + 2
  // are on their way into stage (s + 2) % 3 (cp.async), and the weights of step s + 1 are expanded
  // into stage (s + 1) % 3 while those of step s + 2 load into registers.
  copy_a(0, 0);
  copy_a(1, 1);
  load_w(0);
  __syncthreads();  // the table
  expand_w(0);
  load_w(1);
  for (int step = 0; step < k_steps; ++step) {
    const int buf = step % kWgStages;
    cp_async_wait<1>();  // all but the newest group: this step's activation rows
    fence_proxy_async_shared();
    __syncthreads();  // this step's tiles are in place; every thread is done with step - 1
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kWgK / 16; ++kk)
      wgmma_m64n128k16_bf16(acc, wgmma_desc_interleaved(as_s + buf * kWgTileBytes + kk * 256),
                            wgmma_desc_interleaved(ws_s + buf * kWgTileBytes + kk * 256));
    wgmma_commit();
    // While the tensor cores work. Stage (step + 2) % 3 was last read by step - 1's products
    // and stage (step + 1) % 3 by step - 2's, both waited for before this step's barrier.
    copy_a(step + 2, (step + 2) % kWgStages);
    if (step + 1 < k_steps) {
      expand_w((step + 1) % kWgStages);
      load_w(step + 2);
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(acc[i])::"memory");
  }

  // Epilogue: lane holds rows l/4 (+8) of its warp's 16 and the column pair n, n + 1 of each of
  // the 16 8-column groups (acc[4j .. 4j + 3]).
  const int c2 = 2 * (lane & 3);
  const int r_lo = wg * 64 + (warp & 3) * 16 + (lane >> 2);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int n = n0 + 8 * j + c2;
    if (n >= N) continue;
    // (N % 64 == 0 here, so no lane left the loop above before the pairing shuffle.)
    moe_gemm_store<kSwiglu>(acc + 4 * j, bias, e, n, N, r_lo, rows, row0, lane, limit, out);
  }
#else
  __trap();  // built without sm_90a: the launcher refuses such devices
#endif
}

}  // namespace

const MoeGemmFamily& moe_wgmma_family() {
  static const MoeGemmFamily family{moe_gemm_mf4_wgmma_kernel<true>,
                                    moe_gemm_mf4_wgmma_kernel<false>,
                                    "cudaFuncSetAttribute(moe_gemm_mf4_wgmma)",
                                    "moe_mlp1_swiglu_mf4_wgmma",
                                    "moe_mlp2_mf4_wgmma",
                                    "moe_mlp1_swiglu_mf4_wgmma_bf16",
                                    "moe_mlp2_mf4_wgmma_f32",
                                    kWgSmemBytes,
                                    kWgThreads,
                                    kWgRows,
                                    kWgCols};
  return family;
}

bool moe_gemm_wgmma_supported() {
  static const bool hopper = [] {
    int dev = 0;
    cudaDeviceProp p{};
    return cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&p, dev) == cudaSuccess &&
           p.major == 9;
  }();
  return hopper;
}

}  // namespace mind4::cuda
