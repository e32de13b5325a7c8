// The CUDA line behind the StepBackend seam: a Context's KV cache and scratch in GPU memory, and
// the forward step as a sequence of kernel launches on one stream. A step copies its rows'
// (token, position, slot) and the logit rows up, runs every layer on the GPU and copies the
// wanted logits back; that final copy is the only synchronisation. Steps of up to kGraphMaxRows
// rows (decode) are captured once per shape as a CUDA graph and replayed. Each step also stores the
// wanted logits per KV slot on the device, where sample() draws from them (sampling.cu); the copy
// to the host can be switched off (ContextOptions::host_logits).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "cuda/buffer.h"
#include "cuda/device_model.h"
#include "cuda/kernels.h"
#include "cuda/pdl.h"
#include "cuda/profiler.h"
#include "model/backend.h"

namespace mind4 {
namespace {

using cuda::ActType;
using cuda::DeviceBuffer;

constexpr float kCudaRmsEps = 1e-5f;
constexpr int kGraphMaxRows = 64;
// router_group (one launch for the router) serves steps of up to this many rows: its last block
// takes the top-k of every row, and at 64 rows that made it slower than the three launches it
// replaces (35.5 against 19.6 us on an H100; 6.9 against 18.0 us at one row).
constexpr int kFusedRouterMaxRows = 16;
// Steps of at least this many rows take the tensor-core route: in bf16 mode the grouped MXFP4 GEMM
// (moe_gemm_mf4.cu) and fused flash attention (attention_prefill.cu); in f32 mode experts expanded
// to f32 and multiplied by cuBLAS, attention by cuBLAS. Attention takes it when the step is one
// sequence's consecutive positions. MIND4_CUDA_PREFILL_MIN_ROWS overrides the threshold (tests run
// small fixtures through it).
constexpr int kPrefillMinRows = kGraphMaxRows + 1;
// The smallest key bound of a decode step (see forward): up to it the decode attention runs one
// split (attention_decode_gqa_splits).
constexpr int kMinKeyBound = 256;
// In bf16 mode with MXFP4 experts (the grouped GEMM's case) and the skinny expert GEMM turned off,
// the tensor-core route starts lower: from 32 rows on it beats the CUDA-core expert GEMVs even for
// decode steps (an H100, random gpt-oss-20b: b=32 1,615 against 1,314 tok/s, b=64 2,567 against
// 1,055; docs/perf-notes.md S8.11). Such steps run without a CUDA graph. With the skinny GEMM
// (the default) steps of up to kGraphMaxRows rows stay on the graph route, the experts going
// through it: b=32 +4% over the tensor-core route (S9.5).
constexpr int kGroupedGemmMinRows = 32;
constexpr int64_t kMaxScoreBytes = int64_t(4) << 30;   // attention_prefill's score buffer cap
constexpr int64_t kMaxExpandBytes = int64_t(3) << 30;  // all experts of a layer expanded at once
constexpr int kExpertRowPad = 128;
// With MIND4_CUDA_Q8_DECODE=batched the int8 expert GEMVs (moe_mf4.cu) serve steps of up to this
// many rows an expert (tokens_hint): b = 64 with gpt-oss-20b's 32 experts is 8; they convert each
// weight once per group of up to 4 rows, where the float GEMV re-reads a shared-memory table per
// weight and row (b=16 1.28x, b=64 2.1x on an H100). Not the default: on the whole-model fixtures
// its int8 activations took the 16-row steps' logits 3.1% of the largest logit away from HF's,
// past the bf16 bound of 2% (docs/perf-notes.md, S7.10).
constexpr int kQ8MaxTokens = 8;
// Steps of 2 to this many rows an expert (tokens_hint; batched decode: 64 sequences over
// gpt-oss-20b's 32 experts is 8) multiply the experts with the skinny grouped GEMM
// (moe_gemm_mf4_skinny.cu: each weight read and decoded once per 16 rows), bf16 mode with MXFP4
// experts: on an H100 b=16 1,177 -> 1,715 tok/s, b=64 2,670 -> 3,514, b=128 +6%; at one row an
// expert (b=4: 940 against 738) the expert GEMVs stay. MIND4_CUDA_SKINNY=0 turns it off (for
// comparisons). docs/perf-notes.md, S9.4.
constexpr int kSkinnyMaxRows = 16;
constexpr int kAttnPartialRows = 2048;  // capacity of the split-K buffer, in (row, split) pairs
constexpr size_t kBlasWorkspace = size_t(32) << 20;

class CudaBackend final : public StepBackend {
 public:
  CudaBackend(const Model::Impl& model, const ContextOptions& o, int max_logit_rows)
      : model_(model), dm_(*model.device), c_(dm_.config), act_(dm_.act) {
    cuda::select_device("Context");
    const int64_t B = o.max_batch_tokens, L = max_logit_rows, S = o.max_sequences;
    const int64_t H = c_.hidden_size, D = c_.head_dim, NH = c_.num_attention_heads,
                  NKV = c_.num_key_value_heads, E = c_.num_experts, K = c_.experts_per_token,
                  I = c_.intermediate_size, V = c_.vocab_size, QKV = model.qkv_rows;
    const int64_t a = cuda::act_size(act_), A = B * K;
    positions_ = o.context_length;
    max_rows_ = int(B);
    kv_layer_elems_ = S * positions_ * NKV * D;
    const int64_t kv_bytes = 2 * c_.num_hidden_layers * kv_layer_elems_ * a;
    const int64_t partial_floats = int64_t(kAttnPartialRows) * NH * (D + 2);
    const int64_t scratch = 2 * B * H * 4 + B * (2 * H + QKV + NH * D) * a + B * E * 4 + A * 8 +
                            (2 * E + 2) * 4 + A * 12 + (A + kExpertRowPad) * (I * a + H * 4) +
                            partial_floats * 4 + L * H * a + L * V * 4 + S * V * 4 +
                            2 * (3 * B + 2 * L) * 4 +
                            2 * S * int64_t(sizeof(cuda::SampleJob) + sizeof(cuda::SampleOut)) +
                            2 * positions_ * (D / 2) * 4 + int64_t(kBlasWorkspace);
    size_t free_b = 0, total_b = 0;
    cuda::check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
    MIND4_CHECK(size_t(kv_bytes + scratch) <= free_b, Status::kOutOfMemory,
                "Context: the KV cache (", kv_bytes / double(1 << 20), " MiB for ", S,
                " sequences x ", positions_, " positions) and scratch (", scratch / double(1 << 20),
                " MiB) do not fit in the GPU's ", free_b / double(1 << 20), " MiB free");
    auto dev = [](int64_t bytes, const char* what) { return DeviceBuffer(size_t(bytes), what); };
    k_cache_ = dev(kv_bytes / 2, "cudaMalloc (KV cache)");
    v_cache_ = dev(kv_bytes / 2, "cudaMalloc (KV cache)");
    x_ = dev(B * H * 4, "cudaMalloc (scratch)");
    t32_ = dev(act_ == ActType::kF32 ? 0 : B * H * 4, "cudaMalloc (scratch)");
    t_ = dev(B * H * a, "cudaMalloc (scratch)");
    qkv_ = dev(B * QKV * a, "cudaMalloc (scratch)");
    attn_ = dev(B * NH * D * a, "cudaMalloc (scratch)");
    proj_ = dev(B * H * a, "cudaMalloc (scratch)");
    gate_ = dev(B * E * 4, "cudaMalloc (scratch)");
    topk_e_ = dev(A * 4, "cudaMalloc (scratch)");
    topk_w_ = dev(A * 4, "cudaMalloc (scratch)");
    groups_buf_ = dev((2 * (E + 1) + 3 * A) * 4, "cudaMalloc (scratch)");
    // kExpertRowPad spare rows: the tensor-core route's padded expert products write into them.
    act_buf_ = dev((A + kExpertRowPad) * I * a, "cudaMalloc (scratch)");
    y_ = dev((A + kExpertRowPad) * H * 4, "cudaMalloc (scratch)");
    partial_ = dev(partial_floats * 4, "cudaMalloc (scratch)");
    final_ = dev(std::max<int64_t>(L, 1) * H * a, "cudaMalloc (scratch)");
    logits_ = dev(std::max<int64_t>(L, 1) * V * 4, "cudaMalloc (logits)");
    const size_t draw_bytes = size_t(S) * (sizeof(cuda::SampleJob) + sizeof(cuda::SampleOut));
    for (RowTable& t : tables_) {
      t.dev = dev((3 * B + 2 * L) * 4, "cudaMalloc (step rows)");
      t.host = cuda::PinnedBuffer(size_t(3 * B + 2 * L) * 4);
      t.draw_dev = dev(int64_t(draw_bytes), "cudaMalloc (drawn tokens)");
      t.draw_host = cuda::PinnedBuffer(draw_bytes);
    }
    draws_.resize(size_t(S));
    slot_logits_ = dev(S * V * 4, "cudaMalloc (per-sequence logits)");
    sample_jobs_ = dev(S * int64_t(sizeof(cuda::SampleJob)), "cudaMalloc (sampling)");
    sample_out_ = dev(S * int64_t(sizeof(cuda::SampleOut)), "cudaMalloc (sampling)");
    sample_host_ =
        cuda::PinnedBuffer(size_t(S) * (sizeof(cuda::SampleJob) + sizeof(cuda::SampleOut)));
    max_logit_rows_ = int(L);
    max_slots_ = int(S);
    blas_ws_ = dev(kBlasWorkspace, "cudaMalloc (cuBLAS workspace)");
    logits_host_ = cuda::PinnedBuffer(size_t(std::max<int64_t>(L, 1) * V) * 4);
    int* gb = groups_buf_.data<int>();
    groups_ = {gb, gb + (E + 1), gb + 2 * (E + 1), gb + 2 * (E + 1) + A, gb + 2 * (E + 1) + 2 * A};
    partial_capacity_ = partial_floats;

    // RoPE tables in double on the host (as the CPU line), once per context.
    std::vector<float> cos_t(size_t(positions_) * (D / 2)), sin_t(cos_t.size());
    cpu::rope_tables(c_, positions_, cos_t.data(), sin_t.data());
    rope_ = dev(int64_t(cos_t.size()) * 8, "cudaMalloc (RoPE tables)");
    // Stream-ordered copies, then a wait: the host tables are freed when this returns, and a
    // pageable cudaMemcpy may return before its data has landed.
    cuda::check(cudaMemcpyAsync(rope_.data(), cos_t.data(), cos_t.size() * 4,
                                cudaMemcpyHostToDevice, stream_.get()),
                "cudaMemcpyAsync (RoPE tables)");
    cuda::check(cudaMemcpyAsync(rope_.data<float>() + cos_t.size(), sin_t.data(), sin_t.size() * 4,
                                cudaMemcpyHostToDevice, stream_.get()),
                "cudaMemcpyAsync (RoPE tables)");
    cuda::check(cudaStreamSynchronize(stream_.get()), "RoPE tables (cudaStreamSynchronize)");
    sin_offset_ = int64_t(cos_t.size());

    // The int8 decode route of the experts (bf16 mode): quantized activations of a step with
    // about one row an expert. MIND4_CUDA_Q8_DECODE=0 turns it off (the float GEMV then runs),
    // =batched extends it to kQ8MaxTokens rows an expert (batched decode; see kQ8MaxTokens).
    const char* q8 = std::getenv("MIND4_CUDA_Q8_DECODE");
    if (q8 && std::string(q8) == "batched") q8_max_tokens_ = kQ8MaxTokens;
    if (act_ == ActType::kBF16 && dm_.experts_mxfp4 && !(q8 && std::string(q8) == "0")) {
      xq_ = dev(B * H * 2, "cudaMalloc (decode scratch)");  // int8 rows, or the folded int16 row
      xd_ = dev(B * H / 32 * 4, "cudaMalloc (decode scratch)");
      aq_ = dev(A * I, "cudaMalloc (decode scratch)");
      ad_ = dev(A * I / 32 * 4, "cudaMalloc (decode scratch)");
    }
    // The fused decode chain (steps of up to kGraphMaxRows rows): own GEMVs with fused epilogues
    // for the dense products (bf16, one row) and one launch for router + top-k + grouping.
    // MIND4_CUDA_FUSED_DECODE=0 turns it off (for comparisons).
    const char* fd = std::getenv("MIND4_CUDA_FUSED_DECODE");
    fused_decode_ = !(fd && std::string(fd) == "0");
    // The chain's kernels with programmatic dependent launches (MIND4_CUDA_PDL=0 turns them off,
    // for comparisons): +0.7% at batch 1 on an H100 (docs/perf-notes.md, S8.5 and S10.3).
    const char* pd = std::getenv("MIND4_CUDA_PDL");
    pdl_decode_ = !(pd && std::string(pd) == "0");
    // One logit row (decode at batch 1, the end of a prefill) in bf16: the unembedding through
    // decode_linear instead of cuBLAS (MIND4_CUDA_GEMV_UNEMBEDDING=0 keeps cuBLAS).
    const char* gu = std::getenv("MIND4_CUDA_GEMV_UNEMBEDDING");
    gemv_unembedding_ = !(gu && std::string(gu) == "0");
    // Decode attention: one pass over each KV head for all its query heads
    // (attention_decode_gqa.cu; tensor cores in bf16 mode) where the shape allows;
    // MIND4_CUDA_DECODE_ATTN=cuda-cores keeps its CUDA-core kernel, =old the per-query-head
    // kernel of attention.cu (for comparisons).
    const char* da = std::getenv("MIND4_CUDA_DECODE_ATTN");
    gqa_decode_ = !(da && std::string(da) == "old") &&
                  cuda::attention_decode_gqa_supported(int(NH), int(NKV), int(D));
    decode_attn_kernel_ = da && std::string(da) == "cuda-cores"
                              ? cuda::DecodeAttnKernel::kCudaCores
                              : cuda::DecodeAttnKernel::kTensorCores;
    // router_group's (and router_norm_group's) block counter.
    step_counters_ = dev(4, "cudaMalloc (step counters)");
    // Zeroed on the step stream, ahead of every kernel that uses it.
    cuda::check(cudaMemsetAsync(step_counters_.data(), 0, 4, stream_.get()),
                "cudaMemsetAsync (step counters)");
    // The folded decode chain (one row on the int8 expert route, see run_layers): the norms,
    // both quantizations and the experts' combine move into the neighbouring kernels.
    // MIND4_CUDA_FOLD_NORMS=0 keeps the separate launches (for comparisons).
    const char* fn = std::getenv("MIND4_CUDA_FOLD_NORMS");
    fold_norms_ = fused_decode_ && xq_.bytes() > 0 && !(fn && std::string(fn) == "0") &&
                  cuda::router_norm_group_supported(int(H)) && H % 8 == 0 && H <= 4096;
    // At one row the out projection's weights are prefetched into L2 while the attention runs
    // (l2_prefetch.cu): +2% at batch 1 on an H100 (docs/perf-notes.md, S11.1).
    // MIND4_CUDA_L2_PREFETCH=0 turns it off (for comparisons).
    const char* lp = std::getenv("MIND4_CUDA_L2_PREFETCH");
    prefetch_out_ = !(lp && std::string(lp) == "0");
    // bf16 mode: the grouped MXFP4 GEMMs read the packed experts and need only a tile plan (its
    // capacity here for the smallest tiles, the skinny kernel's); f32 mode (and bf16 experts) keep
    // the expanded route.
    const bool grouped_ok =
        act_ == ActType::kBF16 && dm_.experts_mxfp4 && H % 32 == 0 && I % 32 == 0;
    const char* sk = std::getenv("MIND4_CUDA_SKINNY");
    skinny_ = grouped_ok && B >= 2 && !(sk && std::string(sk) == "0");
    if (grouped_ok && B >= 2)
      tile_plan_ = dev(
          (1 + 2 * int64_t(cuda::moe_tile_plan_capacity(
                       int(A), int(E), cuda::moe_gemm_tile_rows(cuda::MoeGemmVariant::kSkinny)))) *
              4,
          "cudaMalloc (expert tile plan)");
    // Scratch of the tensor-core route, only for contexts whose steps can be that large.
    if (grouped_ok && !skinny_) prefill_min_rows_ = kGroupedGemmMinRows;
    if (const char* v = std::getenv("MIND4_CUDA_PREFILL_MIN_ROWS"); v && std::atoi(v) > 0)
      prefill_min_rows_ = std::atoi(v);
    if (B >= prefill_min_rows_) {
      tensor_route_ = true;
      grouped_gemm_ = grouped_ok;
      if (grouped_gemm_) {
        // On Hopper the wgmma kernel with the weights decoded into its register operand, elsewhere
        // the mma.sync one (the fastest of each, see docs/perf-notes.md);
        // MIND4_CUDA_MOE_GEMM=mma | mma256 | mma-tall | wgmma | wgmma-regs picks one (for
        // comparisons).
        const char* v = std::getenv("MIND4_CUDA_MOE_GEMM");
        gemm_variant_ = v && *v                            ? cuda::moe_gemm_variant_named(v)
                        : cuda::moe_gemm_wgmma_supported() ? cuda::MoeGemmVariant::kWgmmaRegs
                                                           : cuda::MoeGemmVariant::kMma;
      } else {
        // Rows are padded per expert (kExpertRowPad) on the one-product-per-expert path.
        xg_ = dev((A + kExpertRowPad) * H * a, "cudaMalloc (prefill scratch)");
        hbuf_ = dev((A + kExpertRowPad) * 2 * I * 4, "cudaMalloc (prefill scratch)");
        // All experts expanded at once (one launch per matrix) when that fits in kMaxExpandBytes.
        expand_all_ = E * 2 * I * H * a <= kMaxExpandBytes;
        wbuf_ = dev((expand_all_ ? E : 1) * 2 * I * H * a, "cudaMalloc (prefill scratch)");
        offsets_host_ = cuda::PinnedBuffer(size_t(E + 1) * 4);
      }
      // The fused attention needs no score buffer; the cuBLAS route (f32 mode) does.
      flash_prefill_ = cuda::attention_prefill_flash_supported(act_, int(D));
      if (!flash_prefill_) {
        score_floats_ = std::min<int64_t>(NH * B * positions_, kMaxScoreBytes / 4);
        scores_ = dev(score_floats_ * 4, "cudaMalloc (prefill attention scores)");
      }
    }
    cuda::check(cublasSetStream(blas_.get(), stream_.get()), "cublasSetStream");
    cuda::check(cublasSetWorkspace(blas_.get(), blas_ws_.data(), kBlasWorkspace),
                "cublasSetWorkspace");
  }

  // Steps may still be queued (forward() need not wait): their buffers must outlive them.
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_.get());
    cudaStreamSynchronize(download_.get());
  }

  std::span<const float> forward(std::span<const StepRow> rows,
                                 std::span<const int> logit_rows) override {
    const int B = int(rows.size()), L = int(logit_rows.size()), V = c_.vocab_size;
    MIND4_CHECK(B > 0 && B <= max_rows_, Status::kInternal, "CudaBackend: ", B, " rows for ",
                max_rows_);
    // A step whose logits stay on the GPU returns without waiting for it, so the host prepares
    // the next step while this one runs. The row tables alternate between steps: a table is
    // rewritten once the step two before, which read it, has completed.
    turn_ ^= 1;
    RowTable& table = tables_[turn_];
    cuda::check(cudaEventSynchronize(table.done.get()), "a forward step (cudaEventSynchronize)");
    keep_draw_results(turn_);
    int* h = table.host.data<int>();
    auto* draw_jobs = table.draw_host.data<cuda::SampleJob>();
    int draws = 0;
    for (int r = 0; r < B; ++r) {
      h[r] = rows[r].token;
      h[max_rows_ + r] = rows[r].pos;
      h[2 * max_rows_ + r] = rows[r].slot;
      if (rows[r].token != kDrawnToken) continue;
      // The queued draw of this row's slot runs before the step and writes the token here.
      auto it = std::find_if(queued_.begin(), queued_.end(),
                             [&](const cuda::SampleJob& j) { return j.row == rows[r].slot; });
      MIND4_CHECK(it != queued_.end(), Status::kInternal, "CudaBackend: row ", r,
                  " waits for a draw that is not queued");
      h[r] = 0;
      draw_jobs[draws] = *it;
      draw_jobs[draws].dest = r;
      draws_[it->row] = {DrawState::kLaunched, turn_, draws, {}};
      table.draw_slots.push_back(int(it->row));
      queued_.erase(it);
      ++draws;
    }
    for (int i = 0; i < L; ++i) h[3 * max_rows_ + i] = logit_rows[i];
    // Each slot's last logit row of the step goes to the per-slot store (keep_all_logits steps
    // want several rows of one sequence; the later position wins).
    int* dest = h + 3 * max_rows_ + max_logit_rows_;
    for (int i = 0; i < L; ++i) {
      dest[i] = rows[logit_rows[i]].slot;
      for (int j = i + 1; j < L && dest[i] >= 0; ++j)
        if (rows[logit_rows[j]].slot == dest[i]) dest[i] = -1;
    }
    // One sequence's consecutive positions: attention may take the tensor-core route.
    int run_slot = rows[0].slot;
    for (int r = 1; r < B && run_slot >= 0; ++r)
      if (rows[r].slot != rows[0].slot || rows[r].pos != rows[0].pos + r) run_slot = -1;
    cudaStream_t s = stream_.get();
    // The upload runs on its own stream as soon as it is queued (while the step before runs): a
    // copy between two graphs of the step's stream left the GPU idle for 9-12 us (S15.1).
    cuda::check(
        cudaMemcpyAsync(table.dev.data(), h, size_t(3 * max_rows_ + 2 * max_logit_rows_) * 4,
                        cudaMemcpyHostToDevice, upload_.get()),
        "cudaMemcpyAsync (step rows)");
    auto* draw_jobs_dev = table.draw_dev.data<cuda::SampleJob>();
    auto* draw_out_dev = reinterpret_cast<cuda::SampleOut*>(draw_jobs_dev + max_slots_);
    if (draws > 0)
      cuda::check(cudaMemcpyAsync(draw_jobs_dev, draw_jobs, size_t(draws) * sizeof(cuda::SampleJob),
                                  cudaMemcpyHostToDevice, upload_.get()),
                  "cudaMemcpyAsync (draws)");
    cuda::check(cudaEventRecord(table.ready.get(), upload_.get()), "cudaEventRecord (step rows)");
    cuda::check(cudaStreamWaitEvent(s, table.ready.get()), "cudaStreamWaitEvent (step rows)");
    if (draws > 0) {
      // The draws from the slots' last logits, each token into its row; the results go down
      // beside the step, so that the host learns them while the step runs.
      cuda::sample_tokens(slot_logits_.data<float>(), V, draw_jobs_dev, draws, nullptr,
                          draw_params_, nullptr, draw_out_dev, s, 0, table.dev.data<int>());
      cuda::check(cudaEventRecord(table.sampled.get(), s), "cudaEventRecord (draws)");
      cuda::check(cudaStreamWaitEvent(download_.get(), table.sampled.get()),
                  "cudaStreamWaitEvent (draws)");
      auto* draw_out_host = reinterpret_cast<cuda::SampleOut*>(draw_jobs + max_slots_);
      cuda::check(
          cudaMemcpyAsync(draw_out_host, draw_out_dev, size_t(draws) * sizeof(cuda::SampleOut),
                          cudaMemcpyDeviceToHost, download_.get()),
          "cudaMemcpyAsync (drawn tokens)");
      cuda::check(cudaEventRecord(table.drawn.get(), download_.get()), "cudaEventRecord (draws)");
    }
    // The full-attention layers' keys are bounded by the step's longest row, rounded up to a
    // power of two (at least kMinKeyBound), rather than by the cache: the decode attention's split
    // count follows it, so a short context runs one split and no combine kernel. Each bound gets
    // its own graph (about log2(context / kMinKeyBound) of them a shape).
    int longest = 1;
    for (const StepRow& row : rows) longest = std::max(longest, row.pos + 1);
    int bound_log2 = 0;
    while ((kMinKeyBound << bound_log2) < longest) ++bound_log2;
    const int key_bound = std::min(positions_, kMinKeyBound << bound_log2);
    if (B <= kGraphMaxRows && B < prefill_min_rows_ && !prof_.on()) {
      // Each row table has its own graphs (their kernels read that table).
      const int64_t key = ((int64_t(B) * (kGraphMaxRows + 1) + L) * 32 + bound_log2) * 2 + turn_;
      auto it = graphs_.find(key);
      if (it != graphs_.end()) {
        it->second.launch(s);
      } else if (++seen_[key] < 2) {  // first time: eager (sets kernel attributes, warms cuBLAS)
        run_layers(B, L, key_bound, -1, 0);
      } else {
        cudaGraph_t g = nullptr;
        cuda::check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal),
                    "cudaStreamBeginCapture");
        cuda::capturing_graph = true;
        try {
          run_layers(B, L, key_bound, -1, 0);
        } catch (...) {
          cuda::capturing_graph = false;
          cudaStreamEndCapture(s, &g);
          if (g) cudaGraphDestroy(g);
          throw;
        }
        cuda::capturing_graph = false;
        cuda::check(cudaStreamEndCapture(s, &g), "cudaStreamEndCapture");
        auto [pos, ok] = graphs_.emplace(key, cuda::Graph(g));
        pos->second.launch(s);
      }
    } else {
      run_layers(B, L, key_bound, run_slot, rows[0].pos);
    }
    if (L > 0 && to_host_)
      cuda::check(cudaMemcpyAsync(logits_host_.data(), logits_.data(), size_t(L) * V * 4,
                                  cudaMemcpyDeviceToHost, s),
                  "cudaMemcpyAsync (logits)");
    cuda::check(cudaEventRecord(table.done.get(), s), "cudaEventRecord (step rows)");
    if (!to_host_ && !prof_.on()) return {};  // finish(), or whatever reads results, waits
    cuda::check(cudaStreamSynchronize(s), "the forward step (cudaStreamSynchronize)");
    prof_.end();
    if (!to_host_) return {};
    return {logits_host_.data<float>(), size_t(L) * V};
  }

  // A draw's result with the CPU sampler's errors, per sequence.
  SampledToken checked_draw(const cuda::SampleOut& o, int slot) const {
    const int V = c_.vocab_size;
    MIND4_CHECK(o.status != cuda::kSampleBadLogit, Status::kInvalidArgument,
                "sampler: the logits of KV slot ", slot, " hold NaN or +inf");
    MIND4_CHECK(o.status != cuda::kSampleAllMasked, Status::kInvalidArgument,
                "sampler: every token is masked (all ", V, " logits are -inf)");
    MIND4_CHECK(o.status != cuda::kSamplePenaltyOverflow, Status::kInvalidArgument,
                "sampler: the penalties push a logit of KV slot ", slot, " out of range");
    MIND4_CHECK(o.status == cuda::kSampleOk && o.token >= 0 && o.token < V, Status::kInternal,
                "sample_tokens: status ", o.status, ", token ", o.token);
    return {o.token, o.logprob};
  }

  void finish() override {
    cuda::check(cudaStreamSynchronize(stream_.get()),
                "the queued forward steps (cudaStreamSynchronize)");
  }

  int threads() const override { return 1; }

  bool has_device_logits() const override { return true; }
  void set_logits_to_host(bool on) override { to_host_ = on; }

  void download_logits(int slot, float* dst) override {
    const int V = c_.vocab_size;
    cudaStream_t s = stream_.get();
    cuda::check(cudaMemcpyAsync(logits_host_.data(), slot_logits_.data<float>() + int64_t(slot) * V,
                                size_t(V) * 4, cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync (one sequence's logits)");
    cuda::check(cudaStreamSynchronize(s), "logits download (cudaStreamSynchronize)");
    std::memcpy(dst, logits_host_.data(), size_t(V) * 4);
  }

  void sample(std::span<const SlotSample> jobs, const SamplingConfig& config, LogprobMode mode,
              std::span<SampledToken> out) override {
    run_sample(jobs, cuda::sample_params(config, mode), out);
  }

  // sample() with its parameters made: the jobs up, one kernel, the tokens down.
  void run_sample(std::span<const SlotSample> jobs, const cuda::SampleParams& p,
                  std::span<SampledToken> out) {
    const int n = int(jobs.size()), V = c_.vocab_size;
    MIND4_CHECK(n <= max_slots_, Status::kInternal, "CudaBackend::sample: ", n, " jobs for ",
                max_slots_, " slots");
    if (n == 0) return;
    const bool penalties =
        p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
    auto* host_jobs = sample_host_.data<cuda::SampleJob>();
    auto* host_out = reinterpret_cast<cuda::SampleOut*>(host_jobs + max_slots_);
    // Penalties: each job's history as (token, count) pairs, counted on the host (a pass over the
    // history, as the CPU sampler makes); the pair and work buffers grow to the largest need.
    int64_t pairs = 0;
    if (penalties) {
      if (counts_.size() != size_t(V)) counts_.assign(size_t(V), 0);
      int64_t need = 0;
      for (const SlotSample& j : jobs) need += int64_t(j.history.size());
      if (pen_host_.bytes() < size_t(need) * 8) {
        pen_host_ = cuda::PinnedBuffer(size_t(need) * 8);
        pen_dev_ = DeviceBuffer(size_t(need) * 8, "cudaMalloc (sampling penalties)");
      }
      if (work_.bytes() == 0)
        work_ = DeviceBuffer(size_t(max_slots_) * V * 4, "cudaMalloc (sampling work rows)");
    }
    int* pen = pen_host_.data<int>();
    for (int i = 0; i < n; ++i) {
      const SlotSample& j = jobs[i];
      cuda::SampleJob& h = host_jobs[i];
      h = {j.slot, j.seed, j.step, int(pairs), int(pairs)};
      if (!penalties) continue;
      for (int t : j.history) ++counts_[t];
      for (int t : j.history) {
        if (counts_[t] == 0) continue;
        pen[2 * pairs] = t;
        pen[2 * pairs + 1] = int(counts_[t]);
        ++pairs;
        counts_[t] = 0;
      }
      h.pen_end = int(pairs);
    }
    cudaStream_t s = stream_.get();
    cuda::check(cudaMemcpyAsync(sample_jobs_.data(), host_jobs, size_t(n) * sizeof(cuda::SampleJob),
                                cudaMemcpyHostToDevice, s),
                "cudaMemcpyAsync (sampling jobs)");
    if (pairs > 0)
      cuda::check(
          cudaMemcpyAsync(pen_dev_.data(), pen, size_t(pairs) * 8, cudaMemcpyHostToDevice, s),
          "cudaMemcpyAsync (sampling penalties)");
    cuda::sample_tokens(slot_logits_.data<float>(), V, sample_jobs_.data<cuda::SampleJob>(), n,
                        pairs > 0 ? pen_dev_.data<int2>() : nullptr, p,
                        pairs > 0 ? work_.data<float>() : nullptr,
                        sample_out_.data<cuda::SampleOut>(), s);
    cuda::check(cudaMemcpyAsync(host_out, sample_out_.data(), size_t(n) * sizeof(cuda::SampleOut),
                                cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync (sampled tokens)");
    cuda::check(cudaStreamSynchronize(s), "sampling (cudaStreamSynchronize)");
    for (int i = 0; i < n; ++i) out[i] = checked_draw(host_out[i], jobs[i].slot);
  }

  bool draws_on_device() const override { return true; }

  void queue_draws(std::span<const SlotSample> jobs, const SamplingConfig& config,
                   LogprobMode mode) override {
    MIND4_CHECK(queued_.empty(), Status::kInternal, "CudaBackend: draws queued twice");
    draw_params_ = cuda::sample_params(config, mode);
    for (const SlotSample& j : jobs) {
      MIND4_CHECK(j.history.empty(), Status::kInternal,
                  "CudaBackend: a queued draw with penalties");
      queued_.push_back({j.slot, j.seed, j.step, 0, 0});
      draws_[j.slot] = {DrawState::kQueued, 0, 0, {}};
    }
  }

  SampledToken take_drawn(int slot) override {
    Draw& d = draws_[slot];
    MIND4_CHECK(d.state != DrawState::kNone, Status::kInternal, "CudaBackend: no draw for slot ",
                slot);
    if (d.state == DrawState::kQueued) {  // no step has run it: run it now, as sample() would
      auto it = std::find_if(queued_.begin(), queued_.end(),
                             [&](const cuda::SampleJob& j) { return j.row == slot; });
      const SlotSample job{slot, it->seed, it->step, {}};
      queued_.erase(it);
      d.state = DrawState::kNone;
      SampledToken t;
      run_sample(std::span<const SlotSample>(&job, 1), draw_params_,
                 std::span<SampledToken>(&t, 1));
      return t;
    }
    if (d.state == DrawState::kLaunched) keep_draw_results(d.table);
    d.state = DrawState::kNone;
    return checked_draw(d.out, slot);
  }

  // Before a row table is reused: the results of its draws not taken yet move to draws_ (their
  // pinned copies are about to be overwritten).
  void keep_draw_results(int turn) {
    RowTable& t = tables_[turn];
    if (t.draw_slots.empty()) return;
    cuda::check(cudaEventSynchronize(t.drawn.get()), "a drawn token (cudaEventSynchronize)");
    const auto* results =
        reinterpret_cast<const cuda::SampleOut*>(t.draw_host.data<cuda::SampleJob>() + max_slots_);
    for (int slot : t.draw_slots) {
      Draw& d = draws_[slot];
      if (d.state != DrawState::kLaunched || d.table != turn) continue;
      d.out = results[d.index];
      d.state = DrawState::kReady;
    }
    t.draw_slots.clear();
  }

  void cancel_draw(int slot) override {
    std::erase_if(queued_, [&](const cuda::SampleJob& j) { return j.row == slot; });
    draws_[slot].state = DrawState::kNone;
  }

 private:
  cuda::KvLayer kv_layer(int l) const {
    const int64_t off = int64_t(l) * kv_layer_elems_ * cuda::act_size(act_);
    return {k_cache_.data<char>() + off, v_cache_.data<char>() + off, positions_};
  }

  // Every launch of one step; no allocation. Below prefill_min_rows_ rows no synchronisation
  // either (graph-capturable); at or above it the expert route reads the experts' row counts back.
  // run_slot >= 0: the rows are positions pos0 .. pos0 + B - 1 of that slot. key_bound: keys of
  // the longest row, rounded up (see forward).
  void run_layers(int B, int L, int key_bound, int run_slot, int pos0) {
    cudaStream_t s = stream_.get();
    cublasHandle_t blas = blas_.get();
    const int H = c_.hidden_size, D = c_.head_dim, NH = c_.num_attention_heads,
              NKV = c_.num_key_value_heads, E = c_.num_experts, K = c_.experts_per_token,
              I = c_.intermediate_size, V = c_.vocab_size, QKV = model_.qkv_rows;
    const int A = B * K, max_active = std::min(E, A);
    const bool tensor_route = B >= prefill_min_rows_ && tensor_route_;
    const int tokens_hint = (A + max_active - 1) / max_active;
    const bool skinny = skinny_ && tokens_hint >= 2 && tokens_hint <= kSkinnyMaxRows;
    const int* tokens = tables_[turn_].dev.data<int>();
    const int* pos = tokens + max_rows_;
    const int* slot = pos + max_rows_;
    const int* logit_rows = slot + max_rows_;
    const float* cos_t = rope_.data<float>();
    const float* sin_t = cos_t + sin_offset_;
    const float scale = 1.0f / std::sqrt(float(D));
    float* x = x_.data<float>();
    void* t = t_.data();
    const bool fused = fused_decode_ && !tensor_route && B <= kGraphMaxRows && H % 4 == 0;
    // The own GEMVs only at one row: at 4 rows they were slower than cuBLAS (27 against 16 us for
    // the QKV product on an H100; they convert every weight once per row).
    const bool fused_gemv =
        fused && act_ == ActType::kBF16 && B == 1 && H % 8 == 0 && (NH * D) % 8 == 0;
    // The folded chain (one row: fused_gemv): per layer the QKV product norms its own input, the
    // router norms and quantizes the experts' input, the first expert product quantizes its
    // output, and the second adds the combine into the residual; 6 launches instead of 10
    // (docs/perf-notes.md, CUDA decode, session 5, S12.4 and S17.3).
    const bool fold = fold_norms_ && fused_gemv && dm_.experts_mxfp4 && tokens_hint <= 1;
    const cuda::PdlScope pdl(fused && pdl_decode_);
    prof_.begin(s, B);
    auto mark = [&](const char* op) { prof_.mark(s, op); };
    // The out projection's weights into L2 during the attention (one row), from a side stream
    // that forks from the chain after the QKV product and joins it at the end of the step.
    const bool prefetch_out = prefetch_out_ && fused_gemv;
    auto prefetch = [&](const void* p, int64_t bytes) {
      cuda::check(cudaEventRecord(fork_.get(), s), "cudaEventRecord (prefetch fork)");
      cuda::check(cudaStreamWaitEvent(side_.get(), fork_.get()), "cudaStreamWaitEvent (fork)");
      cuda::l2_prefetch(p, bytes, side_.get());
    };
    // The router reads f32 activations whatever the dtype (t32: its own copy in bf16 mode).
    float* t32 = act_ == ActType::kF32 ? static_cast<float*>(t) : t32_.data<float>();
    float* t32_out = act_ == ActType::kF32 ? nullptr : t32;
    if (!fold) {  // the folded chain's first QKV product gathers and norms its own input row
      cuda::embedding_gather(act_, dm_.embedding, tokens, B, H, x, s);
      cuda::residual_rmsnorm(act_, x, nullptr, nullptr, dm_.layers[0].attn_norm, B, H, kCudaRmsEps,
                             t, nullptr, s);
      mark("embedding+norm");
    }
    for (int l = 0; l < c_.num_hidden_layers; ++l) {
      const cuda::DeviceLayer& lw = dm_.layers[l];
      const cuda::KvLayer kv = kv_layer(l);
      if (fold) {
        cuda::decode_qkv_rope_norm(x, lw.attn_norm, kCudaRmsEps, lw.qkv_w, lw.qkv_b, H, NH, NKV, D,
                                   cos_t, sin_t, pos, slot, qkv_.data(), kv, s,
                                   l == 0 ? dm_.embedding : nullptr, tokens);
        mark("norm_qkv_gemv_rope");
      } else if (fused_gemv) {
        cuda::decode_qkv_rope(t, lw.qkv_w, lw.qkv_b, B, H, NH, NKV, D, cos_t, sin_t, pos, slot,
                              qkv_.data(), kv, s);
        mark("qkv_gemv_rope");
      } else {
        cuda::linear(blas, act_, t, B, H, lw.qkv_w, QKV, qkv_.data(), false);
        mark("qkv_gemm");
        cuda::qkv_bias_rope(act_, qkv_.data(), lw.qkv_b, cos_t, sin_t, pos, slot, B, NH, NKV, D, kv,
                            s);
        mark("qkv_bias_rope");
      }
      if (prefetch_out) prefetch(lw.out_w, int64_t(H) * NH * D * 2);
      const int window = layer_window(c_, l);
      const bool windowed = window > 0;
      const int max_keys = windowed ? std::min(c_.sliding_window, key_bound) : key_bound;
      const int cap = int(std::min<int64_t>(64, partial_capacity_ / (int64_t(B) * NH * (D + 2))));
      const int splits =
          gqa_decode_ ? cuda::attention_decode_gqa_splits(B, NKV, max_keys, cap, multiprocessors_)
                      : cuda::attention_splits(B, NH, max_keys, cap);
      if (tensor_route && run_slot >= 0 && flash_prefill_)
        cuda::attention_prefill_flash(act_, qkv_.data(), NH, NKV, D, kv, run_slot, pos0, lw.sinks,
                                      B, window, scale, attn_.data(), s);
      else if (tensor_route && run_slot >= 0 && int64_t(NH) * B * (pos0 + B) <= score_floats_)
        cuda::attention_prefill(blas, act_, qkv_.data(), NH, NKV, D, kv, run_slot, pos0, lw.sinks,
                                B, window, scale, scores_.data<float>(), attn_.data(), s);
      else if (gqa_decode_)
        cuda::attention_decode_gqa(act_, qkv_.data(), NH, NKV, D, kv, pos, slot, lw.sinks, B,
                                   window, scale, splits, partial_.data<float>(), attn_.data(), s,
                                   decode_attn_kernel_);
      else
        cuda::attention(act_, qkv_.data(), NH, NKV, D, kv, pos, slot, lw.sinks, B, window, scale,
                        splits, partial_.data<float>(), attn_.data(), s);
      mark(windowed ? "attention_window" : "attention_full");
      if (fold) {
        cuda::decode_linear_residual(attn_.data(), lw.out_w, lw.out_b, B, NH * D, H, x, s);
        mark("out_gemv_residual");
        cuda::router_norm_group(x, lw.mlp_norm, kCudaRmsEps, lw.gate_w, lw.gate_b, B, H, E, K,
                                gate_.data<float>(), step_counters_.data<unsigned>(),
                                topk_e_.data<int>(), topk_w_.data<float>(), groups_, t,
                                xq_.data<int16_t>(), xd_.data<float>(), s);
        mark("norm_router_group_q8");
        // One row (the folded chain's only case): mlp1 takes the router's int16 row and quantizes
        // its output for mlp2 itself.
        cuda::moe_mlp1_swiglu_mf4_q8_one_row(xq_.data<int16_t>(), xd_.data<float>(), lw.mlp1_blocks,
                                             lw.mlp1_scales, lw.mlp1_b, groups_, max_active, H, I,
                                             c_.swiglu_limit, act_buf_.data(), aq_.data<int8_t>(),
                                             ad_.data<float>(), s);
        mark("moe_mlp1_swiglu_q8");
        cuda::moe_mlp2_mf4_q8_combine(aq_.data<int8_t>(), ad_.data<float>(), lw.mlp2_blocks,
                                      lw.mlp2_scales, lw.mlp2_b, groups_, max_active, H, I,
                                      y_.data<float>(), topk_w_.data<float>(), B, K, x, s);
        mark("moe_mlp2_q8_combine");
        continue;
      }
      if (fused_gemv) {  // the residual add happens in the product's epilogue
        cuda::decode_linear_residual(attn_.data(), lw.out_w, lw.out_b, B, NH * D, H, x, s);
        mark("out_gemv_residual");
        cuda::residual_rmsnorm(act_, x, nullptr, nullptr, lw.mlp_norm, B, H, kCudaRmsEps, t,
                               t32_out, s);
      } else {
        cuda::linear(blas, act_, attn_.data(), B, NH * D, lw.out_w, H, proj_.data(), false);
        mark("out_gemm");
        cuda::residual_rmsnorm(act_, x, proj_.data(), lw.out_b, lw.mlp_norm, B, H, kCudaRmsEps, t,
                               t32_out, s);
      }
      mark("residual_norm");
      if (fused && B <= kFusedRouterMaxRows) {
        cuda::router_group(t32, lw.gate_w, lw.gate_b, B, H, E, K, gate_.data<float>(),
                           step_counters_.data<unsigned>(), topk_e_.data<int>(),
                           topk_w_.data<float>(), groups_, s);
        mark("router_group");
      } else {
        cuda::linear(blas, ActType::kF32, t32, B, H, lw.gate_w, E, gate_.data(), true);
        mark("router_gemm");
        cuda::router_topk_softmax(gate_.data<float>(), lw.gate_b, B, E, K, topk_e_.data<int>(),
                                  topk_w_.data<float>(), s);
        mark("router_topk");
        cuda::moe_group(topk_e_.data<int>(), A, K, E, groups_, s);
        mark("moe_group");
      }
      if (dm_.experts_mxfp4 && (skinny || (tensor_route && grouped_gemm_))) {
        const cuda::MoeGemmVariant v = skinny ? cuda::MoeGemmVariant::kSkinny : gemm_variant_;
        const int* plan = tile_plan_.data<int>();
        cuda::moe_tile_plan(groups_.offsets, E, cuda::moe_gemm_tile_rows(v), tile_plan_.data<int>(),
                            s);
        cuda::moe_mlp1_swiglu_mf4_gemm(v, act_, t, lw.mlp1_blocks, lw.mlp1_scales, lw.mlp1_b,
                                       groups_, plan, A, E, H, I, c_.swiglu_limit, act_buf_.data(),
                                       s);
        mark("moe_mlp1_gemm");
        cuda::moe_mlp2_mf4_gemm(v, act_, act_buf_.data(), lw.mlp2_blocks, lw.mlp2_scales, lw.mlp2_b,
                                groups_, plan, A, E, H, I, y_.data<float>(), s);
        mark("moe_mlp2_gemm");
      } else if (dm_.experts_mxfp4 && tensor_route) {
        moe_expanded(lw, B);
      } else if (dm_.experts_mxfp4 && tokens_hint <= q8_max_tokens_ && xq_.bytes() > 0) {
        cuda::quantize_q8_32(act_, t, B, H, xq_.data<int8_t>(), xd_.data<float>(), s);
        cuda::moe_mlp1_swiglu_mf4_q8(act_, xq_.data<int8_t>(), xd_.data<float>(), lw.mlp1_blocks,
                                     lw.mlp1_scales, lw.mlp1_b, groups_, max_active, tokens_hint, H,
                                     I, c_.swiglu_limit, act_buf_.data(), s, /*one_row=*/B == 1);
        mark("moe_mlp1_swiglu_q8");
        cuda::quantize_q8_32(act_, act_buf_.data(), A, I, aq_.data<int8_t>(), ad_.data<float>(), s);
        cuda::moe_mlp2_mf4_q8(aq_.data<int8_t>(), ad_.data<float>(), lw.mlp2_blocks, lw.mlp2_scales,
                              lw.mlp2_b, groups_, max_active, tokens_hint, H, I, y_.data<float>(),
                              s);
        mark("moe_mlp2_q8");
      } else if (dm_.experts_mxfp4) {
        cuda::moe_mlp1_swiglu_mf4(act_, t, lw.mlp1_blocks, lw.mlp1_scales, lw.mlp1_b, groups_,
                                  max_active, tokens_hint, H, I, c_.swiglu_limit, act_buf_.data(),
                                  s);
        mark("moe_mlp1_swiglu");
        cuda::moe_mlp2_mf4(act_, act_buf_.data(), lw.mlp2_blocks, lw.mlp2_scales, lw.mlp2_b,
                           groups_, max_active, tokens_hint, H, I, y_.data<float>(), s);
        mark("moe_mlp2");
      } else {
        cuda::moe_mlp1_swiglu_dense(act_, t, lw.mlp1_w, lw.mlp1_b, groups_, A, H, I,
                                    c_.swiglu_limit, act_buf_.data(), s);
        cuda::moe_mlp2_dense(act_, act_buf_.data(), lw.mlp2_w, lw.mlp2_b, groups_, A, H, I,
                             y_.data<float>(), s);
      }
      // The experts' sum joins the residual, then the next norm: the next layer's attention
      // norm, or after the last layer the final norm.
      const float* next_scale =
          l + 1 < c_.num_hidden_layers ? dm_.layers[l + 1].attn_norm : dm_.norm;
      cuda::moe_combine_rmsnorm(act_, x, y_.data<float>(), groups_.assign_at, topk_w_.data<float>(),
                                K, next_scale, B, H, kCudaRmsEps, t, nullptr, s);
      mark("moe_combine_norm");
    }
    if (prefetch_out) {  // the side stream joins the step
      cuda::check(cudaEventRecord(join_.get(), side_.get()), "cudaEventRecord (prefetch join)");
      cuda::check(cudaStreamWaitEvent(s, join_.get()), "cudaStreamWaitEvent (join)");
    }
    if (L == 0) return;
    if (fold) {  // the final norm (the folded chain's layers leave the residual un-normed)
      cuda::residual_rmsnorm(act_, x, nullptr, nullptr, dm_.norm, B, H, kCudaRmsEps, t, nullptr, s);
      mark("final_norm");
    }
    // One row: it is the logit row, and the unembedding reads it where the norm left it.
    const void* final_rows = t;
    if (B > 1) {
      cuda::gather_rows(act_, t, logit_rows, L, H, final_.data(), s);
      final_rows = final_.data();
    }
    if (gemv_unembedding_ && L == 1 && act_ == ActType::kBF16 && H % 8 == 0)
      cuda::decode_linear(final_rows, dm_.unembedding, 1, H, V, logits_.data<float>(), s);
    else
      cuda::linear(blas, act_, final_rows, L, H, dm_.unembedding, V, logits_.data(), true);
    mark("unembedding");
    // Inside the step (and its graph): each slot's last logit row into the per-slot store.
    cuda::store_logit_rows(logits_.data<float>(), logit_rows + max_logit_rows_, L, V,
                           slot_logits_.data<float>(), s);
    mark("store_logits");
  }

  // The experts of a large step on tensor cores: each active expert's matrices expanded to the
  // activation dtype, then one cuBLAS product over all of its rows. Needs the row counts on the
  // host: the only synchronisation inside a step, and only on this route.
  void moe_expanded(const cuda::DeviceLayer& lw, int B) {
    cudaStream_t s = stream_.get();
    const int H = c_.hidden_size, E = c_.num_experts, I = c_.intermediate_size,
              A = B * c_.experts_per_token;
    const int64_t es = cuda::act_size(act_);
    int* off = offsets_host_.data<int>();
    cuda::check(cudaMemcpyAsync(off, groups_.offsets, size_t(E + 1) * 4, cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync (expert row counts)");
    cuda::check(cudaStreamSynchronize(s), "moe_group (cudaStreamSynchronize)");
    cuda::gather_rows(act_, t_.data(), groups_.group_row, A, H, xg_.data(), s);
    char* xg = xg_.data<char>();
    char* act = act_buf_.data<char>();
    char* w = wbuf_.data<char>();
    // Each expert's product covers its rows rounded up to kExpertRowPad: the extra rows belong to
    // the next expert (overwritten by its product, issued after) or to the buffers' padding.
    auto padded = [](int n) { return (n + kExpertRowPad - 1) / kExpertRowPad * kExpertRowPad; };
    if (expand_all_) cuda::mf4_expand(act_, lw.mlp1_blocks, lw.mlp1_scales, E * 2 * I, H, w, s);
    for (int e = 0; e < E; ++e) {
      const int n = off[e + 1] - off[e];
      if (n == 0) continue;
      const int64_t we = expand_all_ ? int64_t(e) * 2 * I * H * es : 0;
      if (!expand_all_)
        cuda::mf4_expand(act_, lw.mlp1_blocks + int64_t(e) * 2 * I * H / 2,
                         lw.mlp1_scales + int64_t(e) * 2 * I * H / 32, 2 * I, H, w, s);
      cuda::linear(blas_.get(), act_, xg + int64_t(off[e]) * H * es, padded(n), H, w + we, 2 * I,
                   hbuf_.data<float>() + int64_t(off[e]) * 2 * I, true);
    }
    cuda::moe_bias_swiglu(act_, hbuf_.data<float>(), lw.mlp1_b, groups_.group_expert, A, I,
                          c_.swiglu_limit, act, s);
    prof_.mark(s, "moe_mlp1_expanded");
    if (expand_all_) cuda::mf4_expand(act_, lw.mlp2_blocks, lw.mlp2_scales, E * H, I, w, s);
    for (int e = 0; e < E; ++e) {
      const int n = off[e + 1] - off[e];
      if (n == 0) continue;
      const int64_t we = expand_all_ ? int64_t(e) * H * I * es : 0;
      if (!expand_all_)
        cuda::mf4_expand(act_, lw.mlp2_blocks + int64_t(e) * H * I / 2,
                         lw.mlp2_scales + int64_t(e) * H * I / 32, H, I, w, s);
      cuda::linear(blas_.get(), act_, act + int64_t(off[e]) * I * es, padded(n), I, w + we, H,
                   y_.data<float>() + int64_t(off[e]) * H, true);
    }
    cuda::moe_bias_add(y_.data<float>(), lw.mlp2_b, groups_.group_expert, A, H, s);
    prof_.mark(s, "moe_mlp2_expanded");
  }

  const Model::Impl& model_;
  const cuda::DeviceModel& dm_;
  const ModelConfig& c_;
  const ActType act_;
  int positions_ = 0, max_rows_ = 0, max_logit_rows_ = 0, max_slots_ = 0;
  int multiprocessors_ = cuda::multiprocessor_count();
  bool to_host_ = true;
  bool fused_decode_ = true, pdl_decode_ = true, gemv_unembedding_ = true, gqa_decode_ = false,
       fold_norms_ = false;
  cuda::DecodeAttnKernel decode_attn_kernel_ = cuda::DecodeAttnKernel::kTensorCores;
  int64_t kv_layer_elems_ = 0, sin_offset_ = 0, partial_capacity_ = 0, score_floats_ = 0;
  int prefill_min_rows_ = kPrefillMinRows;
  cuda::Stream stream_;
  cuda::Stream side_;  // the L2 prefetch beside the chain
  cuda::Event fork_, join_;
  bool prefetch_out_ = true;
  cuda::BlasHandle blas_;
  DeviceBuffer k_cache_, v_cache_, x_, t32_, t_, qkv_, attn_, proj_, gate_, topk_e_, topk_w_,
      groups_buf_, act_buf_, y_, partial_, final_, logits_, blas_ws_, rope_;
  DeviceBuffer xg_, hbuf_, wbuf_, scores_, tile_plan_;  // tensor-core route (large steps) only
  bool tensor_route_ = false, grouped_gemm_ = false, flash_prefill_ = false, skinny_ = false;
  cuda::MoeGemmVariant gemm_variant_ = cuda::MoeGemmVariant::kMma;
  DeviceBuffer xq_, xd_, aq_, ad_;  // int8 decode route (bf16 mode) only
  int q8_max_tokens_ = 1;           // the int8 route up to this many rows an expert
  DeviceBuffer step_counters_;      // the routers' block counter
  // GPU sampling: each slot's last logits, the jobs and results, and (penalties only, grown on
  // first use) the (token, count) pairs and the penalised rows.
  DeviceBuffer slot_logits_, sample_jobs_, sample_out_, pen_dev_, work_;
  cuda::PinnedBuffer sample_host_, pen_host_;
  std::vector<uint32_t> counts_;
  bool expand_all_ = false;
  cuda::PinnedBuffer logits_host_, offsets_host_;
  // A step's rows (token, position, slot), its logit rows and their slots; see forward().
  struct RowTable {
    DeviceBuffer dev;
    cuda::PinnedBuffer host;
    cuda::Event ready;  // uploaded (on upload_)
    cuda::Event done;   // the step that read it has completed
    // The draws run before the step (Context::append_sampled): jobs and results, here and on
    // the device, and the slots whose results are here.
    DeviceBuffer draw_dev;
    cuda::PinnedBuffer draw_host;
    cuda::Event sampled;  // the draws have run (on the step's stream)
    cuda::Event drawn;    // their results are in draw_host (on download_)
    std::vector<int> draw_slots;
  };
  RowTable tables_[2];
  int turn_ = 0;
  cuda::Stream upload_;
  cuda::Stream download_;  // drawn tokens to the host, beside the step
  // Context::append_sampled's draws: queued_ until the forward() whose rows take them runs them
  // (SampleJob.row holds the slot); then each slot's state, where its result is.
  enum class DrawState { kNone, kQueued, kLaunched, kReady };
  struct Draw {
    DrawState state = DrawState::kNone;
    int table = 0, index = 0;  // kLaunched: tables_[table]'s result index
    cuda::SampleOut out{};     // kReady
  };
  std::vector<cuda::SampleJob> queued_;
  std::vector<Draw> draws_;
  cuda::SampleParams draw_params_;
  cuda::MoeGroups groups_{};
  std::map<int64_t, cuda::Graph> graphs_;
  std::map<int64_t, int> seen_;
  cuda::StepProfiler prof_;
};

}  // namespace

bool cuda_compiled() {
  return true;
}

std::shared_ptr<const cuda::DeviceModel> cuda_upload_model(const ModelWeights& weights,
                                                           const ExecutionConfig& execution) {
  return cuda::upload_model(weights, execution);
}

std::unique_ptr<StepBackend> make_cuda_backend(const Model::Impl& model,
                                               const ContextOptions& options, int max_logit_rows) {
  MIND4_CHECK(model.device != nullptr, Status::kInternal,
              "Context: the model has backend cuda but no uploaded weights");
  return std::make_unique<CudaBackend>(model, options, max_logit_rows);
}

}  // namespace mind4
