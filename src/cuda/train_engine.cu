// The CUDA training engine: the model of src/train/model.cpp on the GPU, over the same flat
// ParamLayout. fp32 master weights, gradients and AdamW m/v live on the GPU; with dtype bfloat16
// a bf16 copy of the weights (refreshed by the AdamW kernel) and bf16 activations feed cuBLAS
// (fp32 accumulation) and the products write bf16 (as under PyTorch's autocast), while the
// residual stream, norm statistics, softmaxes, the loss, the gradients of the parameters and every
// reduction stay fp32. With float32 everything is fp32 and TF32 stays off, so the engine can be
// checked tightly against the CPU.
//
// Attention materialises the scores of each (sequence, head) as strided-batched cuBLAS products,
// one query tile at a time over only the keys that tile can see (causal: the keys up to its last
// query; sliding window: the window before its first query), so masked blocks are mostly not
// computed. The backward reuses each layer's probabilities when they fit (kKeepProbsBytes), else
// recomputes them from the saved log-sum-exp. In bf16 with head dimension 64 (the default, unless
// MIND4_CUDA_TRAIN_FLASH=0) attention runs instead as fused tensor-core tiles (train_flash.cu) on
// the packed qkv rows: no scores in memory, no per-query-head copies of k and v.
// Experts are grouped by moe_group; the group sizes come back to the host once per layer (the
// products' row counts), and the backward reuses them. When no expert has more than 1.25x its even
// share of rows, every expert gets a segment of the same (rounded) size and each of the six
// products of a layer is one strided-batched cuBLAS call over all experts; otherwise each expert's
// segment is its own rounded size and the products run one expert at a time.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/ops.h"
#include "cuda/buffer.h"
#include "cuda/ceilings.h"
#include "cuda/profiler.h"
#include "cuda/train_kernels.h"
#include "cuda/train_segments.cuh"
#include "mind4/status.h"
#include "train/engine.h"
#include "train/ops.h"

namespace mind4::train {
namespace {

using cuda::ActType;
using cuda::DeviceBuffer;

// Each expert's rows start at a multiple of this in the grouped buffers and its products run over
// a whole number of tiles (the gap rows are zero where they could reach a gradient). cuBLAS picks
// its kernel per shape, and a shape it has not seen costs a heuristic query on the host (measured:
// per-expert products of exact row counts made the experts 57% of the step, host-bound); rounded
// counts repeat, so the choice comes from its cache.
constexpr int kExpertRowTile = 256;
// Uniform expert segments hold up to this multiple of the even share of rows (A / E). Batched
// products fill the GPU where one expert's do not (a weight gradient of 768 x 1024 is 48 output
// tiles of 128 x 128 on 132 SMs, 384 for eight experts at once); the padding costs the rows between
// each expert's count and the largest.
constexpr double kExpertUniformSlack = 1.25;
// The attention probabilities of every layer are kept for the backward (one product, one pass over
// the scores and one write of P fewer per tile) when all of them take at most this; beyond it
// (long sequences) the backward recomputes them.
constexpr int64_t kKeepProbsBytes = int64_t(8) << 30;

struct CudaTrainLayer {
  // q, k, v: the cuBLAS route's head-major tensors; qkv: the fused route's packed rows.
  DeviceBuffer xin, rstd1, t1, q, k, v, qkv, lse, attn, xmid, rstd2, t2, probs, topk_e, topk_w,
      offsets, poffsets, group_row, group_expert, assign_at, xe, h, act, y, probs_kept;
  std::vector<int> host_offsets;   // [E + 1], from the forward
  std::vector<int> host_poffsets;  // [E + 1]: the padded segments (kExpertRowTile rows)
  int expert_capacity = 0;         // rows of every segment when uniform, else 0
};

// An operand of the experts' products. Expert e's matrix starts `stride` elements after expert
// e - 1's for weights and their gradients; grouped rows (stride 0) start at the expert's segment,
// ld elements a row.
struct ExpertArg {
  const void* base;
  int64_t ld;
  bool trans;
  int64_t stride;
  int64_t elem;  // bytes per element
};

class CudaTrainEngine final : public TrainEngine {
 public:
  CudaTrainEngine(const TrainConfig& cfg, const ParamLayout& layout, CudaTrainOptions opts);
  void zero_grads() override;
  LossParts accumulate(const int* tokens, const int* targets, float grad_scale) override;
  double clip_and_update(double max_norm, double lr) override;
  double eval_loss(const int* tokens, const int* targets) override;
  void read_state(float* params, float* m, float* v) override;
  void write_state(const float* params, const float* m, const float* v, int64_t step) override;
  void read_grads(float* grads) override;
  void synchronize() override { cuda::check(cudaStreamSynchronize(st()), "training step"); }
  double peak_flops() override;
  std::string describe() const override;

 private:
  LossParts run(const int* tokens, const int* targets, bool grads, float grad_scale);
  std::vector<cuda::AttnTile> attn_tiles(int window) const {
    std::vector<cuda::AttnTile> tiles;
    for (int q0 = 0; q0 < S_; q0 += tile_) {
      const int nq = std::min(tile_, S_ - q0);
      const int k0 = window > 0 ? std::max(0, q0 - window + 1) : 0;
      tiles.push_back({q0, nq, k0, q0 + nq - k0});
    }
    return tiles;
  }
  void forward_layer(int l, float* xout);
  void forward_attention_tiles(int l, int window, float scale);
  void backward_layer(int l, float grad_scale);
  void backward_attention_tiles(int l, int window, float scale);
  // Weights as the GEMMs read them (the bf16 copy in bf16 mode) and fp32 views.
  const void* w(int64_t off) const {
    return bf16_ ? static_cast<const void*>(wbf_.data<uint16_t>() + off)
                 : static_cast<const void*>(p32_.data<float>() + off);
  }
  const float* p(int64_t off) const { return p32_.data<float>() + off; }
  float* g(int64_t off) { return g32_.data<float>() + off; }
  // An act buffer's element i.
  void* at(const DeviceBuffer& b, int64_t i) const {
    return b.data<char>() + i * cuda::act_size(t_);
  }
  DeviceBuffer act(int64_t n, const char* what) const {
    return DeviceBuffer(size_t(n) * cuda::act_size(t_), what);
  }
  // One row-major product (train_gemm, no batch).
  void mm(int M, int N, int K, const void* a, int64_t lda, bool ta, const void* b, int64_t ldb,
          bool tb, float beta, void* c, bool c_f32, int64_t ldc, const char* what) {
    cuda::train_gemm(blas_.get(), t_, M, N, K, {a, lda, 0, ta}, {b, ldb, 0, tb}, beta, c, c_f32,
                     ldc, 0, 1, what);
  }
  // C_e = op(A_e) op(B_e) for every expert e; a dimension given as kRows is the expert's row count.
  static constexpr int kRows = -1;
  void experts_mm(const CudaTrainLayer& a, int M, int N, int K, ExpertArg x, ExpertArg y,
                  float beta, ExpertArg c, bool c_f32, const char* what);
  ExpertArg rows(const DeviceBuffer& b, int64_t ld, bool trans = false) const {
    return {b.data(), ld, trans, 0, cuda::act_size(t_)};
  }
  ExpertArg weights(int64_t off, int64_t ld, int64_t per_expert, bool trans) const {
    return {w(off), ld, trans, per_expert, cuda::act_size(t_)};
  }
  ExpertArg grads(int64_t off, int64_t ld, int64_t per_expert) {
    return {g(off), ld, false, per_expert, 4};
  }
  void colsum(ActType t, const void* a, int64_t lda, int R, int N, float* out,
              const float* x = nullptr, const float* rstd = nullptr) {
    cuda::train_colsum(t, a, lda, R, N, x, rstd, colsum_partial_.data<float>(), out, st());
  }
  // dx (+)= the RMSNorm backward of dt_ at rows x, with the norm scale's gradient (and, when
  // asked, the bias gradient of dx's column sums and dx rounded to act) in the same pass.
  void norm_bwd(const float* x, const float* scale, const float* rstd, bool accumulate, float* dx,
                float* scale_grad, float* dx_sum = nullptr, void* dx_act = nullptr) {
    cuda::train_rmsnorm_bwd_sums(t_, x, scale, rstd, dt_.data<float>(), NT_, H_, accumulate, dx,
                                 scale_grad, dx_sum, dx_act, colsum_partial_.data<float>(), st());
  }
  cudaStream_t st() const { return stream_.get(); }

  ParamLayout layout_;
  ModelConfig c_;
  AdamWConfig adamw_;
  float aux_coef_;
  int B_, S_, NT_, H_, D_, NH_, NKV_, E_, K_, I_, V_, L_, QKV_, A_;
  int A_max_;  // grouped rows with padding: A + E (kExpertRowTile - 1)
  int tile_;   // attention query tile
  bool keep_probs_;
  bool flash_;              // fused attention (train_flash.cu)
  int expert_batch_;        // uniform expert segments allowed: 1 yes, 0 no
  int expert_uniform_max_;  // the largest uniform segment (rows) that fits the grouped buffers
  std::string flash_note_;  // why the fused attention was asked for and does not run
  bool bf16_;
  ActType t_;
  int64_t step_ = 0;
  double peak_ = 0.0;
  std::string device_name_;

  cuda::Stream stream_;
  cuda::BlasHandle blas_;
  cuda::Event offsets_ready_;  // the expert group sizes have reached host_offsets_
  DeviceBuffer p32_, g32_, m32_, v32_, wbf_, decay_, cos_, sin_, tokens_, targets_;
  std::vector<CudaTrainLayer> layers_;
  DeviceBuffer xf_, rstdf_, tf_, logits_, dlogits_, row_loss_, probsum_;
  DeviceBuffer qkvf_, glog_, hf_, scores_, pa_, oh_, active_;
  DeviceBuffer dx_, dxa_, dt_, dw_, dy_, dact_, dh_, dxe_, dglog_, dattn_, dOh_, delta_, sinkt_,
      dP_, dS_, dqh_, dkh_, dvh_, dqkv_, colsum_partial_, sumsq_;
  DeviceBuffer dOb_, dqkvf_, flash_scratch_;  // the fused route's backward
  cuda::StepProfiler prof_;  // MIND4_CUDA_PROFILE=1: GPU time per phase of the step
  cuda::PinnedBuffer host_loss_, host_probsum_, host_sumsq_, host_offsets_;
};

CudaTrainEngine::CudaTrainEngine(const TrainConfig& cfg, const ParamLayout& layout,
                                 CudaTrainOptions opts)
    : layout_(layout),
      c_(layout.config),
      adamw_(cfg.adamw),
      aux_coef_(cfg.aux_loss_coef),
      tile_(opts.attn_tile > 0 ? opts.attn_tile : 256) {
  B_ = cfg.micro_batch, S_ = cfg.seq_len, NT_ = B_ * S_;
  H_ = c_.hidden_size, D_ = c_.head_dim, NH_ = c_.num_attention_heads;
  NKV_ = c_.num_key_value_heads, E_ = c_.num_experts, K_ = c_.experts_per_token;
  I_ = c_.intermediate_size, V_ = c_.vocab_size, L_ = c_.num_hidden_layers;
  QKV_ = (NH_ + 2 * NKV_) * D_, A_ = NT_ * K_;
  expert_uniform_max_ =
      int(std::ceil(kExpertUniformSlack * A_ / E_ / kExpertRowTile)) * kExpertRowTile;
  A_max_ = std::max(A_ + E_ * (kExpertRowTile - 1), E_ * expert_uniform_max_);
  bf16_ = cfg.execution.dtype == ActivationDType::kBFloat16;
  t_ = bf16_ ? ActType::kBF16 : ActType::kF32;
  MIND4_CHECK(cfg.execution.dtype != ActivationDType::kFloat16, Status::kUnsupported, cfg.source,
              ": execution.dtype float16 is not a training dtype");
  // Fused attention wherever it is built (bf16, head_dim 64) unless switched off; asking for it
  // explicitly where it is not built says so in describe().
  const char* flash_env = std::getenv("MIND4_CUDA_TRAIN_FLASH");
  const int flash_switch =
      opts.flash >= 0 ? opts.flash : (flash_env ? (std::strcmp(flash_env, "0") == 0 ? 0 : 1) : -1);
  const bool flash_asked = flash_switch == 1;
  flash_ = flash_switch != 0 && cuda::train_flash_supported(t_, D_);
  if (flash_asked && !flash_)
    flash_note_ = std::string(", fused attention asked for but not built for ") +
                  (bf16_ ? "head_dim " + std::to_string(D_) : std::string("float32")) +
                  " (bfloat16 with head_dim 64 only): cuBLAS attention";
  const char* batch_env = std::getenv("MIND4_CUDA_TRAIN_EXPERT_BATCH");
  expert_batch_ =
      opts.expert_batch >= 0 ? opts.expert_batch : !(batch_env && std::strcmp(batch_env, "0") == 0);
  cudaDeviceProp prop{};
  cuda::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  device_name_ = prop.name;
  cuda::check(cublasSetStream(blas_.get(), st()), "cublasSetStream");
  // Plain fp32 products in float32 mode: no TF32 (the CPU comparison is tight).
  cuda::check(cublasSetMathMode(blas_.get(), CUBLAS_DEFAULT_MATH), "cublasSetMathMode");

  const int64_t n = layout_.total;
  p32_ = DeviceBuffer(n * 4, "training master weights");
  g32_ = DeviceBuffer(n * 4, "training gradients");
  m32_ = DeviceBuffer(n * 4, "AdamW m");
  v32_ = DeviceBuffer(n * 4, "AdamW v");
  if (bf16_) wbf_ = DeviceBuffer(n * 2, "bf16 weight copy");
  std::vector<uint8_t> decay(size_t(n / 16), 0);
  for (const auto& tn : layout_.tensors)
    if (tn.decay)
      for (int64_t ch = tn.offset / 16; ch < (tn.offset + tn.numel + 15) / 16; ++ch) decay[ch] = 1;
  decay_ = DeviceBuffer(decay.size(), "AdamW decay mask");
  cuda::check(cudaMemcpy(decay_.data(), decay.data(), decay.size(), cudaMemcpyHostToDevice),
              "upload decay mask");
  std::vector<float> cs(size_t(S_) * (D_ / 2)), sn(cs.size());
  cpu::rope_tables(c_, S_, cs.data(), sn.data());
  cos_ = DeviceBuffer(cs.size() * 4, "rope cos");
  sin_ = DeviceBuffer(sn.size() * 4, "rope sin");
  cuda::check(cudaMemcpy(cos_.data(), cs.data(), cs.size() * 4, cudaMemcpyHostToDevice), "rope");
  cuda::check(cudaMemcpy(sin_.data(), sn.data(), sn.size() * 4, cudaMemcpyHostToDevice), "rope");
  tokens_ = DeviceBuffer(size_t(NT_) * 4, "tokens");
  targets_ = DeviceBuffer(size_t(NT_) * 4, "targets");

  const int64_t NT = NT_, A = A_, AP = A_max_;
  auto probs_elems = [&](int l) {
    int64_t n = 0;
    for (const cuda::AttnTile& tl : attn_tiles(layer_window(c_, l)))
      n += int64_t(B_) * NH_ * tl.nq * tl.nk;
    return n;
  };
  int64_t probs_bytes = 0;
  for (int l = 0; l < L_; ++l) probs_bytes += probs_elems(l) * cuda::act_size(t_);
  keep_probs_ =
      !flash_ && (opts.keep_probs == 1 || (opts.keep_probs < 0 && probs_bytes <= kKeepProbsBytes));
  layers_.resize(L_);
  for (auto& a : layers_) {
    a.xin = DeviceBuffer(NT * H_ * 4, "layer input");
    a.rstd1 = DeviceBuffer(NT * 4, "rstd");
    a.t1 = act(NT * H_, "attention norm output");
    if (flash_) {
      a.qkv = act(NT * QKV_, "qkv (after bias and RoPE)");
    } else {
      a.q = act(NT * NH_ * D_, "q");
      a.k = act(NT * NH_ * D_, "k (per query head)");
      a.v = act(NT * NH_ * D_, "v (per query head)");
    }
    a.lse = DeviceBuffer(NT * NH_ * 4, "attention lse");
    a.attn = act(NT * NH_ * D_, "attention output");
    a.xmid = DeviceBuffer(NT * H_ * 4, "residual after attention");
    a.rstd2 = DeviceBuffer(NT * 4, "rstd");
    a.t2 = act(NT * H_, "moe norm output");
    a.probs = DeviceBuffer(NT * E_ * 4, "router probabilities");
    a.topk_e = DeviceBuffer(A * 4, "router experts");
    a.topk_w = DeviceBuffer(A * 4, "router weights");
    a.offsets = DeviceBuffer((E_ + 1) * 4, "expert offsets");
    a.poffsets = DeviceBuffer((E_ + 1) * 4, "padded expert offsets");
    a.group_row = DeviceBuffer(AP * 4, "group rows");
    a.group_expert = DeviceBuffer(AP * 4, "group experts");
    a.assign_at = DeviceBuffer(A * 4, "assignment positions");
    a.xe = act(AP * H_, "expert inputs");
    a.h = act(AP * 2 * I_, "expert pre-activations");
    a.act = act(AP * I_, "expert activations");
    a.y = act(AP * H_, "expert outputs");
    a.host_offsets.assign(E_ + 1, 0);
    a.host_poffsets.assign(E_ + 1, 0);
  }
  if (keep_probs_)
    for (int l = 0; l < L_; ++l) layers_[l].probs_kept = act(probs_elems(l), "attention P (kept)");
  // The cuBLAS route's score tiles (none with the fused attention).
  const int64_t scores = flash_ ? 0 : int64_t(B_) * NH_ * S_ * S_;
  xf_ = DeviceBuffer(NT * H_ * 4, "final residual");
  rstdf_ = DeviceBuffer(NT * 4, "rstd");
  tf_ = act(NT * H_, "final norm output");
  logits_ = act(NT * V_, "logits");
  dlogits_ = act(NT * V_, "logit gradients");
  row_loss_ = DeviceBuffer(NT * 4, "row losses");
  probsum_ = DeviceBuffer(int64_t(L_) * E_ * 4, "router probability sums");
  qkvf_ = DeviceBuffer(NT * QKV_ * 4, "qkv");
  glog_ = DeviceBuffer(NT * E_ * 4, "router logits");
  hf_ = act(AP * 2 * I_, "expert mlp1 output");
  scores_ = act(scores, "attention scores");
  pa_ = act(scores, "attention probabilities");
  if (!flash_) oh_ = act(NT * NH_ * D_, "attention output (head-major)");
  active_ = DeviceBuffer((E_ + 1) * 4, "active experts");
  dx_ = DeviceBuffer(NT * H_ * 4, "dx");
  dxa_ = act(NT * H_, "dx (act)");
  dt_ = DeviceBuffer(NT * H_ * 4, "dt");
  dw_ = DeviceBuffer(A * 4, "router weight gradients");
  dy_ = act(AP * H_, "expert output gradients");
  dact_ = act(AP * I_, "expert activation gradients");
  dh_ = act(AP * 2 * I_, "expert pre-activation gradients");
  dxe_ = act(AP * H_, "expert input gradients");
  dglog_ = act(NT * E_, "router logit gradients");
  if (flash_) {
    dOb_ = act(NT * NH_ * D_, "attention output gradients (act)");
    dqkvf_ = DeviceBuffer(NT * QKV_ * 4, "dqkv (f32, before RoPE's transpose)");
    flash_scratch_ =
        DeviceBuffer(cuda::train_flash_bwd_scratch_floats(B_, S_, NH_) * 4, "attention delta");
  } else {
    dattn_ = DeviceBuffer(NT * NH_ * D_ * 4, "attention output gradients");
    dOh_ = act(NT * NH_ * D_, "attention output gradients (head-major)");
    delta_ = DeviceBuffer(NT * NH_ * 4, "attention delta");
    sinkt_ = DeviceBuffer(NT * NH_ * 4, "sink gradient terms");
    dP_ = act(scores, "attention probability gradients");
    dS_ = act(scores, "attention score gradients");
    dqh_ = DeviceBuffer(NT * NH_ * D_ * 4, "dq");
    dkh_ = DeviceBuffer(NT * NH_ * D_ * 4, "dk (per query head)");
    dvh_ = DeviceBuffer(NT * NH_ * D_ * 4, "dv (per query head)");
  }
  dqkv_ = act(NT * QKV_, "dqkv");
  const int widest = std::max({QKV_, 2 * I_, H_, E_, NH_ * D_});
  colsum_partial_ = DeviceBuffer(cuda::train_colsum_scratch_floats(widest, E_) * 4, "colsum");
  sumsq_ = DeviceBuffer(cuda::train_sumsq_blocks * 8, "gradient norm partials");
  host_loss_ = cuda::PinnedBuffer(NT * 4);
  host_probsum_ = cuda::PinnedBuffer(int64_t(L_) * E_ * 4);
  host_sumsq_ = cuda::PinnedBuffer(cuda::train_sumsq_blocks * 8);
  host_offsets_ = cuda::PinnedBuffer((E_ + 1) * 4);
}

void CudaTrainEngine::zero_grads() {
  cuda::check(cudaMemsetAsync(g32_.data(), 0, g32_.bytes(), st()), "zero gradients");
}

// The cuBLAS route's forward attention core: per query tile, scores, softmax, P V.
void CudaTrainEngine::forward_attention_tiles(int l, int window, float scale) {
  const LayerOffsets& o = layout_.layers[l];
  CudaTrainLayer& a = layers_[l];
  const int BH = B_ * NH_;
  const int64_t sq = int64_t(S_) * D_;
  int64_t kept_at = 0;  // this tile's place in the layer's kept probabilities
  for (const cuda::AttnTile& tl : attn_tiles(window)) {
    const int64_t st_scores = int64_t(tl.nq) * tl.nk;
    void* P = keep_probs_ ? at(a.probs_kept, kept_at) : pa_.data();
    kept_at += st_scores * BH;
    cuda::train_gemm(blas_.get(), t_, tl.nq, tl.nk, D_,
                     {at(a.q, int64_t(tl.q0) * D_), D_, sq, false},
                     {at(a.k, int64_t(tl.k0) * D_), D_, sq, true}, 0.0f, scores_.data(), false,
                     tl.nk, st_scores, BH, "attention scores");
    cuda::train_attn_softmax_fwd(t_, scores_.data(), p(o.sinks), B_, NH_, S_, tl, window, scale, P,
                                 a.lse.data<float>(), st());
    cuda::train_gemm(blas_.get(), t_, tl.nq, D_, tl.nk, {P, tl.nk, st_scores, false},
                     {at(a.v, int64_t(tl.k0) * D_), D_, sq, false}, 0.0f,
                     at(oh_, int64_t(tl.q0) * D_), false, D_, sq, BH, "attention P V");
  }
  cuda::train_heads_to_rows(t_, oh_.data(), B_, NH_, S_, D_, a.attn.data(), st());
}

void CudaTrainEngine::forward_layer(int l, float* xout) {
  const LayerOffsets& o = layout_.layers[l];
  CudaTrainLayer& a = layers_[l];
  const float eps = float(kRmsEps), scale = float(1.0 / std::sqrt(double(D_)));
  // ---- attention
  cuda::train_rmsnorm_fwd(t_, a.xin.data<float>(), nullptr, p(o.attn_norm), NT_, H_, eps,
                          a.t1.data(), a.rstd1.data<float>(), st());
  mm(NT_, QKV_, H_, a.t1.data(), H_, false, w(o.qkv_w), H_, true, 0.0f, qkvf_.data(), true, QKV_,
     "qkv forward");
  const int window = layer_window(c_, l);
  if (flash_) {
    cuda::train_qkv_rope_packed(t_, qkvf_.data<float>(), p(o.qkv_b), cos_.data<float>(),
                                sin_.data<float>(), B_, S_, NH_, NKV_, D_, a.qkv.data(), st());
    prof_.mark(st(), "fwd attn norm+qkv+rope");
    cuda::train_flash_attention_fwd(t_, a.qkv.data(), p(o.sinks), B_, S_, NH_, NKV_, D_, window,
                                    scale, a.attn.data(), a.lse.data<float>(), st());
  } else {
    cuda::train_qkv_rope_fwd(t_, qkvf_.data<float>(), p(o.qkv_b), cos_.data<float>(),
                             sin_.data<float>(), B_, S_, NH_, NKV_, D_, a.q.data(), a.k.data(),
                             a.v.data(), st());
    prof_.mark(st(), "fwd attn norm+qkv+rope");
    forward_attention_tiles(l, window, scale);
  }
  prof_.mark(st(), "fwd attn core");
  cuda::check(
      cudaMemcpyAsync(a.xmid.data(), a.xin.data(), a.xin.bytes(), cudaMemcpyDeviceToDevice, st()),
      "residual copy");
  mm(NT_, H_, NH_ * D_, a.attn.data(), NH_ * D_, false, w(o.out_w), NH_ * D_, true, 1.0f,
     a.xmid.data(), true, H_, "attention out forward");
  prof_.mark(st(), "fwd attn out");
  // ---- mixture of experts (the out bias joins the residual inside the norm kernel)
  cuda::train_rmsnorm_fwd(t_, a.xmid.data<float>(), p(o.out_b), p(o.mlp_norm), NT_, H_, eps,
                          a.t2.data(), a.rstd2.data<float>(), st());
  mm(NT_, E_, H_, a.t2.data(), H_, false, w(o.gate_w), H_, true, 0.0f, glog_.data(), true, E_,
     "router forward");
  cuda::train_router_fwd(glog_.data<float>(), p(o.gate_b), NT_, E_, K_, a.topk_e.data<int>(),
                         a.topk_w.data<float>(), a.probs.data<float>(), st());
  colsum(ActType::kF32, a.probs.data(), E_, NT_, E_, probsum_.data<float>() + int64_t(l) * E_);
  cuda::moe_group(a.topk_e.data<int>(), A_, K_, E_,
                  {a.offsets.data<int>(), active_.data<int>(), a.group_row.data<int>(),
                   a.group_expert.data<int>(), a.assign_at.data<int>()},
                  st());
  // The products' shapes need the group sizes on the host. The GPU places and gathers the rows by
  // the same rule (train_segments.cuh) meanwhile, over every row the segments can reach, so that
  // it has work queued while the host waits for the counts and then enqueues the products.
  const int uniform_max = expert_batch_ ? expert_uniform_max_ : 0;
  cuda::train_expert_segments(a.offsets.data<int>(), E_, kExpertRowTile, uniform_max,
                              a.poffsets.data<int>(), st());
  cuda::check(cudaMemcpyAsync(host_offsets_.data(), a.offsets.data(), (E_ + 1) * 4,
                              cudaMemcpyDeviceToHost, st()),
              "download expert offsets");
  cuda::check(cudaEventRecord(offsets_ready_.get(), st()), "expert offsets event");
  cuda::check(cudaMemsetAsync(a.group_row.data(), 0, size_t(A_max_) * 4, st()), "zero group rows");
  cuda::check(cudaMemsetAsync(a.group_expert.data(), 0, size_t(A_max_) * 4, st()), "zero groups");
  cuda::train_pad_groups(a.topk_e.data<int>(), a.offsets.data<int>(), a.poffsets.data<int>(), A_,
                         K_, a.assign_at.data<int>(), a.group_row.data<int>(),
                         a.group_expert.data<int>(), st());
  cuda::gather_rows(t_, a.t2.data(), a.group_row.data<int>(), A_max_, H_, a.xe.data(), st());
  cuda::check(cudaEventSynchronize(offsets_ready_.get()), "expert offsets");
  std::memcpy(a.host_offsets.data(), host_offsets_.data(), (E_ + 1) * 4);
  std::vector<int>& off = a.host_poffsets;
  const cuda::TrainSegments seg =
      cuda::train_segments(a.host_offsets.data(), E_, kExpertRowTile, uniform_max, off.data());
  a.expert_capacity = seg.capacity;
  const int AP = off[E_];
  prof_.mark(st(), "fwd router+group+sync");
  experts_mm(a, kRows, 2 * I_, H_, rows(a.xe, H_), weights(o.mlp1_w, H_, 2 * I_ * H_, true), 0.0f,
             rows(hf_, 2 * I_), false, "expert mlp1 forward");
  cuda::train_swiglu_fwd(t_, hf_.data(), p(o.mlp1_b), a.group_expert.data<int>(), AP, I_,
                         c_.swiglu_limit, a.h.data(), a.act.data(), st());
  experts_mm(a, kRows, H_, I_, rows(a.act, I_), weights(o.mlp2_w, I_, H_ * I_, true), 0.0f,
             rows(a.y, H_), false, "expert mlp2 forward");
  cuda::train_moe_combine_fwd(t_, a.xmid.data<float>(), a.y.data(), p(o.mlp2_b),
                              a.topk_e.data<int>(), a.assign_at.data<int>(), a.topk_w.data<float>(),
                              NT_, K_, H_, xout, st());
  prof_.mark(st(), "fwd experts+combine");
}

void CudaTrainEngine::experts_mm(const CudaTrainLayer& a, int M, int N, int K, ExpertArg x,
                                 ExpertArg y, float beta, ExpertArg c, bool c_f32,
                                 const char* what) {
  const std::vector<int>& off = a.host_poffsets;
  auto start = [&](const ExpertArg& arg, int e) {
    const int64_t elems = arg.stride ? e * arg.stride : off[e] * arg.ld;
    return static_cast<const char*>(arg.base) + elems * arg.elem;
  };
  if (a.expert_capacity > 0) {
    const int cap = a.expert_capacity;
    auto dim = [&](int d) { return d == kRows ? cap : d; };
    auto stride = [&](const ExpertArg& arg) { return arg.stride ? arg.stride : cap * arg.ld; };
    cuda::train_gemm(blas_.get(), t_, dim(M), dim(N), dim(K), {x.base, x.ld, stride(x), x.trans},
                     {y.base, y.ld, stride(y), y.trans}, beta, const_cast<void*>(c.base), c_f32,
                     c.ld, stride(c), E_, what);
    return;
  }
  for (int e = 0; e < E_; ++e) {
    const int cnt = off[e + 1] - off[e];
    if (!cnt) continue;
    auto dim = [&](int d) { return d == kRows ? cnt : d; };
    cuda::train_gemm(blas_.get(), t_, dim(M), dim(N), dim(K), {start(x, e), x.ld, 0, x.trans},
                     {start(y, e), y.ld, 0, y.trans}, beta, const_cast<char*>(start(c, e)), c_f32,
                     c.ld, 0, 1, what);
  }
}

// The cuBLAS route's backward attention core (after the out projection's input gradient in
// dattn_): delta and the sink gradient, then per query tile dP, dS (from the kept or recomputed
// P), dq, dk, dv, and RoPE's transpose into dqkv_.
void CudaTrainEngine::backward_attention_tiles(int l, int window, float scale) {
  const LayerOffsets& o = layout_.layers[l];
  CudaTrainLayer& a = layers_[l];
  cuda::train_attn_bwd_prep(t_, dattn_.data<float>(), a.attn.data(), p(o.sinks),
                            a.lse.data<float>(), B_, NH_, S_, D_, dOh_.data(), delta_.data<float>(),
                            sinkt_.data<float>(), st());
  cuda::train_sink_grad(sinkt_.data<float>(), B_, NH_, S_, g(o.sinks), st());
  prof_.mark(st(), "bwd attn out");
  const int BH = B_ * NH_;
  const int64_t sq = int64_t(S_) * D_;
  // dk and dv gather over the tiles whose keys overlap: zero, then accumulate.
  cuda::check(cudaMemsetAsync(dkh_.data(), 0, dkh_.bytes(), st()), "zero dk");
  cuda::check(cudaMemsetAsync(dvh_.data(), 0, dvh_.bytes(), st()), "zero dv");
  int64_t kept_at = 0;
  for (const cuda::AttnTile& tl : attn_tiles(window)) {
    const int64_t ss = int64_t(tl.nq) * tl.nk;
    const void* q = at(a.q, int64_t(tl.q0) * D_);
    const void* dO = at(dOh_, int64_t(tl.q0) * D_);
    const void* k = at(a.k, int64_t(tl.k0) * D_);
    const void* v = at(a.v, int64_t(tl.k0) * D_);
    cuda::train_gemm(blas_.get(), t_, tl.nq, tl.nk, D_, {dO, D_, sq, false}, {v, D_, sq, true},
                     0.0f, dP_.data(), false, tl.nk, ss, BH, "attention dP");
    const void* P = pa_.data();
    if (keep_probs_) {
      P = at(a.probs_kept, kept_at);
      cuda::train_attn_dsoftmax(t_, P, dP_.data(), delta_.data<float>(), B_, NH_, S_, tl, scale,
                                dS_.data(), st());
    } else {
      cuda::train_gemm(blas_.get(), t_, tl.nq, tl.nk, D_, {q, D_, sq, false}, {k, D_, sq, true},
                       0.0f, scores_.data(), false, tl.nk, ss, BH, "attention scores (backward)");
      cuda::train_attn_softmax_bwd(t_, scores_.data(), dP_.data(), a.lse.data<float>(),
                                   delta_.data<float>(), B_, NH_, S_, tl, window, scale, pa_.data(),
                                   dS_.data(), st());
    }
    kept_at += ss * BH;
    cuda::train_gemm(blas_.get(), t_, tl.nq, D_, tl.nk, {dS_.data(), tl.nk, ss, false},
                     {k, D_, sq, false}, 0.0f, dqh_.data<float>() + int64_t(tl.q0) * D_, true, D_,
                     sq, BH, "attention dq");
    cuda::train_gemm(blas_.get(), t_, tl.nk, D_, tl.nq, {dS_.data(), tl.nk, ss, true},
                     {q, D_, sq, false}, 1.0f, dkh_.data<float>() + int64_t(tl.k0) * D_, true, D_,
                     sq, BH, "attention dk");
    cuda::train_gemm(blas_.get(), t_, tl.nk, D_, tl.nq, {P, tl.nk, ss, true}, {dO, D_, sq, false},
                     1.0f, dvh_.data<float>() + int64_t(tl.k0) * D_, true, D_, sq, BH,
                     "attention dv");
  }
  cuda::train_rope_bwd(t_, dqh_.data<float>(), dkh_.data<float>(), dvh_.data<float>(),
                       cos_.data<float>(), sin_.data<float>(), B_, S_, NH_, NKV_, D_, dqkv_.data(),
                       st());
}

void CudaTrainEngine::backward_layer(int l, float grad_scale) {
  const LayerOffsets& o = layout_.layers[l];
  CudaTrainLayer& a = layers_[l];
  const float scale = float(1.0 / std::sqrt(double(D_)));
  const std::vector<int>& off = a.host_poffsets;  // padded segments (kExpertRowTile)
  float* dx = dx_.data<float>();
  // ---- mixture of experts: out = xmid + sum_s w_s (y_s + b2). The combine backward writes the
  // gap rows of dy as zeros, so nothing flows from them into the weight gradients, and adds dy's
  // column sums into the mlp2 bias gradient as it stores the rows.
  cuda::train_moe_combine_bwd_bias(t_, dx, a.y.data(), p(o.mlp2_b), a.topk_e.data<int>(),
                                   a.assign_at.data<int>(), a.topk_w.data<float>(),
                                   a.offsets.data<int>(), a.group_row.data<int>(), NT_, K_, H_,
                                   a.poffsets.data<int>(), off.data(), E_, dw_.data<float>(),
                                   dy_.data(), colsum_partial_.data<float>(), g(o.mlp2_b), st());
  experts_mm(a, H_, I_, kRows, rows(dy_, H_, true), rows(a.act, I_), 1.0f,
             grads(o.mlp2_w, I_, H_ * I_), true, "expert mlp2 weight gradient");
  experts_mm(a, kRows, I_, H_, rows(dy_, H_), weights(o.mlp2_w, I_, H_ * I_, false), 0.0f,
             rows(dact_, I_), false, "expert mlp2 input gradient");
  cuda::train_swiglu_bwd_bias(t_, a.h.data(), dact_.data(), I_, c_.swiglu_limit,
                              a.poffsets.data<int>(), off.data(), E_, dh_.data(),
                              colsum_partial_.data<float>(), g(o.mlp1_b), st());
  experts_mm(a, 2 * I_, H_, kRows, rows(dh_, 2 * I_, true), rows(a.xe, H_), 1.0f,
             grads(o.mlp1_w, H_, 2 * I_ * H_), true, "expert mlp1 weight gradient");
  experts_mm(a, kRows, H_, 2 * I_, rows(dh_, 2 * I_), weights(o.mlp1_w, H_, 2 * I_ * H_, false),
             0.0f, rows(dxe_, H_), false, "expert mlp1 input gradient");
  const float aux_scale =
      aux_coef_ != 0.0f ? float(double(grad_scale) * aux_coef_ * E_ / (double(NT_) * L_)) : 0.0f;
  // dt also gets the router product's input gradient (dlogits gate_w) from the same kernel.
  const bool router_fold = E_ <= cuda::train_router_fold_max_experts;
  cuda::train_router_bwd(
      t_, a.topk_e.data<int>(), a.topk_w.data<float>(), dw_.data<float>(), a.probs.data<float>(),
      a.offsets.data<int>(), aux_scale, dxe_.data(), a.assign_at.data<int>(), NT_, E_, K_, H_,
      router_fold ? w(o.gate_w) : nullptr, dglog_.data(), dt_.data<float>(), st());
  prof_.mark(st(), "bwd experts");
  mm(E_, H_, NT_, dglog_.data(), E_, true, a.t2.data(), H_, false, 1.0f, g(o.gate_w), true, H_,
     "router weight gradient");
  colsum(t_, dglog_.data(), E_, NT_, E_, g(o.gate_b));
  if (!router_fold)
    mm(NT_, H_, E_, dglog_.data(), E_, false, w(o.gate_w), H_, false, 1.0f, dt_.data(), true, H_,
       "router input gradient");
  // The residual's gradient dx is also the attention out bias's (its column sums) and, rounded
  // to act in bf16 mode, the out projection's gradient operand: all from the norm's pass.
  norm_bwd(a.xmid.data<float>(), p(o.mlp_norm), a.rstd2.data<float>(), true, dx, g(o.mlp_norm),
           g(o.out_b), bf16_ ? dxa_.data() : nullptr);
  prof_.mark(st(), "bwd router+norm");

  // ---- attention: xmid = xin + attn Wo^T + bo
  const void* dxa = bf16_ ? dxa_.data() : dx;
  mm(H_, NH_ * D_, NT_, dxa, H_, true, a.attn.data(), NH_ * D_, false, 1.0f, g(o.out_w), true,
     NH_ * D_, "attention out weight gradient");
  const int window = layer_window(c_, l);
  if (flash_) {
    // The input gradient straight into act (rounded once, as autocast's product output).
    mm(NT_, NH_ * D_, H_, dxa, H_, false, w(o.out_w), NH_ * D_, false, 0.0f, dOb_.data(), false,
       NH_ * D_, "attention out input gradient");
    prof_.mark(st(), "bwd attn out");
    cuda::train_flash_attention_bwd(t_, a.qkv.data(), a.attn.data(), dOb_.data(),
                                    a.lse.data<float>(), p(o.sinks), B_, S_, NH_, NKV_, D_, window,
                                    scale, dqkvf_.data<float>(), g(o.sinks),
                                    flash_scratch_.data<float>(), st());
    cuda::train_rope_packed_bwd(t_, dqkvf_.data<float>(), cos_.data<float>(), sin_.data<float>(),
                                B_, S_, NH_, NKV_, D_, dqkv_.data(), st());
  } else {
    mm(NT_, NH_ * D_, H_, dxa, H_, false, w(o.out_w), NH_ * D_, false, 0.0f, dattn_.data(), true,
       NH_ * D_, "attention out input gradient");
    backward_attention_tiles(l, window, scale);
  }
  prof_.mark(st(), "bwd attn core");
  mm(QKV_, H_, NT_, dqkv_.data(), QKV_, true, a.t1.data(), H_, false, 1.0f, g(o.qkv_w), true, H_,
     "qkv weight gradient");
  colsum(t_, dqkv_.data(), QKV_, NT_, QKV_, g(o.qkv_b));
  mm(NT_, H_, QKV_, dqkv_.data(), QKV_, false, w(o.qkv_w), H_, false, 0.0f, dt_.data(), true, H_,
     "qkv input gradient");
  norm_bwd(a.xin.data<float>(), p(o.attn_norm), a.rstd1.data<float>(), true, dx, g(o.attn_norm));
  prof_.mark(st(), "bwd qkv+norm");
}

LossParts CudaTrainEngine::run(const int* tokens, const int* targets, bool grads,
                               float grad_scale) {
  for (int r = 0; r < NT_; ++r)
    MIND4_CHECK(tokens[r] >= 0 && tokens[r] < V_ && targets[r] >= 0 && targets[r] < V_,
                Status::kTokenOutOfRange, "token ", tokens[r], " or target ", targets[r],
                " at row ", r, " is outside the vocabulary of ", V_);
  cuda::check(
      cudaMemcpyAsync(tokens_.data(), tokens, size_t(NT_) * 4, cudaMemcpyHostToDevice, st()),
      "upload tokens");
  cuda::check(
      cudaMemcpyAsync(targets_.data(), targets, size_t(NT_) * 4, cudaMemcpyHostToDevice, st()),
      "upload targets");
  prof_.begin(st(), grads ? NT_ : -NT_);
  cuda::check(cudaMemsetAsync(probsum_.data(), 0, probsum_.bytes(), st()), "zero probsum");
  float* x0 = L_ > 0 ? layers_[0].xin.data<float>() : xf_.data<float>();
  cuda::embedding_gather(ActType::kF32, p(layout_.embedding), tokens_.data<int>(), NT_, H_, x0,
                         st());
  for (int l = 0; l < L_; ++l)
    forward_layer(l, l + 1 < L_ ? layers_[l + 1].xin.data<float>() : xf_.data<float>());
  cuda::train_rmsnorm_fwd(t_, xf_.data<float>(), nullptr, p(layout_.norm), NT_, H_, float(kRmsEps),
                          tf_.data(), rstdf_.data<float>(), st());
  mm(NT_, V_, H_, tf_.data(), H_, false, w(layout_.unembedding), H_, true, 0.0f, logits_.data(),
     false, V_, "unembedding forward");
  cuda::train_cross_entropy(t_, logits_.data(), targets_.data<int>(), NT_, V_,
                            float(double(grad_scale) / NT_), row_loss_.data<float>(),
                            grads ? dlogits_.data() : nullptr, st());
  prof_.mark(st(), "logits+loss");
  if (grads) {
    mm(V_, H_, NT_, dlogits_.data(), V_, true, tf_.data(), H_, false, 1.0f, g(layout_.unembedding),
       true, H_, "unembedding weight gradient");
    mm(NT_, H_, V_, dlogits_.data(), V_, false, w(layout_.unembedding), H_, false, 0.0f, dt_.data(),
       true, H_, "unembedding input gradient");
    norm_bwd(xf_.data<float>(), p(layout_.norm), rstdf_.data<float>(), false, dx_.data<float>(),
             g(layout_.norm));
    prof_.mark(st(), "bwd logits+norm");
    for (int l = L_ - 1; l >= 0; --l) backward_layer(l, grad_scale);
    cuda::train_embedding_bwd(dx_.data<float>(), tokens_.data<int>(), NT_, H_, g(layout_.embedding),
                              st());
  }
  cuda::check(cudaMemcpyAsync(host_loss_.data(), row_loss_.data(), size_t(NT_) * 4,
                              cudaMemcpyDeviceToHost, st()),
              "download losses");
  cuda::check(cudaMemcpyAsync(host_probsum_.data(), probsum_.data(), probsum_.bytes(),
                              cudaMemcpyDeviceToHost, st()),
              "download router sums");
  prof_.mark(st(), "embedding bwd+downloads");
  cuda::check(cudaStreamSynchronize(st()), "training step");
  prof_.end();
  LossParts loss;
  const float* rl = host_loss_.data<float>();
  for (int r = 0; r < NT_; ++r) loss.ce += rl[r];
  loss.ce /= NT_;
  const float* ps = host_probsum_.data<float>();
  for (int l = 0; l < L_; ++l) {
    const std::vector<int>& off = layers_[l].host_offsets;
    double aux_l = 0.0;
    for (int e = 0; e < E_; ++e)
      aux_l += double(off[e + 1] - off[e]) / NT_ * double(ps[int64_t(l) * E_ + e]) / NT_;
    loss.aux += aux_l * E_ / L_;
  }
  return loss;
}

LossParts CudaTrainEngine::accumulate(const int* tokens, const int* targets, float grad_scale) {
  return run(tokens, targets, true, grad_scale);
}

double CudaTrainEngine::eval_loss(const int* tokens, const int* targets) {
  return run(tokens, targets, false, 1.0f).ce;
}

double CudaTrainEngine::clip_and_update(double max_norm, double lr) {
  const int64_t n = layout_.total;
  prof_.begin(st(), 0);
  cuda::train_sumsq(g32_.data<float>(), n, sumsq_.data<double>(), st());
  cuda::check(cudaMemcpyAsync(host_sumsq_.data(), sumsq_.data(), sumsq_.bytes(),
                              cudaMemcpyDeviceToHost, st()),
              "download gradient norm");
  cuda::check(cudaStreamSynchronize(st()), "gradient norm");
  double total = 0.0;
  for (int i = 0; i < cuda::train_sumsq_blocks; ++i) total += host_sumsq_.data<double>()[i];
  const double norm = std::sqrt(total);
  ++step_;
  const double b1 = adamw_.beta1, b2 = adamw_.beta2;
  const double bc1 = 1.0 - std::pow(b1, double(step_)), bc2 = 1.0 - std::pow(b2, double(step_));
  cuda::AdamWStep s;
  s.grad_coef = max_norm > 0.0 && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.0f;
  s.step_size = float(lr / bc1);
  s.bc2_sqrt = float(std::sqrt(bc2));
  s.decay = float(1.0 - lr * adamw_.weight_decay);
  s.eps = float(adamw_.eps);
  s.beta1 = float(b1);
  s.beta2 = float(b2);
  cuda::train_adamw(p32_.data<float>(), g32_.data<float>(), m32_.data<float>(), v32_.data<float>(),
                    decay_.data<uint8_t>(), n, s, bf16_ ? wbf_.data() : nullptr, st());
  prof_.mark(st(), "grad norm + AdamW");
  if (prof_.on()) {
    cuda::check(cudaStreamSynchronize(st()), "AdamW");
    prof_.end();
  }
  return norm;
}

void CudaTrainEngine::read_state(float* params, float* m, float* v) {
  cuda::check(cudaStreamSynchronize(st()), "training step");
  const size_t bytes = size_t(layout_.total) * 4;
  cuda::check(cudaMemcpy(params, p32_.data(), bytes, cudaMemcpyDeviceToHost), "download weights");
  cuda::check(cudaMemcpy(m, m32_.data(), bytes, cudaMemcpyDeviceToHost), "download AdamW m");
  cuda::check(cudaMemcpy(v, v32_.data(), bytes, cudaMemcpyDeviceToHost), "download AdamW v");
}

void CudaTrainEngine::write_state(const float* params, const float* m, const float* v,
                                  int64_t step) {
  cuda::check(cudaStreamSynchronize(st()), "training step");
  const size_t bytes = size_t(layout_.total) * 4;
  cuda::check(cudaMemcpy(p32_.data(), params, bytes, cudaMemcpyHostToDevice), "upload weights");
  cuda::check(cudaMemcpy(m32_.data(), m, bytes, cudaMemcpyHostToDevice), "upload AdamW m");
  cuda::check(cudaMemcpy(v32_.data(), v, bytes, cudaMemcpyHostToDevice), "upload AdamW v");
  if (bf16_) cuda::convert_to_act(t_, p32_.data(), false, layout_.total, wbf_.data(), st());
  step_ = step;
}

void CudaTrainEngine::read_grads(float* grads) {
  cuda::check(cudaStreamSynchronize(st()), "training step");
  cuda::check(cudaMemcpy(grads, g32_.data(), size_t(layout_.total) * 4, cudaMemcpyDeviceToHost),
              "download gradients");
}

double CudaTrainEngine::peak_flops() {
  // The card's measured bf16 GEMM throughput (as the inference figures use): the MFU of both
  // dtypes is against it.
  if (peak_ == 0.0) peak_ = cuda::measure_ceilings().bf16_tflops * 1e12;
  return peak_;
}

std::string CudaTrainEngine::describe() const {
  return "cuda (" + device_name_ + "), " +
         (bf16_ ? "bfloat16 compute, fp32 master weights" : "float32 (no TF32)") +
         (flash_        ? ", fused tensor-core attention"
          : keep_probs_ ? ""
                        : ", attention probabilities recomputed in the backward") +
         flash_note_ +
         (expert_batch_ ? ", experts batched when balanced" : ", experts one at a time");
}

}  // namespace

std::unique_ptr<TrainEngine> make_cuda_train_engine(const TrainConfig& config,
                                                    const ParamLayout& layout,
                                                    CudaTrainOptions options) {
  return std::make_unique<CudaTrainEngine>(config, layout, options);
}

}  // namespace mind4::train
