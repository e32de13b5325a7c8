// Token sampling on the GPU: a cluster of blocks per sequence (each over a slice of the
// vocabulary, every reduction over the whole cluster through distributed shared memory) turns a
// row of logits into the next token and its logprob, so that only those (16 bytes a sequence,
// with a status) come back to the host instead of the row (800 KB at vocabulary 201088). The order
// of operations is the CPU sampler's (sampler.h): penalties, temperature, top-k, top-p, min-p, then
// the draw with the same Philox counter.
//
// The vocabulary is never sorted. The kept set is always a prefix of the strict order (processed
// logit descending, then token id ascending), so it is described by a cut: a logit (as an
// order-preserving 32-bit key) and, among tokens of exactly that logit, the highest id kept.
// top-k finds its cut by a radix select on the keys (four passes of 8 bits, counting tokens);
// top-p by the same select weighing tokens by their probability mass. min-p then drops tokens of
// too small a weight (weights fall with the key, so the set stays a prefix).
//
// Masses are summed as integers: each weight exp((w - max) / T), in [0, 1], is rounded to a
// multiple of 2^-44 (fixed point in 64 bits; 201088 tokens sum to < 2^62). Integer sums are exact
// and independent of the order of addition, so the top-p boundary and the draw are deterministic
// however the threads are scheduled. The cost: the weights differ from the CPU's floats by at most
// 2^-45 of the most likely token's weight, and a token with a weight below 2^-45 of the most
// likely one is never drawn (the CPU's floor is e^-87). The draw walks the kept tokens in token-id
// order and picks the first whose cumulative fixed-point mass exceeds u * kept mass.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include <cooperative_groups.h>

#include "cuda/device_util.cuh"
#include "cuda/pdl.cuh"
#include "sampler/philox.h"
#include "sampler/sampler_math.h"

namespace mind4::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kSampleThreads = 1024;
constexpr int kStoreThreads = 256;  // store_logit_rows
constexpr int kSampleWarps = kSampleThreads / 32;
constexpr int kSampleMaxTiles = 256;
constexpr int kSampleMaxRanks = 16;                  // blocks (a cluster) a job is spread over
constexpr int kSampleShareBytes = 32;                // the most a block contributes to one exchange
constexpr double kSampleFxScale = 17592186044416.0;  // 2^44
constexpr unsigned kFull = 0xffffffffu;

// sampler_math::exp_nonpositive with every operation rounded on its own (nvcc would otherwise
// fuse a * b + c into an FMA): the same bits as the CPU sampler's weights.
__device__ __forceinline__ float sample_exp(float x) {
  namespace sm = sampler_math;
  const bool underflow = !(x >= sm::kExpLowest);
  x = underflow ? sm::kExpLowest : x;
  const float t = __fadd_rn(__fmul_rn(x, sm::kLog2e), sm::kShifter);
  const float n = __fsub_rn(t, sm::kShifter);
  float r = __fsub_rn(x, __fmul_rn(n, sm::kLn2High));
  r = __fsub_rn(r, __fmul_rn(n, sm::kLn2Low));
  float p = 1.0f / 5040.0f;
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 720.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 120.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 24.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 6.0f);
  p = __fadd_rn(__fmul_rn(p, r), 0.5f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  const float y = __fmul_rn(p, __int_as_float((int(n) + 127) << 23));
  return underflow ? 0.0f : y;
}

// Ascending key order = ascending float order (-0 is folded into +0: they compare equal).
__device__ __forceinline__ uint32_t sample_key(float w) {
  const uint32_t u = __float_as_uint(__fadd_rn(w, 0.0f));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ uint64_t sample_fx(float e) {
  return uint64_t(double(e) * kSampleFxScale + 0.5);
}

struct SampleShared {
  uint32_t count[256];  // this block's histogram of a radix pass
  unsigned long long mass[256];
  uint32_t all_count[256];  // the job's (every block of its cluster) histogram
  unsigned long long all_mass[256];
  unsigned long long tile[kSampleMaxTiles];
  alignas(8) unsigned char red[kSampleWarps * 8];
  alignas(8) unsigned char share[kSampleShareBytes];  // this block's part of a reduction
  alignas(
      8) unsigned char gathered[kSampleMaxRanks * kSampleShareBytes];  // every block's, in order
  int found;
  int digit;
  unsigned long long above;
  unsigned long long total;
};

// The blocks of one job: a cluster of `ranks` blocks, block `rank` owning the slice [lo, hi) of
// the vocabulary (contiguous, so that id order across blocks is rank order).
struct SampleGroup {
  int rank, ranks, lo, hi;
};

// A reduction over the block in a fixed order (the same bits every run). Every thread gets the
// result; the scratch may be reused right after.
template <typename T, typename Op>
__device__ T sample_block_reduce(T v, Op op, SampleShared& sh) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  T* scratch = reinterpret_cast<T*>(sh.red);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  T r = scratch[0];
  for (int i = 1; i < kSampleWarps; ++i) r = op(r, scratch[i]);
  return r;
}

// Each block's value v (the same in all its threads) as every block of the job sees it: the
// result's [k] is rank k's, k < ranks (in shared memory, valid until the next gather).
template <typename T>
__device__ const T* sample_gather(T v, SampleShared& sh, const SampleGroup& g) {
  static_assert(sizeof(T) <= kSampleShareBytes && alignof(T) <= 8);
  T* got = reinterpret_cast<T*>(sh.gathered);
  if (g.ranks == 1) {
    __syncthreads();  // the last gather's readers are done
    if (threadIdx.x == 0) got[0] = v;
    __syncthreads();
    return got;
  }
  cg::cluster_group cluster = cg::this_cluster();
  T* mine = reinterpret_cast<T*>(sh.share);
  if (threadIdx.x == 0) *mine = v;
  cluster.sync();  // also: this block's readers of the last gather are done
  if (int(threadIdx.x) < g.ranks) got[threadIdx.x] = *cluster.map_shared_rank(mine, threadIdx.x);
  cluster.sync();  // every block has read before any writes its part again
  return got;
}

// A reduction over the job's blocks: each block's in a fixed order, then the blocks' in rank
// order, so that the bits do not depend on how the blocks were scheduled.
template <typename T, typename Op>
__device__ T sample_reduce(T v, Op op, SampleShared& sh, const SampleGroup& g) {
  const T* part = sample_gather(sample_block_reduce(v, op, sh), sh, g);
  T r = part[0];
  for (int k = 1; k < g.ranks; ++k) r = op(r, part[k]);
  return r;
}

struct SampleSum {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct SampleMax {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SampleMin {
  __device__ int operator()(int a, int b) const { return min(a, b); }
};
struct SampleMaxInt {
  __device__ int operator()(int a, int b) const { return max(a, b); }
};

// The id of the n-th (1-based) token of [lo, hi), in id order, for which pred holds; INT32_MAX
// when fewer. The block's threads all call it.
template <typename Pred>
__device__ int sample_nth_in(int lo, int hi, int n, Pred pred, SampleShared& sh) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int* counts = reinterpret_cast<int*>(sh.red);
  int seen = 0;
  __syncthreads();
  if (threadIdx.x == 0) sh.found = INT32_MAX;
  for (int base = lo; base < hi; base += kSampleThreads) {
    const int i = base + int(threadIdx.x);
    const bool p = i < hi && pred(i);
    const unsigned b = __ballot_sync(kFull, p);
    __syncthreads();
    if (lane == 0) counts[warp] = __popc(b);
    __syncthreads();
    int before = __popc(b & ((1u << lane) - 1u)), total = 0;
    for (int w = 0; w < kSampleWarps; ++w) {
      before += w < warp ? counts[w] : 0;
      total += counts[w];
    }
    if (p && seen + before + 1 == n) sh.found = i;
    seen += total;
    if (seen >= n) break;
  }
  __syncthreads();
  return sh.found;
}

// The same over the job's whole vocabulary: each block counts its slice, and the block whose
// slice holds the n-th looks for it there.
template <typename Pred>
__device__ int sample_nth(int n, Pred pred, SampleShared& sh, const SampleGroup& g) {
  int mine = 0;
  for (int i = g.lo + int(threadIdx.x); i < g.hi; i += kSampleThreads) mine += pred(i) ? 1 : 0;
  const int* part = sample_gather(sample_block_reduce(mine, SampleSum{}, sh), sh, g);
  int before = 0;
  for (int k = 0; k < g.rank; ++k) before += part[k];
  const int found = n > before && n <= before + part[g.rank]
                        ? sample_nth_in(g.lo, g.hi, n - before, pred, sh)
                        : INT32_MAX;
  return sample_reduce(found, SampleMin{}, sh, g);
}

// Adds one token (when valid) to bin d of top-p's radix histogram: count and fixed-point mass. The
// lanes of a warp that share a bin are summed first and one of them adds for all: the first pass
// (sign and high exponent bits of the logit) puts most tokens in a few bins, where 1024 threads
// adding 64-bit masses to one shared address one by one took 2.6 ms a sequence (0.75 ms with this).
// All 32 lanes of the warp must call it.
__device__ void sample_hist_add(bool valid, uint32_t d, unsigned long long fx, SampleShared& sh) {
  const int lane = threadIdx.x & 31;
  unsigned remaining = __ballot_sync(kFull, valid);
  while (remaining) {
    const int leader = __ffs(remaining) - 1;
    const uint32_t dl = __shfl_sync(kFull, d, leader);
    const unsigned group = __ballot_sync(kFull, valid && d == dl);
    unsigned long long sum = (group >> lane) & 1u ? fx : 0ull;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(kFull, sum, o);
    if (lane == leader) atomicAdd(&sh.mass[dl], sum);
    if (lane == leader) atomicAdd(&sh.count[dl], unsigned(__popc(group)));
    remaining &= ~group;
  }
}

// Zeroes the block's histogram before a radix pass.
__device__ void sample_hist_clear(SampleShared& sh) {
  for (int d = threadIdx.x; d < 256; d += kSampleThreads) sh.count[d] = 0, sh.mass[d] = 0;
  __syncthreads();
}

// The job's histogram (all_count, all_mass: the sum of its blocks' in rank order, the same in every
// block) once each block has filled its own. Integer sums: exact in any order.
__device__ void sample_hist_merge(SampleShared& sh, const SampleGroup& g) {
  cg::cluster_group cluster = cg::this_cluster();
  if (g.ranks > 1)
    cluster.sync();
  else
    __syncthreads();
  for (int d = threadIdx.x; d < 256; d += kSampleThreads) {
    uint32_t c = 0;
    unsigned long long m = 0;
#pragma unroll
    for (int k = 0; k < kSampleMaxRanks; ++k) {
      if (k >= g.ranks) break;
      c += g.ranks == 1 ? sh.count[d] : *cluster.map_shared_rank(&sh.count[d], k);
      m += g.ranks == 1 ? sh.mass[d] : *cluster.map_shared_rank(&sh.mass[d], k);
    }
    sh.all_count[d] = c;
    sh.all_mass[d] = m;
  }
  // Every block has read the others' histograms before any clears its own for the next pass.
  if (g.ranks > 1)
    cluster.sync();
  else
    __syncthreads();
}

// An inclusive scan over the block in thread order.
__device__ unsigned long long sample_block_scan(unsigned long long v, SampleShared& sh) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long u = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += u;
  }
  auto* totals = reinterpret_cast<unsigned long long*>(sh.red);
  __syncthreads();
  if (lane == 31) totals[warp] = v;
  __syncthreads();
  for (int w = 0; w < warp; ++w) v += totals[w];
  return v;
}

// One job a cluster of gridDim.x / jobs blocks (a job's work spread over several multiprocessors:
// with one block a job, one sequence took 0.75 ms at top-p 0.9, more than a third of a decode step
// at batch 1). Every reduction is over the whole cluster; each block loops over its own slice.
__global__ void __launch_bounds__(kSampleThreads)
    sample_kernel(const float* __restrict__ logits, int V, const SampleJob* __restrict__ jobs,
                  const int2* __restrict__ penalties, SampleParams p, float* __restrict__ work,
                  SampleOut* __restrict__ out, int* __restrict__ tokens_out) {
  __shared__ SampleShared sh;
  const int ranks = int(cg::this_cluster().num_blocks());
  const int job_index = int(blockIdx.x) / ranks;
  const int rank = int(blockIdx.x) % ranks, slice = (V + ranks - 1) / ranks;
  const SampleGroup g{rank, ranks, min(V, rank * slice), min(V, (rank + 1) * slice)};
  const SampleJob job = jobs[job_index];
  const int tid = int(threadIdx.x);
  const float* raw = logits + job.row * int64_t(V);
  const bool penalised = job.pen_end > job.pen_begin;
  const float* w = raw;
  SampleOut result{-1, 0.0f, kSampleOk, 0};

  // Raw logits: NaN and +inf are rejected (as the CPU sampler does); the raw maximum serves kRaw.
  // Each thread also notes where its own maximum first occurs: without penalties that is where
  // greedy looks, so greedy needs no second pass. (Fewer passes and exchanges: each exchange is
  // two cluster barriers, which at 16 blocks cost about as much as a pass, S15.4.)
  float thread_max = -INFINITY;
  int bad = 0, first_max = INT32_MAX;
  for (int i = g.lo + tid; i < g.hi; i += kSampleThreads) {
    const float x = raw[i];
    bad |= !(x < INFINITY);
    if (x > thread_max) thread_max = x, first_max = i;
  }
  struct Start {
    float raw_max;
    int bad;
  };
  const Start* start = sample_gather(Start{sample_block_reduce(thread_max, SampleMax{}, sh),
                                           sample_block_reduce(bad, SampleSum{}, sh)},
                                     sh, g);
  float raw_max = start[0].raw_max;
  bad = start[0].bad;
  for (int k = 1; k < ranks; ++k) raw_max = fmaxf(raw_max, start[k].raw_max), bad += start[k].bad;
  if (bad) result.status = kSampleBadLogit;

  float max = raw_max;  // of w: the raw logits unless penalised
  if (penalised && !bad) {
    // Each block penalises its slice of the job's row.
    float* row = work + int64_t(job_index) * V;
    for (int i = g.lo + tid; i < g.hi; i += kSampleThreads) row[i] = raw[i];
    __syncthreads();
    int overflow = 0;
    for (int j = job.pen_begin + tid; j < job.pen_end; j += kSampleThreads) {
      const int2 pc = penalties[j];  // (token, count): each token once
      if (pc.x < g.lo || pc.x >= g.hi) continue;
      float x = row[pc.x];
      if (p.repetition_penalty != 1.0f)
        x = x > 0.0f ? __fdiv_rn(x, p.repetition_penalty) : __fmul_rn(x, p.repetition_penalty);
      x = __fsub_rn(x, __fadd_rn(p.presence_penalty, __fmul_rn(p.frequency_penalty, float(pc.y))));
      overflow |= isnan(x) || x == INFINITY;
      row[pc.x] = x;
    }
    // (The reduction's barriers also make the block's row visible to the others: the logprob
    // below may read the sampled token from another block's slice.)
    if (sample_reduce(overflow, SampleSum{}, sh, g)) result.status = kSamplePenaltyOverflow;
    w = row;
    max = -INFINITY;
    if (result.status == kSampleOk) {
      for (int i = g.lo + tid; i < g.hi; i += kSampleThreads) max = fmaxf(max, w[i]);
      max = sample_reduce(max, SampleMax{}, sh, g);
    }
  }
  if (result.status == kSampleOk && max == -INFINITY) result.status = kSampleAllMasked;
  if (result.status != kSampleOk) {  // the same status in every block of the job
    if (tid == 0 && rank == 0) {
      out[job_index] = result;
      if (tokens_out && job.dest >= 0) tokens_out[job.dest] = 0;  // a valid id for the step
    }
    return;
  }
  const float inv_t = p.inv_temperature;
  auto weight = [&](int i) { return sample_exp(__fmul_rn(__fsub_rn(w[i], max), inv_t)); };

  // The normaliser of the distribution kRaw or kProcessed describes, over every token (added up
  // in the draw's pass when there is one).
  auto norm_term = [&](int i) {
    return p.logprob_mode == 0 ? double(sample_exp(__fsub_rn(raw[i], raw_max))) : double(weight(i));
  };
  auto log_norm_of = [&](double sum) {
    return p.logprob_mode == 0 ? log(sum) + double(raw_max) : log(sum) + double(inv_t) * max;
  };
  double log_norm = 0.0;

  if (p.greedy) {
    int first = INT32_MAX;
    if (!penalised)
      first = thread_max == max ? first_max : INT32_MAX;
    else
      for (int i = g.lo + tid; i < g.hi; i += kSampleThreads)
        if (w[i] == max) first = min(first, i);
    double sum = 0.0;
    if (p.logprob_mode != 2)
      for (int i = g.lo + tid; i < g.hi; i += kSampleThreads) sum += norm_term(i);
    struct Greedy {
      double sum;
      int first;
    };
    const Greedy* part = sample_gather(Greedy{sample_block_reduce(sum, SampleSum{}, sh),
                                              sample_block_reduce(first, SampleMin{}, sh)},
                                       sh, g);
    sum = part[0].sum;
    first = part[0].first;
    for (int k = 1; k < ranks; ++k) sum += part[k].sum, first = min(first, part[k].first);
    result.token = first;
    result.kept = 1;
    if (p.logprob_mode != 2) log_norm = log_norm_of(sum);
  } else {
    // The cut: tokens with key > cut_key, or key == cut_key and id <= cut_id. all: no cut yet.
    bool all = true;
    uint32_t cut_key = 0;
    int cut_id = INT32_MAX;
    auto member = [&](int i, uint32_t key) {
      return all || key > cut_key || (key == cut_key && i <= cut_id);
    };
    if (p.top_k > 0 && p.top_k < V) {
      uint32_t prefix = 0, mask = 0;
      int above = 0;
      for (int shift = 24; shift >= 0; shift -= 8) {
        sample_hist_clear(sh);
        for (int base = g.lo; base < g.hi; base += kSampleThreads) {
          const int i = base + tid;
          const uint32_t key = i < g.hi ? sample_key(w[i]) : 0u;
          const bool valid = i < g.hi && (key & mask) == prefix;
          // Plain 32-bit shared atomics: measured faster here than the warp pre-sum that the
          // 64-bit masses of top-p need (top-k 50 + top-p 0.9, 64 sequences, H200: 0.80 against
          // 0.96 ms).
          if (valid) atomicAdd(&sh.count[(key >> shift) & 255u], 1u);
        }
        sample_hist_merge(sh, g);
        if (tid == 0) {
          int d = 255;
          for (; d > 0 && above + int(sh.all_count[d]) < p.top_k; --d)
            above += int(sh.all_count[d]);
          sh.digit = d;
          sh.above = above;
        }
        __syncthreads();
        prefix |= uint32_t(sh.digit) << shift;
        mask |= 255u << shift;
        above = int(sh.above);
      }
      const int ties = int(sh.all_count[sh.digit]), need = p.top_k - above;
      const uint32_t k_key = prefix;
      cut_id = need < ties ? sample_nth(
                                 need, [&](int i) { return sample_key(w[i]) == k_key; }, sh, g)
                           : INT32_MAX;
      cut_key = prefix;
      all = false;
    }
    if (p.top_p < 1.0f) {
      unsigned long long m = 0;
      for (int i = g.lo + tid; i < g.hi; i += kSampleThreads)
        if (member(i, sample_key(w[i]))) m += sample_fx(weight(i));
      m = sample_reduce(m, SampleSum{}, sh, g);
      const double target = double(p.top_p) * double(m);
      // Tokens below (1 - top_p) * m / n (n: the set's size) weigh less than (1 - top_p) * m
      // together, so the tokens above hold at least top_p of the mass and the boundary is among
      // them; the rest (lower logits, and ties share a weight) need not be histogrammed. 0.99
      // absorbs rounding. The CPU sampler makes the same cut.
      const double n_set = all ? double(V) : double(p.top_k);
      const auto tau = (unsigned long long)(0.99 * (1.0 - double(p.top_p)) * double(m) / n_set);
      uint32_t prefix = 0, mask = 0;
      unsigned long long above = 0;
      for (int shift = 24; shift >= 0; shift -= 8) {
        sample_hist_clear(sh);
        for (int base = g.lo; base < g.hi; base += kSampleThreads) {
          const int i = base + tid;
          const uint32_t key = i < g.hi ? sample_key(w[i]) : 0u;
          bool valid = i < g.hi && (key & mask) == prefix && member(i, key);
          const unsigned long long fx = valid ? sample_fx(weight(i)) : 0ull;
          valid = valid && fx >= tau;
          const uint32_t d = (key >> shift) & 255u;
          if (shift == 24) {
            sample_hist_add(valid, d, fx, sh);
          } else if (valid) {
            atomicAdd(&sh.count[d], 1u);
            atomicAdd(&sh.mass[d], fx);
          }
        }
        sample_hist_merge(sh, g);
        if (tid == 0) {
          // The digit where the mass, walked in descending order, reaches the target; integer
          // sums make every sub-bucket total its bucket's, so it is always reached (the lowest
          // non-empty digit stands in should rounding of the target ever say otherwise).
          int d = 255, last = -1;
          unsigned long long a = above, a_last = above;
          for (; d >= 0; --d) {
            if (sh.all_count[d] == 0) continue;
            last = d;
            a_last = a;
            if (double(a + sh.all_mass[d]) >= target) break;
            a += sh.all_mass[d];
          }
          if (d < 0) d = last, a = a_last;
          sh.digit = d;
          sh.above = a;
        }
        __syncthreads();
        prefix |= uint32_t(sh.digit) << shift;
        mask |= 255u << shift;
        above = sh.above;
      }
      // Tokens of the boundary logit share one weight f: keep them (in id order) while the mass
      // before each is below the target; the crossing one is kept, and at least one in all.
      const int ties = int(sh.all_count[sh.digit]);
      int tie_id = 0;
      for (int i = g.lo + tid; i < g.hi; i += kSampleThreads)
        if (sample_key(w[i]) == prefix) tie_id = i;
      tie_id = sample_reduce(tie_id, SampleMaxInt{}, sh, g);
      const unsigned long long f = sample_fx(weight(tie_id));
      auto reaches = [&](int n) { return double(above + (unsigned long long)n * f) >= target; };
      int n = ties;
      if (f > 0 && reaches(1)) {
        n = 1;
      } else if (f > 0) {
        // The count from the quotient, then corrected for its rounding.
        n = int(fmin(double(ties), ceil((target - double(above)) / double(f))));
        n = n < 1 ? 1 : n;
        while (n > 1 && reaches(n - 1)) --n;
        while (n < ties && !reaches(n)) ++n;
      }
      const bool prev_same = !all && cut_key == prefix;
      const int prev_id = cut_id;
      if (n < ties) {
        const uint32_t p_key = prefix;
        cut_id = sample_nth(
            n, [&](int i) { return sample_key(w[i]) == p_key && (!prev_same || i <= prev_id); }, sh,
            g);
      } else {
        cut_id = prev_same ? prev_id : INT32_MAX;
      }
      cut_key = prefix;
      all = false;
    }
    const float min_p = p.min_p;
    auto kept_fx = [&](int i) -> unsigned long long {
      const float e = weight(i);
      return member(i, sample_key(w[i])) && e >= min_p ? sample_fx(e) : 0ull;
    };
    // The draw: u from the same Philox block as Sampler::uniform_at(seed, step).
    const philox::Counter c{uint32_t(job.step), uint32_t(job.step >> 32), 0u, 0u};
    const philox::Counter r = philox::block(c, philox::key_from_seed(job.seed));
    const double u = philox::uniform_f64(r[0], r[1]);
    // Tiles of kSampleThreads * per consecutive tokens of the block's slice; their masses first,
    // one warp a tile.
    const int len = g.hi - g.lo;
    const int per =
        len > 0 ? (len + kSampleThreads * kSampleMaxTiles - 1) / (kSampleThreads * kSampleMaxTiles)
                : 1;
    const int tile = kSampleThreads * per, n_tiles = (len + tile - 1) / tile;
    // One pass: each tile's kept mass in fixed point (for the draw), the kept tokens' count and
    // mass in double (kSampling's normaliser, over the same set) and kRaw's or kProcessed's sum.
    for (int t = tid; t < n_tiles; t += kSampleThreads) sh.tile[t] = 0;
    __syncthreads();
    const int lane = tid & 31;
    int kept = 0;
    double kept_mass = 0.0, sum = 0.0;
    for (int base = g.lo; base < g.hi; base += kSampleThreads) {
      const int i = base + tid;
      unsigned long long fx = 0;
      if (i < g.hi) {
        const float e = weight(i);
        if (member(i, sample_key(w[i])) && e >= min_p) {
          fx = sample_fx(e);
          if (e > 0.0f) ++kept, kept_mass += e;
        }
        if (p.logprob_mode != 2) sum += norm_term(i);
      }
      for (int o = 16; o > 0; o >>= 1) fx += __shfl_xor_sync(kFull, fx, o);
      // A tile holds whole rounds of the block's threads.
      if (lane == 0 && fx > 0) atomicAdd(&sh.tile[(base - g.lo) / tile], fx);
    }
    __syncthreads();
    unsigned long long slice_mass = 0;
    for (int t = 0; t < n_tiles; ++t) slice_mass += sh.tile[t];
    struct Draw {
      unsigned long long mass;
      double kept_mass, sum;
      int kept;
    };
    const Draw* part = sample_gather(
        Draw{slice_mass, sample_block_reduce(kept_mass, SampleSum{}, sh),
             sample_block_reduce(sum, SampleSum{}, sh), sample_block_reduce(kept, SampleSum{}, sh)},
        sh, g);
    // The job's total and the mass of the slices before this block's (exact integer sums).
    unsigned long long total = 0, before = 0;
    kept = 0;
    kept_mass = sum = 0.0;
    for (int k = 0; k < ranks; ++k) {
      if (k < rank) before += part[k].mass;
      total += part[k].mass;
      kept_mass += part[k].kept_mass;
      sum += part[k].sum;
      kept += part[k].kept;
    }
    result.kept = kept;
    log_norm = p.logprob_mode == 2 ? log(kept_mass) : log_norm_of(sum);
    unsigned long long target = (unsigned long long)(u * double(total));
    if (target >= total) target = total - 1;  // total >= 2^44: the top token is always kept
    int found = -1;
    if (target >= before && target < before + slice_mass) {  // the block holding the draw
      if (tid == 0) {
        unsigned long long cum = before;
        int t = 0;
        while (t + 1 < n_tiles && cum + sh.tile[t] <= target) cum += sh.tile[t++];
        sh.digit = t;
        sh.above = target - cum;  // the target inside tile t
      }
      __syncthreads();
      const int t = sh.digit;
      const unsigned long long inside = sh.above;
      const int begin = g.lo + t * tile + tid * per;
      const int end = min(g.hi, begin + per);
      unsigned long long mine = 0;
      for (int i = begin; i < end; ++i) mine += kept_fx(i);
      unsigned long long cum = sample_block_scan(mine, sh) - mine;
      __syncthreads();
      if (tid == 0) sh.found = -1;
      __syncthreads();
      if (cum <= inside && inside < cum + mine) {
        for (int i = begin; i < end; ++i) {
          const unsigned long long v = kept_fx(i);
          if (v > 0 && inside < cum + v) {
            sh.found = i;
            break;
          }
          cum += v;
        }
      }
      __syncthreads();
      found = sh.found;
    }
    result.token = sample_reduce(found, SampleMaxInt{}, sh, g);
  }
  if (tid != 0 || rank != 0) return;
  const int tok = result.token;
  if (p.logprob_mode == 0)
    result.logprob = float(double(raw[tok]) - log_norm);
  else if (p.logprob_mode == 1)
    result.logprob = float(double(inv_t) * w[tok] - log_norm);
  else
    result.logprob = p.greedy ? 0.0f : float(log(double(weight(tok))) - log_norm);
  out[job_index] = result;
  if (tokens_out && job.dest >= 0) tokens_out[job.dest] = tok;
}

// Row y of logits into slot dest[y] of the store (dest < 0: not stored), in 16-byte words (V % 4
// == 0) or floats. One word a thread: at batch 1 the copy ends the step, so it is spread over
// enough blocks to have every load in flight at once (a loop over 64 blocks took 8 us for
// gpt-oss's 201,088 logits on an H100).
template <typename Word>
__global__ void store_logit_rows_kernel(const Word* __restrict__ logits,
                                        const int* __restrict__ dest, int words,
                                        Word* __restrict__ store) {
  const int slot = dest[blockIdx.y];
  if (slot < 0) return;
  const Word* src = logits + int64_t(blockIdx.y) * words;
  Word* dst = store + int64_t(slot) * words;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < words; j += gridDim.x * blockDim.x)
    dst[j] = src[j];
}

}  // namespace

void store_logit_rows(const float* logits, const int* dest_slot, int L, int V, float* store,
                      cudaStream_t stream) {
  MIND4_CUDA_ARG(logits && dest_slot && store, "store_logit_rows", "null pointer");
  MIND4_CUDA_ARG(L >= 0 && V > 0, "store_logit_rows", "L = ", L, ", V = ", V);
  if (L == 0) return;
  auto launch = [&](auto word) {
    using Word = decltype(word);
    const int words = V / int(sizeof(Word) / 4);
    const int blocks = std::min(1024, (words + kStoreThreads - 1) / kStoreThreads);
    store_logit_rows_kernel<Word><<<dim3(blocks, L), kStoreThreads, 0, stream>>>(
        reinterpret_cast<const Word*>(logits), dest_slot, words, reinterpret_cast<Word*>(store));
  };
  const bool aligned =
      reinterpret_cast<uintptr_t>(logits) % 16 == 0 && reinterpret_cast<uintptr_t>(store) % 16 == 0;
  if (aligned && V % 4 == 0)
    launch(float4{});
  else
    launch(float{});
  check_launch("store_logit_rows_kernel");
}

SampleParams sample_params(const SamplingConfig& config, LogprobMode mode) {
  SampleParams p;
  // As the CPU sampler: a temperature so small that 1/T overflows can only pick the argmax.
  p.greedy = config.temperature == 0.0f || !std::isfinite(1.0f / config.temperature);
  p.inv_temperature = p.greedy ? 1.0f : 1.0f / config.temperature;
  p.top_k = config.top_k;
  p.top_p = config.top_p;
  p.min_p = config.min_p;
  p.repetition_penalty = config.repetition_penalty;
  p.presence_penalty = config.presence_penalty;
  p.frequency_penalty = config.frequency_penalty;
  p.logprob_mode = mode == LogprobMode::kRaw ? 0 : mode == LogprobMode::kProcessed ? 1 : 2;
  return p;
}

int sample_max_ranks() {
  // 16 blocks a cluster is beyond the portable 8: allowed where the card can place one.
  static const int ranks =
      cluster_fits(sample_kernel, kSampleMaxRanks, kSampleThreads) ? kSampleMaxRanks : 8;
  return ranks;
}

void sample_tokens(const float* logits, int V, const SampleJob* jobs, int n, const int2* penalties,
                   const SampleParams& params, float* work, SampleOut* out, cudaStream_t stream,
                   int ranks, int* tokens_out) {
  MIND4_CUDA_ARG(logits && jobs && out, "sample_tokens", "null pointer");
  MIND4_CUDA_ARG(V > 0 && n >= 0, "sample_tokens", "V = ", V, ", n = ", n);
  MIND4_CUDA_ARG(params.logprob_mode >= 0 && params.logprob_mode <= 2, "sample_tokens",
                 "logprob_mode = ", params.logprob_mode);
  const int max_ranks = sample_max_ranks();
  MIND4_CUDA_ARG(ranks >= 0 && ranks <= max_ranks, "sample_tokens", "ranks = ", ranks, " (0 to ",
                 max_ranks, ")");
  if (n == 0) return;
  if (ranks == 0) {
    // As many blocks a job as fill the multiprocessors once (one 1024-thread block each), at
    // most one for every 4096 tokens.
    ranks = 1;
    while (2 * ranks <= max_ranks && 2 * ranks * n <= multiprocessor_count() &&
           2 * ranks * 4096 <= V)
      ranks *= 2;
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(n) * unsigned(ranks));
  cfg.blockDim = dim3(kSampleThreads);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(ranks);
  attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check(cudaLaunchKernelEx(&cfg, sample_kernel, logits, V, jobs, penalties, params, work, out,
                           tokens_out),
        "sample_kernel");
  check_launch("sample_kernel");
}

}  // namespace mind4::cuda
