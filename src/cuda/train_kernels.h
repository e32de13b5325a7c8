// Host launchers of the training kernels (src/cuda/train_*.cu), forward and backward of every op
// of a gpt-oss block beside the inference kernels of kernels.h, which the trainer reuses where
// they compute the same thing (embedding_gather, gather_rows, moe_group, convert_to_act). Plain
// C++ (tests call them). Each launcher checks its arguments (kInvalidArgument naming it) and the
// launch (kDeviceError naming the kernel), and enqueues on `stream` without synchronising.
//
// "act" buffers hold the activation dtype t (bf16 or f32), as in kernels.h; everything else is
// f32 unless said. Shapes: NT = B*S rows (B sequences of S positions, all from position 0), H
// hidden, NH/NKV heads of D, QKV = (NH + 2 NKV) D, E experts, K per row, A = NT*K assignments in
// expert-grouped order (moe_group), I intermediate, V vocabulary. Attention tensors are
// head-major, [B, NH, S, D] (k and v repeated per query head); scores and probabilities are
// query tiles [B, NH, nq, nk] (AttnTile). The math is that of src/train/ops.h.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace mind4::cuda {

// ---- train_norm.cu
// y act [NT, H] = x / rms(x) * g, rstd [NT]. When add is given, x += add ([H], a bias) first
// (written back: x is then the residual stream the backward sees).
void train_rmsnorm_fwd(ActType t, float* x, const float* add, const float* g, int NT, int H,
                       float eps, void* y, float* rstd, cudaStream_t stream);
// dx [NT, H] (= or += per accumulate) from dy [NT, H]: rstd*dy*g - x*rstd^3/H*sum(dy*g*x).
void train_rmsnorm_bwd(const float* x, const float* g, const float* rstd, const float* dy, int NT,
                       int H, bool accumulate, float* dx, cudaStream_t stream);
// The backward above together with the column sums over the same rows: scale_grad [H] += sum_r
// dy * x * rstd (the norm scale's gradient), dx_sum [H] += sum_r of the new dx when given (the
// bias gradient of the product whose output joined the residual there), and dx_act act [NT, H] =
// the new dx rounded when given. One pass over the rows where H is a multiple of 128 up to 1024
// and the rows are 16-byte aligned, else the separate kernels; fixed order either way. partial:
// train_colsum_scratch_floats(H, 1) floats.
void train_rmsnorm_bwd_sums(ActType t, const float* x, const float* g, const float* rstd,
                            const float* dy, int NT, int H, bool accumulate, float* dx,
                            float* scale_grad, float* dx_sum, void* dx_act, float* partial,
                            cudaStream_t stream);
// out[j] += sum over rows r < R of a[r*lda + j] (times x[r*N + j] * rstd[r] when x is given: the
// norm scale's gradient), j < N, in a fixed order (partial sums over chunks of rows, then the
// chunks in order): the same bits every run. partial: train_colsum_scratch_floats(N, 1) floats.
void train_colsum(ActType t, const void* a, int64_t lda, int R, int N, const float* x,
                  const float* rstd, float* partial, float* out, cudaStream_t stream);
// The same per segment of rows, in one launch pair: out[e*N + j] += sum over seg[e] <= r <
// seg[e + 1] of a[r*lda + j], e < segments. seg: segments + 1 offsets on the device; max_rows: the
// largest segment (it sets the chunks). partial: train_colsum_scratch_floats(N, segments) floats.
void train_colsum_segments(ActType t, const void* a, int64_t lda, const int* seg, int segments,
                           int max_rows, int N, float* partial, float* out, cudaStream_t stream);
int64_t train_colsum_scratch_floats(int N, int segments);

// ---- train_attention.cu
// qkv f32 [NT, QKV] (the GEMM output) + bias -> RoPE on q and k (tables [S, D/2]) -> q act
// [B, NH, S, D] and k, v act [B, NH, S, D]: each KV head written for each of the NH/NKV query
// heads of its group, so that every product is a plain strided batch over (sequence, head).
void train_qkv_rope_fwd(ActType t, const float* qkv, const float* bias, const float* cos_table,
                        const float* sin_table, int B, int S, int NH, int NKV, int D, void* q,
                        void* k, void* v, cudaStream_t stream);
// The transpose: dq, dk, dv f32 [B, NH, S, D] (dk, dv per query head) -> dqkv act [NT, QKV], the
// KV heads' gradients summed over their group, the rotation's transpose applied to q and k.
void train_rope_bwd(ActType t, const float* dq, const float* dk, const float* dv,
                    const float* cos_table, const float* sin_table, int B, int S, int NH, int NKV,
                    int D, void* dqkv, cudaStream_t stream);
// A query tile: queries q0 .. q0 + nq - 1 against keys k0 .. k0 + nk - 1 (the keys those queries
// can see, so that causal and windowed attention skip what is masked). Score, P, dP and dS
// tiles are [B, NH, nq, nk].
struct AttnTile {
  int q0, nq, k0, nk;
  bool valid(int S) const {
    return q0 >= 0 && nq > 0 && q0 + nq <= S && k0 >= 0 && nk > 0 && k0 + nk <= S;
  }
};
// scores and dP hold q.k and dO.v as the products wrote them: act (bf16 in bf16 mode, as
// PyTorch's autocast does; the softmax itself is f32).
// Per row (b, h, s): P act = softmax over (scale * scores[keys], sinks[h]) with keys
// [first(s), s] (first = s - window + 1 when window > 0), 0 elsewhere in the tile; lse
// [B, NH, S] = log of the denominator.
void train_attn_softmax_fwd(ActType t, const void* scores, const float* sinks, int B, int NH, int S,
                            AttnTile tile, int window, float scale, void* P, float* lse,
                            cudaStream_t stream);
// out act [NT, NH D] from o act [B, NH, S, D].
void train_heads_to_rows(ActType t, const void* o, int B, int NH, int S, int D, void* out,
                         cudaStream_t stream);
// From dout f32 [NT, NH D] and the forward's out act [NT, NH D]: dO act head-major, delta
// [B, NH, S] = dO . out, sink_terms [B, NH, S] = exp(sinks[h] - lse) * delta.
void train_attn_bwd_prep(ActType t, const float* dout, const void* out, const float* sinks,
                         const float* lse, int B, int NH, int S, int D, void* dO, float* delta,
                         float* sink_terms, cudaStream_t stream);
// P act = exp(scale * scores - lse) on the row's keys (0 elsewhere in the tile), dS act =
// P (dP - delta) scale.
void train_attn_softmax_bwd(ActType t, const void* scores, const void* dP, const float* lse,
                            const float* delta, int B, int NH, int S, AttnTile tile, int window,
                            float scale, void* P, void* dS, cudaStream_t stream);
// The same dS from the forward's P kept (act, the tile as train_attn_softmax_fwd wrote it).
void train_attn_dsoftmax(ActType t, const void* P, const void* dP, const float* delta, int B,
                         int NH, int S, AttnTile tile, float scale, void* dS, cudaStream_t stream);
// dsinks[h] -= sum over (b, s) of sink_terms, in a fixed order.
void train_sink_grad(const float* sink_terms, int B, int NH, int S, float* dsinks,
                     cudaStream_t stream);

// ---- train_flash.cu: fused attention on tensor cores (bf16, head dimension 64; the cuBLAS
// route above serves float32 and other head dimensions). Packed layout: qkv act [NT, QKV] holds
// per row the NH query heads, then the NKV key heads, then the NKV value heads (train/ops.h's
// AttnShape); lse and delta are f32 [NT, NH].
bool train_flash_supported(ActType t, int D);
// qkv f32 [NT, QKV] (the GEMM output) + bias -> RoPE on q and k -> out act [NT, QKV] packed.
void train_qkv_rope_packed(ActType t, const float* qkv, const float* bias, const float* cos_table,
                           const float* sin_table, int B, int S, int NH, int NKV, int D, void* out,
                           cudaStream_t stream);
// The transpose: dqkv f32 [NT, QKV] packed -> out act [NT, QKV], the rotation's transpose applied
// to the q and k heads.
void train_rope_packed_bwd(ActType t, const float* dqkv, const float* cos_table,
                           const float* sin_table, int B, int S, int NH, int NKV, int D, void* out,
                           cudaStream_t stream);
// out act [NT, NH D] = attention of train/ops.h's attention_fwd (sink in the denominator with
// value zero, causal, window = the last `window` keys when > 0, GQA), lse [NT, NH].
void train_flash_attention_fwd(ActType t, const void* qkv, const float* sinks, int B, int S, int NH,
                               int NKV, int D, int window, float scale, void* out, float* lse,
                               cudaStream_t stream);
// Floats of the backward's scratch: delta [NT, NH] and the sink reduction's partial sums.
int64_t train_flash_bwd_scratch_floats(int B, int S, int NH);
// Gradients of train_flash_attention_fwd from dout act [NT, NH D] and the forward's out and lse:
// dqkv f32 [NT, QKV] packed (written whole: dq, and dk, dv summed over each group's heads), and
// dsinks [NH] -= sum over rows of exp(sink - lse) dout . out (in a fixed order). dq is summed with
// atomics, so its last bits vary from run to run.
void train_flash_attention_bwd(ActType t, const void* qkv, const void* out, const void* dout,
                               const float* lse, const float* sinks, int B, int S, int NH, int NKV,
                               int D, int window, float scale, float* dqkv, float* dsinks,
                               float* scratch, cudaStream_t stream);

// ---- train_moe.cu
// Router: logits [NT, E] + bias -> experts int [NT, K] (largest first, ties: lower index),
// weights [NT, K] = softmax over them, probs [NT, E] = softmax over all E. E <= 256.
void train_router_fwd(const float* logits, const float* bias, int NT, int E, int K, int* experts,
                      float* weights, float* probs, cudaStream_t stream);
// h act [A, 2I] (GEMM output) + bias [E, 2I] of each assignment's expert -> h_saved act (the
// biased pre-activation, kept for the backward) and act_out act [A, I] = clamped SwiGLU.
void train_swiglu_fwd(ActType t, const void* h, const float* bias, const int* group_expert, int A,
                      int I, float limit, void* h_saved, void* act_out, cudaStream_t stream);
// dh act [A, 2I] from h_saved act and dact act [A, I].
void train_swiglu_bwd(ActType t, const void* h_saved, const void* dact, int A, int I, float limit,
                      void* dh, cudaStream_t stream);
// xout [NT, H] = xmid + sum over slots s (in order) of weights[r, s] * (y[assign_at] + bias[e]),
// y act [A, H], bias [E, H], e = experts[r, s].
void train_moe_combine_fwd(ActType t, const float* xmid, const void* y, const float* bias,
                           const int* experts, const int* assign_at, const float* weights, int NT,
                           int K, int H, float* xout, cudaStream_t stream);
// dweights [NT, K] = dx . (y + bias), dy act [A, H] = weight * dx.
void train_moe_combine_bwd(ActType t, const float* dx, const void* y, const float* bias,
                           const int* experts, const int* assign_at, const float* weights, int NT,
                           int K, int H, float* dweights, void* dy, cudaStream_t stream);
// dlogits act [NT, E] = the top-k softmax's backward from dweights, plus (aux_scale > 0) the
// load-balancing term through probs with the gradient aux_scale * count_e / NT per expert
// (count_e = offsets[e+1] - offsets[e]); dt [NT, H] = sum over slots of dxe act [A, H], plus,
// when gate_w act [E, H] is given (E <= train_router_fold_max_experts), dlogits gate_w (the
// router product's input gradient).
constexpr int train_router_fold_max_experts = 32;
void train_router_bwd(ActType t, const int* experts, const float* weights, const float* dweights,
                      const float* probs, const int* offsets, float aux_scale, const void* dxe,
                      const int* assign_at, int NT, int E, int K, int H, const void* gate_w,
                      void* dlogits, float* dt, cudaStream_t stream);

// Spreads moe_group's grouping out to padded expert segments (each starting at poffsets[e], a
// multiple of the products' row tile, so that cuBLAS sees few distinct shapes): for each
// assignment i of expert e = experts[i], assign_at[i] moves from offsets[e] + j to poffsets[e] + j
// (in place), and group_row / group_expert [poffsets[E]] get its row and expert there. Rows of
// the gaps must be set beforehand (to 0: row 0 of expert 0, any valid row will do).
// The experts' segments (train_segments.cuh) on the GPU: poffsets [E + 1] from offsets [E + 1].
void train_expert_segments(const int* offsets, int E, int tile, int uniform_max, int* poffsets,
                           cudaStream_t stream);
void train_pad_groups(const int* experts, const int* offsets, const int* poffsets, int A, int K,
                      int* assign_at, int* group_row, int* group_expert, cudaStream_t stream);

// ---- train_bias_sums.cu: the expert bias gradients summed by the kernels that write the rows.
// seg: segments + 1 offsets of the experts' segments of grouped rows on the device (A =
// host_seg[segments] rows), host_seg the same on the host (it picks the path and sizes the
// launches: nothing waits for the device). partial: train_colsum_scratch_floats(N, segments)
// floats, N the row width (2I, H). The fused path sums each chunk of rows (64 to 256 for the
// SwiGLU, 32 to 256 for the combine) as it stores them and needs every non-empty segment to start
// on a multiple of the chunk (the trainer's start on multiples of 256), 16-byte rows and pointers;
// elsewhere the plain kernel runs, then train_colsum_segments. Either way the sums add the stored
// values (bf16-rounded in bf16) in a fixed order: the same bits every run (the two paths' orders
// differ). The *_fused predicates say which path a call with these arguments takes.
//
// train_swiglu_bwd over the A grouped rows, and dbias [segments, 2I] += per segment the column
// sums of dh.
void train_swiglu_bwd_bias(ActType t, const void* h_saved, const void* dact, int I, float limit,
                           const int* seg, const int* host_seg, int segments, void* dh,
                           float* partial, float* dbias, cudaStream_t stream);
bool train_swiglu_bwd_bias_fused(const void* h_saved, const void* dact, int I, const int* host_seg,
                                 int segments, const void* dh);
// train_moe_combine_bwd with dy act [A, H] written whole (the rows of a segment past its
// offsets[e + 1] - offsets[e] assignments are 0: nothing to zero beforehand), and dbias
// [segments, H] += per segment the column sums of dy. offsets [segments + 1] and group_row [A] as
// moe_group and train_pad_groups left them; a row's experts must be distinct (the fused path finds
// an assignment's slot by its expert).
void train_moe_combine_bwd_bias(ActType t, const float* dx, const void* y, const float* bias,
                                const int* experts, const int* assign_at, const float* weights,
                                const int* offsets, const int* group_row, int NT, int K, int H,
                                const int* seg, const int* host_seg, int segments, float* dweights,
                                void* dy, float* partial, float* dbias, cudaStream_t stream);
bool train_moe_combine_bwd_bias_fused(const float* dx, const void* y, const float* bias, int H,
                                      const int* host_seg, int segments, const void* dy);

// ---- train_loss.cu
// Per row of logits act [NT, V] (bf16 in bf16 mode, as autocast; the softmax is f32): row_loss =
// logsumexp(logits) - logits[target]; when dlogits (act [NT, V]) is given it receives
// (softmax - onehot(target)) * scale.
void train_cross_entropy(ActType t, const void* logits, const int* targets, int NT, int V,
                         float scale, float* row_loss, void* dlogits, cudaStream_t stream);
// grad_table [V, H] += dx [NT, H] at each row's token (atomics: the order of additions to a
// repeated token's row varies).
void train_embedding_bwd(const float* dx, const int* tokens, int NT, int H, float* grad_table,
                         cudaStream_t stream);

// ---- train_optim.cu
// partial double [train_sumsq_blocks] = partial sums of g^2 (the host adds them in order).
constexpr int train_sumsq_blocks = 1024;
void train_sumsq(const float* g, int64_t n, double* partial, cudaStream_t stream);
// AdamW as optimizer.cpp with g scaled by grad_coef first (clipping; 1 = none): decay_chunks
// [n/16] marks 16-float chunks under weight decay. p_act (bf16, or null) receives a copy of p.
struct AdamWStep {
  float grad_coef, step_size, bc2_sqrt, decay, eps, beta1, beta2;
};
void train_adamw(float* p, const float* g, float* m, float* v, const uint8_t* decay_chunks,
                 int64_t n, AdamWStep s, void* p_bf16, cudaStream_t stream);

// ---- GEMM through cuBLAS in row-major terms: C [M, N] = op(A) op(B) + beta C (batch strided
// products when batch > 1), op(A) [M, K] is A stored [M, K] (transA false) or [K, M]; op(B)
// [K, N] is B stored [K, N] or [N, K] (transB). A and B of dtype t; C f32 when c_f32, else t.
// f32 accumulation; in f32 no TF32. `what` names the product in a cuBLAS error.
struct GemmArg {
  const void* p;
  int64_t ld, stride;
  bool trans;
};
void train_gemm(cublasHandle_t blas, ActType t, int M, int N, int K, GemmArg a, GemmArg b,
                float beta, void* c, bool c_f32, int64_t ldc, int64_t stride_c, int batch,
                const char* what);

}  // namespace mind4::cuda
