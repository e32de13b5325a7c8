// Host launchers of the CUDA kernels, one .cu per op family. Plain C++ (tests call them). Each
// launcher checks its arguments (kInvalidArgument naming the launcher and the argument) and the
// launch (kDeviceError naming the kernel), and enqueues on `stream` without synchronising.
//
// "act" buffers hold the activation dtype: bf16 (__nv_bfloat16 bits) or f32, chosen per call by
// ActType. Shapes: B rows of a step, H hidden, NH/NKV heads, D head_dim, E experts, K experts per
// row, I intermediate, V vocabulary, A = B*K (row, expert) assignments.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "mind4/sampler.h"

namespace mind4::cuda {

enum class ActType { kF32, kBF16 };
inline int act_size(ActType t) {
  return t == ActType::kF32 ? 4 : 2;
}
inline const char* act_name(ActType t) {
  return t == ActType::kF32 ? "f32" : "bf16";
}

// ---- embedding.cu: x[r] = float(table[tokens[r]]), table act [V, H], x f32 [B, H].
void embedding_gather(ActType t, const void* table, const int* tokens, int B, int H, float* x,
                      cudaStream_t stream);

// ---- rmsnorm.cu. Residual stream x f32 [B, H]; out act [B, H] = x / rms(x) * scale, and the
// same in f32 into out32 [B, H] when out32 is given (the router's input in bf16 mode).
// Before the norm, x += delta (act [B, H]) + delta_bias ([H]) when delta is given.
void residual_rmsnorm(ActType t, float* x, const void* delta, const float* delta_bias,
                      const float* scale, int B, int H, float eps, void* out, float* out32,
                      cudaStream_t stream);
// The mixture of experts' weighted sum joins the residual, then the next norm:
// x[r] += sum_s weights[r, s] * y[assign_at[r, s]] (slots in order), y f32 [A, H].
void moe_combine_rmsnorm(ActType t, float* x, const float* y, const int* assign_at,
                         const float* weights, int K, const float* scale, int B, int H, float eps,
                         void* out, float* out32, cudaStream_t stream);
// dst[i] = src[rows[i]] for i < L, rows of H act values (the rows whose logits are wanted).
void gather_rows(ActType t, const void* src, const int* rows, int L, int H, void* dst,
                 cudaStream_t stream);

// ---- rope.cu: qkv act [B, (NH + 2 NKV) D] (the GEMM output, in place): add bias, rotate q and
// k by YaRN RoPE at pos[r] (tables f32 [positions, D/2], concentration folded in), and store k,
// v into the cache of this layer: k_cache/v_cache act [slots, positions, NKV D].
struct KvLayer {
  void* k;
  void* v;
  int positions;  // rows per slot
};
void qkv_bias_rope(ActType t, void* qkv, const float* bias, const float* cos_table,
                   const float* sin_table, const int* pos, const int* slot, int B, int NH, int NKV,
                   int D, KvLayer kv, cudaStream_t stream);

// ---- attention.cu: out act [B, NH D] = attention of q (from qkv, row stride QKV) over the
// cache of each row's slot, keys [first, pos[r]] with first = pos - window + 1 when window > 0.
// Sink logits f32 [NH] join the softmax denominator. splits > 1 divides each row's keys into
// that many chunks (flash-decoding) combined afterwards; partial must then hold
// B * NH * splits * (D + 2) floats.
void attention(ActType t, const void* qkv, int NH, int NKV, int D, KvLayer kv, const int* pos,
               const int* slot, const float* sinks, int B, int window, float scale, int splits,
               float* partial, void* out, cudaStream_t stream);
// The same on tensor cores for a step whose B rows are consecutive positions pos0 .. pos0+B-1 of
// one slot: scores S = q k^T by cuBLAS (batched over the query heads of each KV head) into
// scores f32 [NH, B, pos0 + B], a masked softmax with the sink (written in place as act values),
// then out = P v by cuBLAS. blas must be bound to `stream`.
void attention_prefill(cublasHandle_t blas, ActType t, const void* qkv, int NH, int NKV, int D,
                       KvLayer kv, int slot, int pos0, const float* sinks, int B, int window,
                       float scale, float* scores, void* out, cudaStream_t stream);
// ---- attention_prefill.cu: the same step fused on tensor cores (flash attention, bf16 mode):
// no score buffer, key tiles outside the causal / window band skipped. Serves D % 8 == 0,
// D <= 128 in bf16 (attention_prefill_flash_supported); f32 mode keeps attention_prefill.
bool attention_prefill_flash_supported(ActType t, int D);
void attention_prefill_flash(ActType t, const void* qkv, int NH, int NKV, int D, KvLayer kv,
                             int slot, int pos0, const float* sinks, int B, int window, float scale,
                             void* out, cudaStream_t stream);
// Splits that keep the GPU busy for B rows over keys of up to max_keys, given the partial
// buffer's capacity in splits.
int attention_splits(int B, int NH, int max_keys, int max_splits);
// ---- attention_decode_gqa.cu: the same as attention() (same arguments, same partial buffer
// size B * NH * splits * (D + 2) floats), but one block per (row, KV head, key split) reads each
// KV head's keys and values once for all its query heads. Serves NH / NKV <= 8 and D a power of
// two in [16, 128] (attention_decode_gqa_supported); the backend uses attention() otherwise, and
// with MIND4_CUDA_DECODE_ATTN=old. In bf16 mode the group's heads go through tensor cores
// (kTensorCores, the default); kCudaCores keeps the CUDA-core kernel, which f32 mode always uses
// (MIND4_CUDA_DECODE_ATTN=cuda-cores in the backend, for comparisons).
enum class DecodeAttnKernel { kTensorCores, kCudaCores };
bool attention_decode_gqa_supported(int NH, int NKV, int D);
void attention_decode_gqa(ActType t, const void* qkv, int NH, int NKV, int D, KvLayer kv,
                          const int* pos, const int* slot, const float* sinks, int B, int window,
                          float scale, int splits, float* partial, void* out, cudaStream_t stream,
                          DecodeAttnKernel which = DecodeAttnKernel::kTensorCores);
// Splits for attention_decode_gqa: B * NKV * splits blocks fill a GPU of `sms` multiprocessors
// (check.h's multiprocessor_count()) for B rows over keys of up to max_keys, given the partial
// buffer's capacity in splits; one split (no combine) for up to 256 keys.
int attention_decode_gqa_splits(int B, int NKV, int max_keys, int max_splits, int sms);

// ---- router.cu: per row, logits f32 [B, E] + bias -> the K largest (ties: lower index) ->
// softmax over them: experts int [B, K], weights f32 [B, K], largest first. E <= 256.
void router_topk_softmax(const float* logits, const float* bias, int B, int E, int K, int* experts,
                         float* weights, cudaStream_t stream);

// ---- moe_group.cu: groups the A = B*K assignments by expert (counting sort in one block).
// offsets int [E + 1]; active int [E + 1]: active[0] = number of experts with rows, then their
// ids ascending; group_row int [A]: row of each grouped assignment; group_expert int [A];
// assign_at int [A]: grouped position of assignment (r, s) = r*K + s.
struct MoeGroups {
  int* offsets;
  int* active;
  int* group_row;
  int* group_expert;
  int* assign_at;
};
void moe_group(const int* experts, int A, int K, int E, MoeGroups g, cudaStream_t stream);

// ---- moe_mf4.cu: expert matrices as MXFP4 blocks [E, rows, cols/32, 16] + scales
// [E, rows, cols/32], read packed. max_active bounds the experts with rows (grid size, so that
// no host synchronisation is needed); tokens_hint is the mean rows per active expert (picks the
// tile).
// mlp1 + clamped SwiGLU: act_out act [A, I] (grouped order) from rows group_row[a] of x act [B, H];
// weight rows interleave gate (even) and linear (odd); bias f32 [E, 2I].
void moe_mlp1_swiglu_mf4(ActType t, const void* x, const uint8_t* blocks, const uint8_t* scales,
                         const float* bias, MoeGroups g, int max_active, int tokens_hint, int H,
                         int I, float limit, void* act_out, cudaStream_t stream);
// mlp2: y f32 [A, H] = act [A, I] (grouped) times expert matrices [E, H, I] + bias f32 [E, H].
void moe_mlp2_mf4(ActType t, const void* act, const uint8_t* blocks, const uint8_t* scales,
                  const float* bias, MoeGroups g, int max_active, int tokens_hint, int H, int I,
                  float* y, cudaStream_t stream);

// ---- ceilings.cu: every byte of p read once by one kernel as fast as it can (16-byte aligned, a
// multiple of 16 bytes); sink: stream_read_sink_words() words, of which the blocks store the XORs
// of the 32-bit words they read (untouched ones keep their value). The floor for a kernel that
// streams that many bytes of weights (bench/cuda_decode_bench.cpp, BM_CudaStreamRead).
int stream_read_sink_words();
void stream_read(const void* p, size_t bytes, unsigned* sink, cudaStream_t stream);

// ---- quantize.cu: x act [rows, cols] -> q int8 [rows, cols] and d f32 [rows, cols/32]: per 32
// consecutive values d = max|x| / 127 and q = round(x / d) (the decode expert GEMV's input in bf16
// mode). cols % 32 == 0.
void quantize_q8_32(ActType t, const void* x, int rows, int cols, int8_t* q, float* d,
                    cudaStream_t stream);

// ---- moe_mf4.cu, decode with int8 activations (bf16 mode; a few rows per expert): the same
// products as moe_mlp1_swiglu_mf4 / moe_mlp2_mf4 from quantize_q8_32 output, e2m1 nibbles turned
// into int8 by byte permutes and multiplied with dp4a. mlp1 reads rows group_row[a] of (xq, xd)
// [B, H]; mlp2 reads rows a of (aq, ad) [A, I]. tokens_hint (about A / max_active) sizes the
// group of assignments that share one conversion of each weight (1, 2 or 4); any count works.
// one_row: the step is one row (B = 1), whose K distinct experts hold one assignment each, so
// active slot y's assignment is y and its row 0 whatever grouping wrote g; mlp1 then reads
// neither offsets nor group_row (two round trips to L2 before its activations).
void moe_mlp1_swiglu_mf4_q8(ActType t, const int8_t* xq, const float* xd, const uint8_t* blocks,
                            const uint8_t* scales, const float* bias, MoeGroups g, int max_active,
                            int tokens_hint, int H, int I, float limit, void* act_out,
                            cudaStream_t stream, bool one_row = false);
// mlp1 of a step of one row (B = 1) from router_norm_group's int16 blocks (xq int16 [H], xd f32
// [H / 32]) that also quantizes its output act_out [K, I] into aq, ad as quantize_q8_32 does:
// moe_mlp2_mf4_q8_combine's input, with no quantization launch between.
void moe_mlp1_swiglu_mf4_q8_one_row(const int16_t* xq, const float* xd, const uint8_t* blocks,
                                    const uint8_t* scales, const float* bias, MoeGroups g,
                                    int max_active, int H, int I, float limit, void* act_out,
                                    int8_t* aq, float* ad, cudaStream_t stream);
void moe_mlp2_mf4_q8(const int8_t* aq, const float* ad, const uint8_t* blocks,
                     const uint8_t* scales, const float* bias, MoeGroups g, int max_active,
                     int tokens_hint, int H, int I, float* y, cudaStream_t stream);

// ---- moe_prefill.cu: pieces of the tensor-core route for large steps, where each active
// expert's MXFP4 matrix is expanded into the activation dtype and multiplied by cuBLAS.
// out act [rows, cols] = the MXFP4 matrix (blocks [rows, cols/32, 16], scales [rows, cols/32]).
void mf4_expand(ActType t, const uint8_t* blocks, const uint8_t* scales, int rows, int cols,
                void* out, cudaStream_t stream);
// act_out act [A, I] = clamped SwiGLU of h f32 [A, 2I] (interleaved gate/linear) + bias
// f32 [E, 2I] of each assignment's expert (group_expert).
void moe_bias_swiglu(ActType t, const float* h, const float* bias, const int* group_expert, int A,
                     int I, float limit, void* act_out, cudaStream_t stream);
// y f32 [A, H] += bias f32 [E, H] of each assignment's expert.
void moe_bias_add(float* y, const float* bias, const int* group_expert, int A, int H,
                  cudaStream_t stream);

// ---- moe_gemm_mf4.cu: the same two products for large steps (prefill) in bf16 mode, as one
// grouped GEMM per matrix on tensor cores reading the packed weights (no expansion, no host
// synchronisation). moe_tile_plan lists each expert's tiles of tile_rows rows into plan int
// [1 + 2 * moe_tile_plan_capacity(A, E, tile_rows)] (count, then (expert, first grouped row)
// pairs); both products read it, made with the tile rows of the kernel that runs them
// (moe_gemm_tile_rows). mlp1 + bias + clamped SwiGLU: act_out bf16 [A, I] (grouped order) from rows
// group_row[a] of x bf16 [B, H]; mlp2: y f32 [A, H] = act times the expert matrices + bias.
// H % 32 == 0, I % 32 == 0.
int moe_tile_plan_capacity(int A, int E, int tile_rows);
void moe_tile_plan(const int* offsets, int E, int tile_rows, int* plan, cudaStream_t stream);
// The kernel that runs them (same arguments and results; docs/perf-notes.md compares them):
// mma.sync over tiles of 128 assignments x 128 weight rows (the default), the same over
// 128 x 256 (kMmaWide) or 256 x 128 (kMmaTall), or Hopper's warpgroup MMA: weights expanded into
// shared memory (kWgmma, moe_gemm_mf4_wgmma.cu) or decoded into the register operand (kWgmmaRegs,
// moe_gemm_mf4_wgmma_regs.cu); both refused off compute capability 9.x, see
// moe_gemm_wgmma_supported. kSkinny (moe_gemm_mf4_skinny.cu) serves steps of a few rows an
// expert (batched decode): tiles of 16 assignments, each warp streaming 32 weight rows into
// mma.sync fragments. moe_gemm_variant_named: "mma", "mma256", "mma-tall", "wgmma", "wgmma-regs"
// or "skinny"; anything else throws, naming the value.
enum class MoeGemmVariant { kMma, kMmaWide, kMmaTall, kWgmma, kWgmmaRegs, kSkinny };
MoeGemmVariant moe_gemm_variant_named(const std::string& name);
int moe_gemm_tile_rows(MoeGemmVariant v);
bool moe_gemm_wgmma_supported();
void moe_mlp1_swiglu_mf4_gemm(MoeGemmVariant v, ActType t, const void* x, const uint8_t* blocks,
                              const uint8_t* scales, const float* bias, MoeGroups g,
                              const int* plan, int A, int E, int H, int I, float limit,
                              void* act_out, cudaStream_t stream);
void moe_mlp2_mf4_gemm(MoeGemmVariant v, ActType t, const void* act, const uint8_t* blocks,
                       const uint8_t* scales, const float* bias, MoeGroups g, const int* plan,
                       int A, int E, int H, int I, float* y, cudaStream_t stream);

// ---- moe_dense.cu: the same two products for experts stored as act matrices (checkpoints with
// bf16/f32 experts): w1 [E, 2I, H], w2 [E, H, I]. A is the number of assignments.
void moe_mlp1_swiglu_dense(ActType t, const void* x, const void* w1, const float* bias, MoeGroups g,
                           int A, int H, int I, float limit, void* act_out, cudaStream_t stream);
void moe_mlp2_dense(ActType t, const void* act, const void* w2, const float* bias, MoeGroups g,
                    int A, int H, int I, float* y, cudaStream_t stream);

// ---- gemm.cu: out [M, N] = x [M, K] times w [N, K] transposed, both of dtype t (a linear layer),
// through cuBLAS with f32 accumulation (and no TF32: the f32 line is the accurate one). out is f32
// when out_f32, else act. The handle must already be bound to the stream.
void linear(cublasHandle_t blas, ActType t, const void* x, int M, int K, const void* w, int N,
            void* out, bool out_f32);

// ---- sampling.cu: one token per job from rows of logits f32 [*, V] on the device, in the CPU
// sampler's order (penalties, temperature, top-k, top-p, min-p) and with its Philox draw
// (Sampler::uniform_at(seed, step)); kept tokens are walked in token-id order. See the file's
// header for the fixed-point masses and docs/cuda.md for how it compares with the CPU sampler.
struct SampleParams {
  float inv_temperature = 1.0f;  // 1 / T; 1 under greedy
  bool greedy = false;           // argmax of the penalised logits, lowest id on ties
  int top_k = 0;                 // 0 = off
  float top_p = 1.0f;            // 1 = off
  float min_p = 0.0f;            // 0 = off
  float repetition_penalty = 1.0f, presence_penalty = 0.0f, frequency_penalty = 0.0f;
  int logprob_mode = 1;  // LogprobMode's order: 0 raw, 1 processed, 2 sampling
};
// The kernel's parameters for a SamplingConfig and LogprobMode (as the CPU sampler: a temperature
// so small that 1/T overflows can only pick the argmax).
SampleParams sample_params(const SamplingConfig& config, LogprobMode mode);
struct SampleJob {
  int64_t row;  // the logits row
  uint64_t seed, step;
  int pen_begin, pen_end;  // this job's (token, count) pairs in `penalties`; empty = none
  int dest = -1;           // tokens_out[dest] = the token (0 after a sampler error); -1: none
};
enum SampleStatus : int {
  kSampleOk = 0,
  kSampleBadLogit = 1,         // a raw logit is NaN or +inf
  kSampleAllMasked = 2,        // every (penalised) logit is -inf
  kSamplePenaltyOverflow = 3,  // a penalty made a logit NaN or +inf
};
struct SampleOut {
  int token;
  float logprob;  // of the token, under params.logprob_mode
  int status;     // SampleStatus
  int kept;       // tokens of positive weight in the distribution drawn from (1 under greedy)
};
// jobs SampleJob [n] and out SampleOut [n] in device memory; penalties int2 [*] (token, count)
// with each token at most once per job; work f32 [n, V] scratch, needed only when some job has
// penalty pairs (may be null otherwise). Each job runs on a cluster of `ranks` blocks (0: as
// many as fill the card once, up to sample_max_ranks()), each over a slice of the vocabulary; the
// token drawn does not depend on it (the masses are exact integer sums). tokens_out (with the
// jobs' dest): where the tokens also go, such as the next step's row table.
void sample_tokens(const float* logits, int V, const SampleJob* jobs, int n, const int2* penalties,
                   const SampleParams& params, float* work, SampleOut* out, cudaStream_t stream,
                   int ranks = 0, int* tokens_out = nullptr);
// The largest cluster sample_tokens spreads a job over on this card: 16, or the portable 8.
int sample_max_ranks();
// store[dest_slot[i]] = logits row i (f32 [L, V]) for i < L; rows with dest_slot -1 are skipped
// (a context's per-slot store of each sequence's last logits).
void store_logit_rows(const float* logits, const int* dest_slot, int L, int V, float* store,
                      cudaStream_t stream);

// ---- convert.cu: dst act [n] = src (bf16 or f32 bits per src_bf16) on the device.
void convert_to_act(ActType t, const void* src, bool src_bf16, int64_t n, void* dst,
                    cudaStream_t stream);

// ---- The fused decode chain (steps of a few rows; launched with programmatic dependent launch
// when pdl.h's switch is set, see pdl.cuh).
// decode_gemv.cu: x bf16 [B, K] (1 <= B <= 4, K % 8 == 0) times w bf16 [N, K] transposed.
// decode_qkv_rope: N = (NH + 2 NKV) D; adds bias f32 [N], rotates q and k as qkv_bias_rope does,
// writes q into qkv act [B, N] (the k and v parts of qkv are left untouched) and k, v into the
// cache. decode_linear_residual: resid f32 [B, N] += x w^T + bias (bias may be null).
void decode_qkv_rope(const void* x, const void* w, const float* bias, int B, int K, int NH, int NKV,
                     int D, const float* cos_table, const float* sin_table, const int* pos,
                     const int* slot, void* qkv, KvLayer kv, cudaStream_t stream);
void decode_linear_residual(const void* x, const void* w, const float* bias, int B, int K, int N,
                            float* resid, cudaStream_t stream);
// decode_linear: out f32 [B, N] = x w^T (the unembedding of one row: a 1.2 GB GEMV that cuBLAS
// ran at 2.86 TB/s on an H100).
void decode_linear(const void* x, const void* w, int B, int K, int N, float* out,
                   cudaStream_t stream);
// router.cu: the router of a small step in one launch: logits f32 [B, E] = x f32 [B, H] times
// w f32 [E, H] transposed (scratch), then router_topk_softmax's experts and weights and
// moe_group's grouping. done: one unsigned of device memory, 0 before the first call (the kernel
// leaves it 0).
void router_group(const float* x, const float* w, const float* bias, int B, int H, int E, int K,
                  float* logits, unsigned* done, int* experts, float* weights, MoeGroups g,
                  cudaStream_t stream);

// ---- l2_prefetch.cu: asks L2 to fetch bytes [p, p + bytes) from memory (rounded down to whole
// 16-byte units; p 16-byte aligned) for a later kernel; reads nothing into the multiprocessors and
// writes nothing. A hint: on GPUs older than sm_90 it does nothing.
void l2_prefetch(const void* p, int64_t bytes, cudaStream_t stream);

// ---- The folded decode chain (one row, bf16, MXFP4 experts on the int8 route, mlp1's input in
// int16): the one-block norm, quantization and combine launches folded into their neighbours.
//
// router.cu: router_group with the norm before it: xn = RMSNorm(x f32 [B, H]) * norm_scale is
// computed by every block; t_out bf16 [B, H] = xn, (q_out int16 [B, H], d_out f32 [B, H / 32]) =
// t_out in int16 blocks of 32 values (d = max |v| / 32767, q = round(v / d); mlp1's input in
// moe_mlp1_swiglu_mf4_q8_one_row), and logits/experts/weights/groups as router_group computes them
// from xn in f32. H % 32 == 0 and H <= 4096 (router_norm_group_supported). One row of at most 32
// experts runs as one cluster of 8 blocks (done is not used), other steps as E x B blocks.
bool router_norm_group_supported(int H);
void router_norm_group(const float* x, const float* norm_scale, float eps, const float* w,
                       const float* bias, int B, int H, int E, int K, float* logits, unsigned* done,
                       int* experts, float* weights, MoeGroups g, void* t_out, int16_t* q_out,
                       float* d_out, cudaStream_t stream);
// decode_gemv.cu: decode_qkv_rope at one row whose input is RMSNorm(x f32 [1, K]) * norm_scale,
// rounded to bf16: every block norms the row itself (no norm launch before it). With an embedding
// table (bf16 [vocab, K]) the row is instead that table's row of token[0], which the kernel also
// writes into x in f32 (embedding_gather's result): the first layer gathers its own input.
void decode_qkv_rope_norm(float* x, const float* norm_scale, float eps, const void* w,
                          const float* bias, int K, int NH, int NKV, int D, const float* cos_table,
                          const float* sin_table, const int* pos, const int* slot, void* qkv,
                          KvLayer kv, cudaStream_t stream, const void* embedding = nullptr,
                          const int* token = nullptr);
// moe_mf4.cu: moe_mlp2_mf4_q8 (y as it writes it), then the experts' weighted sum joins the
// residual as moe_combine_rmsnorm adds it (x f32 [B, H] += sum_s weights[r, s] * y[assign_at[r,
// s]], slots in order), without the norm; one warp computes every slot of one output (decode: a few
// rows).
// aq, ad: mlp1's output quantized (quantize_q8_32's blocks, assignment rows), from
// moe_mlp1_swiglu_mf4_q8_one_row or quantize_q8_32.
void moe_mlp2_mf4_q8_combine(const int8_t* aq, const float* ad, const uint8_t* blocks,
                             const uint8_t* scales, const float* bias, MoeGroups g, int max_active,
                             int H, int I, float* y, const float* weights, int B, int K, float* x,
                             cudaStream_t stream);

}  // namespace mind4::cuda
