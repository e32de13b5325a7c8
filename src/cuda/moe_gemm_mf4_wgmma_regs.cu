// The grouped MXFP4 expert GEMM on Hopper's warpgroup MMA with the weights as the register
// operand (sm_90a). The earlier kernels expand every weight tile into shared memory and read it
// back through ldmatrix or a descriptor: shared memory then carries the expanded weights twice
// plus a byte table, and the expansion runs in phases of its own between barriers. Here the
// product is turned around: D (weight rows x assignments) = W X^T, so the weights are wgmma's A
// operand, which may come from registers. Each thread decodes exactly the e2m1 values of its own
// A fragment straight from the packed bytes (copied into shared memory by cp.async, 4 KB a step
// instead of 16), and only the activations go through shared memory, in the 128-byte swizzle
// that the tensor cores read at full rate. The copies run stages ahead. The step loop asks for the
// decode of step s + 1 to run while step s's products are in flight (two register sets of A
// fragments), but the compiler folds it to one set and ptxas serializes the products (C7513);
// the versions that avoid that measured no faster (docs/perf-notes.md, S9.3): with four
// warpgroups a multiprocessor the tensor cores are fed from the others while one decodes.
// The decode needs no table (mf4_decode4, moe_gemm_launch.cuh).
#include <algorithm>

#include "cuda/device_util.cuh"
#include "cuda/mma.cuh"
#include "cuda/moe_gemm_launch.cuh"
#include "cuda/wgmma.cuh"

namespace mind4::cuda {
namespace {

constexpr int kRaTokens = 128;  // assignments per tile: wgmma's N
constexpr int kRaCols = 128;    // weight rows per tile: two warpgroups of 64 (wgmma's M)
constexpr int kRaK = 64;        // k per stage: two MXFP4 blocks
constexpr int kRaThreads = 256;
constexpr int kRaActBytes = kRaTokens * kRaK * 2;  // 16 KB, swizzled rows of 128 bytes
constexpr int kRaWBytes = kRaCols * 32;            // packed: a row's two blocks
constexpr int kRaScaleBytes = kRaCols * 8;         // two aligned words holding a row's two scales
// Stages of tiles in shared memory: copies run kRaStages - 2 ahead of the products (five stages,
// still two blocks a multiprocessor, measured no faster).
constexpr int kRaStages = 4;
constexpr size_t kRaSmemBytes =
    size_t(kRaStages) * (kRaActBytes + kRaWBytes + kRaScaleBytes) + 1024;  // + alignment slack

#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)

// d += A B over a step of 64 along k for one warpgroup, as four products of 16: A 64 x 16 bf16
// from registers a[kk] (warp w of the group holds rows 16w .. 16w + 15 in the mma.m16n8k16 A
// layout), B 16 x 128 from a K-major shared tile through desc[kk], f32 accumulators. One asm
// statement, so that no other instruction sits between the products (ptxas would serialize them).
__device__ __forceinline__ void wgmma_m64n128k64_rs(float (&d)[64], const uint32_t (&a)[4][4],
                                                    const uint64_t (&desc)[4]) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %84, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MIND4_WGMMA_D64
      ", {%64, %65, %66, %67}, %80, p, 1, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MIND4_WGMMA_D64
      ", {%68, %69, %70, %71}, %81, p, 1, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MIND4_WGMMA_D64
      ", {%72, %73, %74, %75}, %82, p, 1, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MIND4_WGMMA_D64
      ", {%76, %77, %78, %79}, %83, p, 1, 1, 0;\n"
      "}\n"
      : MIND4_WGMMA_D64_OPERANDS(d)
      : "r"(a[0][0]), "r"(a[0][1]), "r"(a[0][2]), "r"(a[0][3]), "r"(a[1][0]), "r"(a[1][1]),
        "r"(a[1][2]), "r"(a[1][3]), "r"(a[2][0]), "r"(a[2][1]), "r"(a[2][2]), "r"(a[2][3]),
        "r"(a[3][0]), "r"(a[3][1]), "r"(a[3][2]), "r"(a[3][3]), "l"(desc[0]), "l"(desc[1]),
        "l"(desc[2]), "l"(desc[3]), "r"(1));
}

#endif

template <bool kSwiglu>
__global__ void __launch_bounds__(kRaThreads, 2)
    moe_gemm_mf4_wgmma_regs_kernel(const __nv_bfloat16* __restrict__ a,
                                   const int* __restrict__ a_rows,
                                   const uint8_t* __restrict__ blocks,
                                   const uint8_t* __restrict__ scales,
                                   const float* __restrict__ bias, const int* __restrict__ offsets,
                                   const int* __restrict__ plan, int N, int K, float limit,
                                   void* __restrict__ out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using bf16 = __nv_bfloat16;
  if (int(blockIdx.x) >= plan[0]) return;
  extern __shared__ unsigned char ra_smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(ra_smem_raw) + 1023) & ~uintptr_t(1023));
  unsigned char* xs = smem;                          // [stages][kRaActBytes], swizzled
  unsigned char* ws = xs + kRaStages * kRaActBytes;  // [stages][kRaCols][32] packed
  unsigned char* ss = ws + kRaStages * kRaWBytes;    // [stages][kRaCols] scale words
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int e = plan[1 + 2 * blockIdx.x], row0 = plan[2 + 2 * blockIdx.x];
  const int rows = min(kRaTokens, offsets[e + 1] - row0);
  const int n0 = blockIdx.y * kRaCols, KB = K / 32, steps = (KB + 1) / 2;
  const int64_t expert_blocks = int64_t(N) * KB;  // blocks (and scales) of one expert

  // Activation copy: 128 rows x 8 chunks of 16 bytes a stage, 4 a thread; rows past the tile
  // are zero-filled without a read (never stored). Addresses are made once; a stage only adds
  // its offset (the step's address arithmetic was a third of its instructions).
  const int x_chunk = tid & 7;
  const uint32_t xs_s = smem_addr(xs), ws_s = smem_addr(ws), ss_s = smem_addr(ss);
  const bf16* x_src[4];
  uint32_t x_dst[4];
  int x_bytes[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = (tid >> 3) + 32 * i, ga = row0 + min(r, rows - 1);
    x_src[i] = a + int64_t(a_rows ? a_rows[ga] : ga) * K + x_chunk * 8;
    x_dst[i] = xs_s + swizzle128_offset(r, x_chunk);
    x_bytes[i] = r < rows ? 16 : 0;
  }
  // Weight copy: thread = (row, which of the stage's two blocks); rows past N repeat row N-1.
  const int w_row = tid >> 1, w_half = tid & 1;
  const uint8_t* w_src =
      blocks + (int64_t(e) * expert_blocks + int64_t(min(n0 + w_row, N - 1)) * KB + w_half) * 16;
  const uint32_t w_dst = ws_s + w_row * 32 + w_half * 16;
  // Scale copy: the two aligned 4-byte words from the one holding a row's first scale of the stage
  // (with an odd number of blocks a row, its second scale may sit in the next word); thread
  // (word, row), cut short at the expert's end.
  const int s_word = tid >> 7, s_rowi = tid & 127;
  const uintptr_t s_row =
      reinterpret_cast<uintptr_t>(scales) +
      uintptr_t(int64_t(e) * expert_blocks + int64_t(min(n0 + s_rowi, N - 1)) * KB);
  const uintptr_t s_end = reinterpret_cast<uintptr_t>(scales) + uintptr_t((e + 1) * expert_blocks);
  const uint32_t s_dst = ss_s + s_rowi * 8 + s_word * 4;
  // One commit group per call, empty past the last stage (the wait counts stay uniform).
  auto copy_stage = [&](int step) {
    if (step < steps) {
      const uint32_t buf = step % kRaStages;
      const bool k_in = step * kRaK + x_chunk * 8 < K;
#pragma unroll
      for (int i = 0; i < 4; ++i)
        cp_async16(x_dst[i] + buf * kRaActBytes, x_src[i] + (k_in ? step * kRaK : 0),
                   k_in ? x_bytes[i] : 0);
      const bool kb_in = 2 * step + w_half < KB;
      cp_async16(w_dst + buf * kRaWBytes, w_src + (kb_in ? step * 32 : 0), kb_in ? 16 : 0);
      const uintptr_t word = ((s_row + 2 * step) & ~uintptr_t(3)) + 4 * s_word;
      const int left = word >= s_end ? 0 : int(min(uintptr_t(4), s_end - word));
      cp_async4(s_dst + buf * kRaScaleBytes, reinterpret_cast<const void*>(word), left);
    }
    cp_async_commit();
  };

  // This thread's A fragment rows (tile-local): g and g + 8 of its warp's 16 in its warpgroup.
  const int wg = warp >> 2, g = lane >> 2, t = lane & 3;
  const int rA = wg * 64 + (warp & 3) * 16 + g, rB = rA + 8;
  // Byte t of two words side by side: the k pairs (2t, 2t + 1) and (2t + 8, 2t + 9) of a step
  // of 16.
  const uint32_t pick = uint32_t(t) | (uint32_t(4 + t) << 4);
  // Where each row's scales start within their first aligned word (stage 0).
  const int phaseA = int((int64_t(e) * expert_blocks + int64_t(min(n0 + rA, N - 1)) * KB) & 3);
  const int phaseB = int((int64_t(e) * expert_blocks + int64_t(min(n0 + rB, N - 1)) * KB) & 3);
  // Decode stage `step` into the four A fragments (k steps of 16) of one register set.
  auto decode_stage = [&](int step, uint32_t(&af)[4][4]) {
    const int buf = step % kRaStages;
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // row rA, then rB
      const int r = half ? rB : rA;
      const uint4* src = reinterpret_cast<const uint4*>(ws + buf * kRaWBytes + r * 32);
      const uint2 sw2 = *reinterpret_cast<const uint2*>(ss + buf * kRaScaleBytes + r * 8);
      const uint64_t sw = uint64_t(sw2.x) | (uint64_t(sw2.y) << 32);
      const int shift = (((half ? phaseB : phaseA) + 2 * step) & 3) * 8;
#pragma unroll
      for (int b = 0; b < 2; ++b) {  // the stage's two blocks
        const uint4 q = src[b];
        const uint32_t s = 2 * step + b < KB ? uint32_t(sw >> (shift + 8 * b)) & 0xFFu : 0u;
        const uint32_t s2 = mf4_scale_pair(s);
        mf4_decode4(mf4_prmt(q.x, q.y, pick), s2, af[2 * b][half], af[2 * b][2 + half]);
        mf4_decode4(mf4_prmt(q.z, q.w, pick), s2, af[2 * b + 1][half], af[2 * b + 1][2 + half]);
      }
    }
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  uint32_t af[2][4][4];

  // At step s: wait for stage s's copies, start stage s + kRaStages - 2's (its buffer was last
  // read by step s - 2's products, finished before this barrier), decode stage s into register
  // set s % 2 (last read by step s - 2's products), issue its four products, and wait for step
  // s - 1's, so that only one step's products are in flight while the next is decoded.
  auto step_body = [&](int s, auto set) {
    constexpr int p = decltype(set)::value;
    cp_async_wait<kRaStages - 3>();
    fence_proxy_async_shared();
    __syncthreads();
    copy_stage(s + kRaStages - 2);
    decode_stage(s, af[p]);
    // Four steps of 16 along k: 32 bytes further on each, 2 in the descriptor's address field.
    const uint64_t d0 = wgmma_desc_swizzle128(xs_s + (s % kRaStages) * kRaActBytes);
    const uint64_t desc[4] = {d0, d0 + 2, d0 + 4, d0 + 6};
    wgmma_fence();
    wgmma_m64n128k64_rs(acc, af[p], desc);
    wgmma_commit();
    wgmma_wait<1>();
    // Step s - 1's fragments stay live up to here (the compiler cannot see that the products
    // read them after issue); see the note at the top on what ptxas makes of the loop.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int i = 0; i < 4; ++i) asm volatile("" : "+r"(af[1 - p][kk][i])::"memory");
  };
  for (int s = 0; s < kRaStages - 2; ++s) copy_stage(s);
  for (int s = 0; s < steps; s += 2) {
    step_body(s, std::integral_constant<int, 0>{});
    if (s + 1 < steps) step_body(s + 1, std::integral_constant<int, 1>{});
  }
  wgmma_wait<0>();

  // Epilogue: accumulator 4j + {0, 1} is weight row rA and assignments 8j + 2t + {0, 1};
  // 4j + {2, 3} the same for row rB.
  const float* eb = bias + int64_t(e) * N;
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int j = 0; j < 16; ++j)
      moe_store_row_pair<kSwiglu>(acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1], eb,
                                  n0 + (half ? rB : rA), N, 8 * j + 2 * t, rows, row0, limit, out);
#else
  __trap();  // built without sm_90a: the launcher refuses such devices
#endif
}

}  // namespace

const MoeGemmFamily& moe_wgmma_regs_family() {
  static const MoeGemmFamily family{moe_gemm_mf4_wgmma_regs_kernel<true>,
                                    moe_gemm_mf4_wgmma_regs_kernel<false>,
                                    "cudaFuncSetAttribute(moe_gemm_mf4_wgmma_regs)",
                                    "moe_mlp1_swiglu_mf4_wgmma_regs",
                                    "moe_mlp2_mf4_wgmma_regs",
                                    "moe_mlp1_swiglu_mf4_wgmma_regs_bf16",
                                    "moe_mlp2_mf4_wgmma_regs_f32",
                                    kRaSmemBytes,
                                    kRaThreads,
                                    kRaTokens,
                                    kRaCols};
  return family;
}

}  // namespace mind4::cuda
