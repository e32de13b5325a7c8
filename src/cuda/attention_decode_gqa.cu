// Decode attention that reads each KV head's keys and values once for all G = NH / NKV query
// heads of its group (the kernel in attention.cu gives every query head its own pass, so gpt-oss
// reads each cache row 8 times). One block per (row, KV head, key split); each warp of the block
// takes every warps-th tile of 32 keys of the split, copies the tile's K and V rows into its own
// shared memory with 16-byte cp.async (double-buffered: the next tile is in flight while this one
// is computed), and then:
//   scores: lane j owns key j of the tile and computes its dot product with all G query heads
//           (q of the group in shared memory, read as broadcasts), so a K element is converted
//           once and used G times;
//   softmax: per head a warp maximum; each lane keeps its own running sum (one warp sum at the
//           end), in base 2 (q is prescaled by log2(e));
//   values: lane l owns dims 2l, 2l+1 (+64) of every head and accumulates the tile's 32 keys,
//           reading the probabilities as broadcasts.
// At the end the block's warps are merged in shared memory; with one split the sink joins and the
// output is written, otherwise the (max, sum, acc) of each head goes to the partial buffer and a
// second kernel combines the splits. CUDA cores, not tensor cores: each K or V element read feeds
// G = 8 multiply-adds (gpt-oss), 4 per byte in bf16; at 3.35 TB/s that is about 13 T FMA/s, under
// half of what an H100's FP32 lanes issue (about 30 T/s), so the kernel should stay memory-bound;
// and the f32 mode must stay exact, which tf32 tensor cores would not be. Query heads per KV head
// are rounded up to 1 or 8 at compile time (GM); heads past G compute on zeros, unwritten.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cuda/device_util.cuh"
#include "cuda/flash_tile.cuh"
#include "cuda/mma.cuh"
#include "cuda/pdl.cuh"

namespace mind4::cuda {
namespace {

constexpr int kGqaTileKeys = 32;  // keys per warp tile: one per lane
constexpr int kGqaMaxWarps = 4;
constexpr int kGqaStages = 2;
constexpr int kGqaOneSplitKeys = 256;
constexpr float kLog2e = 1.4426950408889634f;
// Shared memory a block may use; smaller than any sm_80+ opt-in limit, so that f32 at D = 128
// takes 2 warps rather than failing.
constexpr size_t kGqaSmemBudget = 160 * 1024;

__device__ __forceinline__ float gqa_exp2(float x) {  // 2^x; 2^-inf = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Eight or four floats from one 16-byte unit of the tile.
__device__ __forceinline__ void unit_to_f32(const float* p, float (&f)[8]) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
}
__device__ __forceinline__ void unit_to_f32(const __nv_bfloat16* p, float (&f)[8]) {
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// Row j of a tile holds U 16-byte units; unit c is stored at c ^ swz(j), so that the 8 lanes of a
// quarter warp reading the same unit of 8 consecutive rows (the scores) hit 8 different bank
// groups. U is a power of two; max(1, 8 / U) consecutive rows share one 128-byte bank line, so
// swz(j) = (j >> log2(8 / U)) & (U - 1) below 8 units, j & 7 from 8 units on.
struct GqaSwizzle {
  int shift, mask;
  __device__ int operator()(int j) const { return (j >> shift) & mask; }
};
__device__ __forceinline__ GqaSwizzle gqa_swizzle_for(int U) {
  return U >= 8 ? GqaSwizzle{0, 7} : GqaSwizzle{__popc(8 / U - 1), U - 1};
}

// GM: query heads per KV head rounded up (1 or 8; heads >= G are zero and not written).
// DR: rounds of 64 dims per lane in the value product (1 for D <= 64, 2 for D <= 128).
template <typename T, int GM, int DR>
__global__ void __launch_bounds__(kGqaMaxWarps * 32)
    attention_decode_gqa_kernel(const T* __restrict__ qkv, int NH, int NKV, int D,
                                const T* __restrict__ kc, const T* __restrict__ vc, int positions,
                                const int* __restrict__ pos, const int* __restrict__ slot,
                                const float* __restrict__ sinks, int window, float scale,
                                int splits, float* __restrict__ partial, T* __restrict__ out) {
  constexpr int EPU = 16 / int(sizeof(T));  // elements per 16-byte unit
  extern __shared__ __align__(16) unsigned char gqa_smem[];
  pdl_wait();
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r = blockIdx.x / NKV, kvh = blockIdx.x % NKV, G = NH / NKV;
  const int U = D / EPU, log2_u = __popc(U - 1);  // 16-byte units per row (a power of two)
  const GqaSwizzle swizzle = gqa_swizzle_for(U);
  const int tile_elems = kGqaTileKeys * D;               // one K (or V) tile
  float* q_s = reinterpret_cast<float*>(gqa_smem);       // [GM][D], prescaled
  float* p_s = q_s + GM * D + warp * GM * kGqaTileKeys;  // [GM][32] of this warp
  T* tiles = reinterpret_cast<T*>(q_s + GM * D + warps * GM * kGqaTileKeys) +
             int64_t(warp) * kGqaStages * 2 * tile_elems;  // [stage][K, V][32][D] of this warp

  const int QKV = (NH + 2 * NKV) * D;
  const T* qrow = qkv + int64_t(r) * QKV + int64_t(kvh) * G * D;
  for (int i = threadIdx.x; i < GM * D; i += blockDim.x) {
    const int h = i / D;
    q_s[i] = h < G ? to_f32(qrow[i]) * (scale * kLog2e) : 0.0f;
  }

  const int p = pos[r];
  const int first = window > 0 ? max(0, p - window + 1) : 0;
  // Chunks of at least one tile per warp: `splits` is sized for the longest context the cache
  // holds (a graph replays it at every position), and a short row then leaves the last splits
  // empty (they exit at once) instead of spreading a few keys over many blocks.
  const int n = p - first + 1, chunk = max((n + splits - 1) / splits, kGqaTileKeys * warps);
  const int begin = first + blockIdx.y * chunk, end = min(p + 1, begin + chunk);
  const int64_t width = int64_t(NKV) * D;
  const T* kbase = kc + int64_t(slot[r]) * positions * width + int64_t(kvh) * D;
  const T* vbase = vc + int64_t(slot[r]) * positions * width + int64_t(kvh) * D;
  const int tiles_total = end > begin ? (end - begin + kGqaTileKeys - 1) / kGqaTileKeys : 0;

  // Tile t of the split (keys begin + 32 t ...) into stage s; rows past `end` are zero-filled, so
  // that a probability of 0 never meets stale (possibly non-finite) shared memory.
  auto load_tile = [&](int t, int s) {
    const int k0 = begin + t * kGqaTileKeys;
    T* kt = tiles + s * 2 * tile_elems;
    T* vt = kt + tile_elems;
    for (int u = lane; u < kGqaTileKeys * U; u += 32) {
      const int j = u >> log2_u, c = u & (U - 1), key = k0 + j;
      const int bytes = key < end ? 16 : 0;
      const int64_t src = int64_t(bytes ? key : k0) * width + c * EPU;
      const int dst = j * D + (c ^ swizzle(j)) * EPU;
      cp_async16(kt + dst, kbase + src, bytes);
      cp_async16(vt + dst, vbase + src, bytes);
    }
  };

  float m[GM], l[GM], acc[GM][2 * DR];
#pragma unroll
  for (int h = 0; h < GM; ++h) {
    m[h] = -INFINITY, l[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < 2 * DR; ++i) acc[h][i] = 0.0f;
  }
  __syncthreads();  // q_s complete

  int stage = 0;
  if (warp < tiles_total) load_tile(warp, 0);
  cp_async_commit();
  for (int t = warp; t < tiles_total; t += warps, stage ^= 1) {
    if (t + warps < tiles_total) load_tile(t + warps, stage ^ 1);
    cp_async_commit();  // possibly empty: the wait below always leaves one group in flight
    cp_async_wait<1>();
    __syncwarp();
    const T* kt = tiles + stage * 2 * tile_elems;
    const T* vt = kt + tile_elems;

    // Scores of key `lane` against the GM heads.
    float s[GM];
#pragma unroll
    for (int h = 0; h < GM; ++h) s[h] = 0.0f;
    const int sw = swizzle(lane);
    for (int c = 0; c < U; ++c) {
      float kf[8];
      unit_to_f32(kt + lane * D + (c ^ sw) * EPU, kf);
#pragma unroll
      for (int h = 0; h < GM; ++h) {
        const float* qh = q_s + h * D + c * EPU;
#pragma unroll
        for (int e = 0; e < EPU; e += 4) {
          const float4 q4 = *reinterpret_cast<const float4*>(qh + e);
          s[h] += q4.x * kf[e] + q4.y * kf[e + 1] + q4.z * kf[e + 2] + q4.w * kf[e + 3];
        }
      }
    }

    // Online softmax (base 2). The tile has at least one key below `end`, so m_new is finite.
    const bool valid = begin + t * kGqaTileKeys + lane < end;
#pragma unroll
    for (int h = 0; h < GM; ++h) {
      const float sv = valid ? s[h] : -INFINITY;
      const float m_new = fmaxf(m[h], warp_max(sv));
      const float corr = gqa_exp2(m[h] - m_new);  // m = -inf on the first tile: 0
      const float pr = gqa_exp2(sv - m_new);
      l[h] = l[h] * corr + pr;
      m[h] = m_new;
      p_s[h * kGqaTileKeys + lane] = pr;
#pragma unroll
      for (int i = 0; i < 2 * DR; ++i) acc[h][i] *= corr;
    }
    __syncwarp();

    // Values: lane owns dims 2 lane + 64 i (i < DR) of every head; four keys at a time, so that
    // each head's four probabilities come in one broadcast load.
#pragma unroll 2
    for (int j0 = 0; j0 < kGqaTileKeys; j0 += 4) {
      float2 v[4][DR];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int j = j0 + jj, swj = swizzle(j);
#pragma unroll
        for (int i = 0; i < DR; ++i) {
          const int d = 2 * lane + 64 * i;
          v[jj][i] = d < D ? load2(vt + j * D + ((d / EPU) ^ swj) * EPU + d % EPU)
                           : make_float2(0.0f, 0.0f);
        }
      }
#pragma unroll
      for (int h = 0; h < GM; ++h) {
        const float4 p4 = *reinterpret_cast<const float4*>(p_s + h * kGqaTileKeys + j0);
        const float pj[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
        for (int jj = 0; jj < 4; ++jj)
#pragma unroll
          for (int i = 0; i < DR; ++i) {
            acc[h][2 * i] += pj[jj] * v[jj][i].x;
            acc[h][2 * i + 1] += pj[jj] * v[jj][i].y;
          }
      }
    }
    __syncwarp();  // the next iteration's copies overwrite this stage and p_s
  }
  cp_async_wait<0>();

  // Merge the warps: each writes (m, l, acc) of its heads over its own tile memory, which no copy
  // targets any more.
  float* comb = reinterpret_cast<float*>(tiles);  // [GM][D + 2] of this warp
  __syncwarp();
#pragma unroll
  for (int h = 0; h < GM; ++h) {
    const float lsum = warp_sum(l[h]);
    if (lane == 0) comb[h * (D + 2)] = m[h], comb[h * (D + 2) + 1] = lsum;
#pragma unroll
    for (int i = 0; i < DR; ++i) {
      const int d = 2 * lane + 64 * i;
      if (d < D)
        comb[h * (D + 2) + 2 + d] = acc[h][2 * i], comb[h * (D + 2) + 3 + d] = acc[h][2 * i + 1];
    }
  }
  __syncthreads();
  const int64_t warp_stride = int64_t(kGqaStages) * 2 * tile_elems * int(sizeof(T)) / 4;  // floats
  const float* comb0 = reinterpret_cast<const float*>(
      reinterpret_cast<T*>(q_s + GM * D + warps * GM * kGqaTileKeys));
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int h = i / D, d = i % D, head = kvh * G + h;
    float M = -INFINITY;
    for (int w = 0; w < warps; ++w) M = fmaxf(M, comb0[w * warp_stride + h * (D + 2)]);
    float L = 0.0f, a = 0.0f;
    for (int w = 0; w < warps; ++w) {
      const float* cw = comb0 + w * warp_stride + h * (D + 2);
      const float f = cw[0] == -INFINITY ? 0.0f : gqa_exp2(cw[0] - M);
      L += cw[1] * f;
      a += cw[2 + d] * f;
    }
    if (splits == 1) {  // every row has at least one key, so M is finite
      const float sink = sinks[head] * kLog2e, Ms = fmaxf(M, sink);
      const float e = gqa_exp2(M - Ms);
      out[int64_t(r) * NH * D + int64_t(head) * D + d] =
          from_f32<T>(a * e / (L * e + gqa_exp2(sink - Ms)));
    } else {  // M = -inf when the split holds no key of this row: combined with weight 0
      float* part = partial + ((int64_t(r) * NH + head) * splits + blockIdx.y) * (D + 2);
      if (d == 0) part[0] = M, part[1] = L;
      part[2 + d] = a;
    }
  }
}

// bf16 mode: the same attention on tensor cores, one warp per block (more for short rows, see
// mma_short_warps). The G query heads of the KV head are the rows of one m16n8k16 tile (rows past G
// are zero and never stored), so a 64-key tile costs 32 MMAs for the scores and 32 for the values
// (flash_tile.cuh, as in prefill), where the CUDA-core kernel above spends about 3,800 dependent
// instructions a warp on 128 keys (ncu, session 7: that chain, not memory, is its 10 us at short
// contexts).
constexpr int kMmaTileKeys = 64;

template <int DP>
constexpr int mma_stride() {
  return DP + 8;  // 16 bytes of padding: the eight rows of an ldmatrix in distinct banks
}
// Two stages of K and V tiles for each of the block's W warps.
template <int DP, int W>
constexpr size_t mma_smem_bytes() {
  return size_t(4) * W * kMmaTileKeys * mma_stride<DP>() * sizeof(__nv_bfloat16);
}
// Warps a block when a row's keys fit one split (at most a few tiles) and the blocks fit one to a
// multiprocessor: each walks every W-th 64-key tile with its own stages and the warps' (max, sum,
// acc) are merged at the end, so that the tiles are worked on side by side (+0.7-0.9% at batch 1
// on an H100, perf-notes S11.8). Otherwise a block keeps one warp: a block of four takes 147 KB of
// shared memory at D = 64, one a multiprocessor, and at 64 rows (512 blocks) that cost 2.3%.
// Four warps at DP = 64 (gpt-oss), the shape measured and run on a GPU; other head sizes keep one
// warp for now (at D = 128 four warps would also pass kGqaSmemBudget).
template <int DP>
constexpr int mma_short_warps() {
  return DP == 64 ? 4 : 1;
}

// DP: D rounded up to 32, 64 or 128 (dimensions >= D are zero in Q and K); W warps a block.
template <int DP, int W>
__global__ void __launch_bounds__(32 * W)
    attention_decode_mma_kernel(const __nv_bfloat16* __restrict__ qkv, int NH, int NKV, int D,
                                const __nv_bfloat16* __restrict__ kc,
                                const __nv_bfloat16* __restrict__ vc, int positions,
                                const int* __restrict__ pos, const int* __restrict__ slot,
                                const float* __restrict__ sinks, int window, float scale_log2,
                                int splits, float* __restrict__ partial,
                                __nv_bfloat16* __restrict__ out) {
  using bf16 = __nv_bfloat16;
  constexpr int S = mma_stride<DP>(), KT = kMmaTileKeys;
  extern __shared__ __align__(16) unsigned char mma_smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  auto warp_tiles = [&](int w) {
    return reinterpret_cast<bf16*>(mma_smem) + int64_t(w) * 4 * KT * S;
  };
  bf16* ks = warp_tiles(warp);  // [2][KT][S]
  bf16* vs = ks + 2 * KT * S;   // [2][KT][S]
  const int r = blockIdx.x / NKV, kvh = blockIdx.x % NKV, G = NH / NKV;
  const int c2 = 2 * (lane & 3), fr0 = lane >> 2, fr1 = fr0 + 8;  // this lane's two heads

  // The split's keys, as in the CUDA-core kernel (chunks of at least 128 keys). The position and
  // slot are the step's inputs, written before its first kernel, so they are read before the PDL
  // wait.
  const int p = pos[r];
  const int first = window > 0 ? max(0, p - window + 1) : 0;
  const int n = p - first + 1, chunk = max((n + splits - 1) / splits, 2 * KT);
  const int begin = first + blockIdx.y * chunk, end = min(p + 1, begin + chunk);
  const int64_t width = int64_t(NKV) * D;
  const bf16* k0 = kc + int64_t(slot[r]) * positions * width + int64_t(kvh) * D;
  const bf16* v0 = vc + int64_t(slot[r]) * positions * width + int64_t(kvh) * D;
  const int n_tiles = end > begin ? (end - begin + KT - 1) / KT : 0;
  // This warp's tiles t = warp + W i, double-buffered in its own stages (i & 1). Every head sees
  // the split's keys [begin, end): only the last tile needs the mask.
  const int my_tiles = n_tiles > warp ? (n_tiles - warp + W - 1) / W : 0;
  auto tile_of = [&](int i) { return warp + W * i; };
  // The keys before p were written by earlier steps: the warp's first tile is copied before the
  // wait but for key p (zeros for now), which the QKV product before this kernel writes; it is
  // put in after the wait. The cache's round trip then overlaps the QKV product's end.
  const int t0 = begin + tile_of(0) * KT;
  if (my_tiles > 0)
    flash_load_kv_tile<DP, KT, S>(ks, vs, k0, v0, width, D, t0, min(end, p), 0, lane, 32);
  // The sinks of this lane's two heads (weights) for the store at the end, where their read was
  // a round trip to memory after the last tile.
  const float sink0 = splits == 1 && fr0 < G ? sinks[kvh * G + fr0] * kLog2e : 0.0f;
  const float sink1 = splits == 1 && fr1 < G ? sinks[kvh * G + fr1] * kLog2e : 0.0f;
  pdl_wait();
  if (my_tiles > 0 && p >= t0 && p < min(end, t0 + KT)) {
    constexpr int kChunks = DP / 8;  // 16-byte chunks of a row: K in lanes below kChunks, then V
    cp_async_wait<0>();              // the early copy's zeros for row p have landed
    const int ch = lane % kChunks;
    if (lane < 2 * kChunks && ch * 8 < D) {
      const bool is_v = lane >= kChunks;
      const uint4 kv =
          __ldcg(reinterpret_cast<const uint4*>((is_v ? v0 : k0) + int64_t(p) * width + ch * 8));
      *reinterpret_cast<uint4*>((is_v ? vs : ks) + (p - t0) * S + ch * 8) = kv;
    }
    __syncwarp();
  }

  uint32_t qf[DP / 16][4];
  const bf16* qrow = qkv + int64_t(r) * (NH + 2 * NKV) * D + int64_t(kvh) * G * D;
  flash_q_fragments<DP>(qf, fr0, fr1, c2, [&](int f, int d) -> uint32_t {
    return f < G && d < D ? *reinterpret_cast<const uint32_t*>(qrow + int64_t(f) * D + d) : 0u;
  });

  FlashRowState<DP> st;
  flash_walk_tiles<true>(
      my_tiles,
      [&](int i) {  // keys past the split are zero-filled; tile 0 was copied before the wait
        if (i == 0)
          cp_async_commit();  // an empty group: the walk counts one a tile
        else
          flash_load_kv_tile<DP, KT, S>(ks, vs, k0, v0, width, D, begin + tile_of(i) * KT, end,
                                        i & 1, lane, 32);
      },
      [&](int i) {
        flash_tile_forward<DP, KT>(ks + (i & 1) * KT * S, vs + (i & 1) * KT * S, S, qf,
                                   begin + tile_of(i) * KT, begin, end - 1, begin, end - 1, begin,
                                   end - 1, scale_log2, st);
      },
      st);
  if constexpr (W > 1) {
    // Warps past the first leave their state over their own tiles (no copy targets them any
    // more) and warp 0 merges it, each row rescaled to the larger maximum. A warp without tiles
    // has m = -inf, l = 0 and acc = 0, weight 0; warp 0 always has keys.
    constexpr int kState = 4 + DP / 2;  // floats a lane: m0, m1, l0, l1, acc
    if (warp > 0) {
      float* mine = reinterpret_cast<float*>(ks) + lane * kState;
      mine[0] = st.m0, mine[1] = st.m1, mine[2] = st.l0, mine[3] = st.l1;
#pragma unroll
      for (int dt = 0; dt < DP / 8; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) mine[4 + 4 * dt + e] = st.acc[dt][e];
    }
    __syncthreads();
    if (warp > 0) return;
    for (int w = 1; w < W; ++w) {
      const float* o = reinterpret_cast<const float*>(warp_tiles(w)) + lane * kState;
      const float M0 = fmaxf(st.m0, o[0]), M1 = fmaxf(st.m1, o[1]);
      const float a0 = flash_exp2(st.m0 - M0), b0 = flash_exp2(o[0] - M0);
      const float a1 = flash_exp2(st.m1 - M1), b1 = flash_exp2(o[1] - M1);
      st.m0 = M0, st.m1 = M1;
      st.l0 = st.l0 * a0 + o[2] * b0;
      st.l1 = st.l1 * a1 + o[3] * b1;
#pragma unroll
      for (int dt = 0; dt < DP / 8; ++dt) {
        st.acc[dt][0] = st.acc[dt][0] * a0 + o[4 + 4 * dt] * b0;
        st.acc[dt][1] = st.acc[dt][1] * a0 + o[5 + 4 * dt] * b0;
        st.acc[dt][2] = st.acc[dt][2] * a1 + o[6 + 4 * dt] * b1;
        st.acc[dt][3] = st.acc[dt][3] * a1 + o[7 + 4 * dt] * b1;
      }
    }
  }

  auto store_row = [&](int f, float m, float l, int e0, float sink) {
    if (f >= G) return;
    const int head = kvh * G + f;
    if (splits == 1) {  // every row has at least one key, so m is finite
      flash_store_row<DP>(out + int64_t(r) * NH * D + int64_t(head) * D, D, st.acc, e0, m, l, sink,
                          c2);
    } else {  // m = -inf, l = 0 when the split holds no key of this row: combined with weight 0
      float* part = partial + ((int64_t(r) * NH + head) * splits + blockIdx.y) * (D + 2);
      if (c2 == 0) part[0] = m, part[1] = l;
#pragma unroll
      for (int dt = 0; dt < DP / 8; ++dt) {
        const int d = 8 * dt + c2;
        if (d < D) part[2 + d] = st.acc[dt][e0], part[3 + d] = st.acc[dt][e0 + 1];
      }
    }
  };
  store_row(fr0, st.m0, st.l0, 0, sink0);
  store_row(fr1, st.m1, st.l1, 2, sink1);
}

// The splits of one (row, head): max and sums in base 2, the sink joins here.
template <typename T>
__global__ void attention_decode_gqa_combine_kernel(const float* __restrict__ partial,
                                                    int64_t total, int NH, int D, int splits,
                                                    const float* __restrict__ sinks,
                                                    T* __restrict__ out) {
  pdl_wait();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t i = int64_t(blockIdx.x) * (blockDim.x >> 5) + warp;  // r * NH + h
  if (i >= total) return;
  const float* part = partial + i * splits * (D + 2);
  const float sink = sinks[int(i % NH)] * kLog2e;
  float M = sink;
  for (int c = lane; c < splits; c += 32) M = fmaxf(M, part[c * (D + 2)]);
  M = warp_max(M);
  float L = 0.0f;
  for (int c = lane; c < splits; c += 32)
    L += part[c * (D + 2) + 1] * gqa_exp2(part[c * (D + 2)] - M);
  const float inv = 1.0f / (warp_sum(L) + gqa_exp2(sink - M));
  for (int d = lane; d < D; d += 32) {
    float a = 0.0f;
    for (int c = 0; c < splits; ++c)
      a += part[c * (D + 2) + 2 + d] * gqa_exp2(part[c * (D + 2)] - M);
    out[i * D + d] = from_f32<T>(a * inv);
  }
}

size_t gqa_smem_bytes(int GM, int D, int es, int warps) {
  return size_t(GM) * D * 4 + size_t(warps) * (size_t(GM) * kGqaTileKeys * 4 +
                                               size_t(kGqaStages) * 2 * kGqaTileKeys * D * es);
}

int gqa_warps(int GM, int D, int es) {
  int w = kGqaMaxWarps;
  while (w > 1 && gqa_smem_bytes(GM, D, es, w) > kGqaSmemBudget) w /= 2;
  return w;
}

// The CUDA-core kernel's launch (f32 mode, and bf16 with DecodeAttnKernel::kCudaCores).
void attention_decode_cuda_cores(ActType t, const void* qkv, int NH, int NKV, int D, KvLayer kv,
                                 const int* pos, const int* slot, const float* sinks, int B,
                                 int window, float scale, int splits, float* partial, void* out,
                                 cudaStream_t stream, dim3 grid) {
  const int G = NH / NKV, GM = G == 1 ? 1 : 8, es = act_size(t);
  const int warps = gqa_warps(GM, D, es);
  const size_t smem = gqa_smem_bytes(GM, D, es, warps);
  auto launch = [&](auto kernel, const char* name, auto tag) {
    using T = decltype(tag);
    if (smem > 48 * 1024)
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
            "cudaFuncSetAttribute(attention_decode_gqa)");
    launch_pdl(name, kernel, grid, dim3(warps * 32), smem, stream, static_cast<const T*>(qkv), NH,
               NKV, D, static_cast<const T*>(kv.k), static_cast<const T*>(kv.v), kv.positions, pos,
               slot, sinks, window, scale, splits, partial, static_cast<T*>(out));
  };
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    const char* name =
        t == ActType::kF32 ? "attention_decode_gqa_f32" : "attention_decode_gqa_bf16";
    if (GM == 1 && D <= 64)
      launch(attention_decode_gqa_kernel<T, 1, 1>, name, tag);
    else if (GM == 1)
      launch(attention_decode_gqa_kernel<T, 1, 2>, name, tag);
    else if (D <= 64)
      launch(attention_decode_gqa_kernel<T, 8, 1>, name, tag);
    else
      launch(attention_decode_gqa_kernel<T, 8, 2>, name, tag);
  });
}

}  // namespace

bool attention_decode_gqa_supported(int NH, int NKV, int D) {
  return NH > 0 && NKV > 0 && NH % NKV == 0 && NH / NKV <= 8 && D >= 16 && D <= 128 &&
         (D & (D - 1)) == 0;
}

int attention_decode_gqa_splits(int B, int NKV, int max_keys, int max_splits, int sms) {
  // Rows of up to kGqaOneSplitKeys keys take one split: more cost the combine kernel (about 3 us
  // at batch 1 on an H100), more than the tiles one block then walks on its own.
  if (max_keys <= kGqaOneSplitKeys) return 1;
  // About 8 blocks per multiprocessor (2.7 waves at 3 resident blocks of the bf16 D = 64 kernel;
  // 1056 on an H100 SXM), but no split shorter than one 32-key tile per warp of a block.
  const int blocks = std::max(1, B * NKV);
  const int want = (std::max(1, sms) * 8 + blocks - 1) / blocks;
  const int most = (max_keys + kGqaTileKeys * kGqaMaxWarps - 1) / (kGqaTileKeys * kGqaMaxWarps);
  return std::clamp(std::min(want, most), 1, std::max(1, max_splits));
}

void attention_decode_gqa(ActType t, const void* qkv, int NH, int NKV, int D, KvLayer kv,
                          const int* pos, const int* slot, const float* sinks, int B, int window,
                          float scale, int splits, float* partial, void* out, cudaStream_t stream,
                          DecodeAttnKernel which) {
  MIND4_CUDA_ARG(qkv && kv.k && kv.v && pos && slot && sinks && out, "attention_decode_gqa",
                 "null pointer");
  MIND4_CUDA_ARG(attention_decode_gqa_supported(NH, NKV, D), "attention_decode_gqa", "NH = ", NH,
                 ", NKV = ", NKV, ", D = ", D,
                 " (NH a multiple of NKV with at most 8 query heads per KV head, D a power of two "
                 "in [16, 128])");
  MIND4_CUDA_ARG(B >= 0 && int64_t(B) * NKV < (int64_t(1) << 31) && window >= 0 &&
                     kv.positions > 0 && splits >= 1 && splits <= 65535 && (splits == 1 || partial),
                 "attention_decode_gqa", "B = ", B, ", window = ", window, ", splits = ", splits,
                 " (splits > 1 needs the partial buffer)");
  if (B == 0) return;
  const dim3 grid(unsigned(int64_t(B) * NKV), unsigned(splits));
  if (which == DecodeAttnKernel::kTensorCores && t == ActType::kBF16) {
    auto launch_mma = [&](auto kernel, size_t smem, int warps) {
      if (smem > 48 * 1024)
        check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
              "cudaFuncSetAttribute(attention_decode_mma)");
      launch_pdl("attention_decode_mma_bf16", kernel, grid, dim3(32 * warps), smem, stream,
                 static_cast<const __nv_bfloat16*>(qkv), NH, NKV, D,
                 static_cast<const __nv_bfloat16*>(kv.k), static_cast<const __nv_bfloat16*>(kv.v),
                 kv.positions, pos, slot, sinks, window, scale * kLog2e, splits, partial,
                 static_cast<__nv_bfloat16*>(out));
    };
    auto launch_dp = [&](auto dp) {
      constexpr int DP = decltype(dp)::value;
      constexpr int W = mma_short_warps<DP>();
      if (W > 1 && splits == 1 && int64_t(B) * NKV <= multiprocessor_count())
        launch_mma(attention_decode_mma_kernel<DP, W>, mma_smem_bytes<DP, W>(), W);
      else
        launch_mma(attention_decode_mma_kernel<DP, 1>, mma_smem_bytes<DP, 1>(), 1);
    };
    if (D <= 32)
      launch_dp(std::integral_constant<int, 32>{});
    else if (D <= 64)
      launch_dp(std::integral_constant<int, 64>{});
    else
      launch_dp(std::integral_constant<int, 128>{});
  } else {
    attention_decode_cuda_cores(t, qkv, NH, NKV, D, kv, pos, slot, sinks, B, window, scale, splits,
                                partial, out, stream, grid);
  }
  if (splits == 1) return;
  const int64_t heads = int64_t(B) * NH;
  constexpr int kCombineWarps = 4;
  dispatch_act(t, [&](auto tag) {
    using T = decltype(tag);
    launch_pdl(t == ActType::kF32 ? "attention_decode_gqa_combine_f32"
                                  : "attention_decode_gqa_combine_bf16",
               attention_decode_gqa_combine_kernel<T>,
               dim3(unsigned((heads + kCombineWarps - 1) / kCombineWarps)),
               dim3(kCombineWarps * 32), 0, stream, static_cast<const float*>(partial), heads, NH,
               D, splits, sinks, static_cast<T*>(out));
  });
}

}  // namespace mind4::cuda
