// The forward pass of the reference line: gpt-oss exactly as docs/model.md and MODEL.md state
// it, over one step of rows that may mix any number of sequences. Activations are fp32; weights
// are read as stored (bf16/f32 matrices, packed MXFP4 experts) by the kernels of src/cpu.
// Shapes: B = rows in the step, H hidden, NH/NKV heads, D head_dim, E experts, k = experts per
// token, I intermediate, V vocabulary.
#include <algorithm>
#include <cmath>
#include <new>

#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "mind4/status.h"
#include "model/backend.h"
#include "model/model_impl.h"

namespace mind4 {
namespace {

constexpr float kRmsEps = 1e-5f;
constexpr int64_t kRowGrain = 64;  // weight rows per thread-pool chunk

// out[tokens, n] = x[tokens, k] @ w^T (+ bias), w a BF16 or F32 matrix [n, k].
void linear(ThreadPool& pool, const TensorView& w, int n, int k, const float* bias, const float* x,
            int tokens, float* out) {
  pool.parallel_for(n, kRowGrain, [&](int64_t begin, int64_t end, int) {
    if (w.dtype == DType::kBF16)
      cpu::f32_bf16w_matmul(x, k, tokens, w.bf16(), k, bias, out, n, int(begin), int(end));
    else
      cpu::f32_f32w_matmul(x, k, tokens, w.f32(), k, bias, out, n, int(begin), int(end));
  });
}

// Rows [n0, n1) of expert e's matrix [rows, cols] applied to x[tokens, cols]; out column j is
// weight row n0 + j. MXFP4 experts want x deinterleaved (cpu::mf4_deinterleave order).
void expert_rows(const TensorView& blocks, const TensorView& scales, bool mxfp4, int e, int rows,
                 int cols, int n0, int n1, const float* x, int tokens, const float* bias,
                 float* out, int64_t ldo) {
  const int64_t row0 = int64_t(e) * rows + n0;
  if (mxfp4) {
    const int64_t nb = cols / 32;
    cpu::f32_mf4w_matmul(x, cols, tokens, blocks.u8() + row0 * nb * 16, scales.u8() + row0 * nb,
                         cols, bias, out, ldo, 0, n1 - n0);
  } else if (blocks.dtype == DType::kBF16) {
    cpu::f32_bf16w_matmul(x, cols, tokens, blocks.bf16() + row0 * cols, cols, bias, out, ldo, 0,
                          n1 - n0);
  } else {
    cpu::f32_f32w_matmul(x, cols, tokens, blocks.f32() + row0 * cols, cols, bias, out, ldo, 0,
                         n1 - n0);
  }
}

// Where activation i of a row lands in the MXFP4 deinterleaved order (evens, then odds, per 32).
inline int deinterleaved_index(int i) {
  const int j = i & 31;
  return (i & ~31) + (j & 1 ? 16 + j / 2 : j / 2);
}

}  // namespace

void workspace_init(Workspace& ws, const ModelConfig& c, int max_rows, int max_logit_rows,
                    int threads, int context_length) {
  const int64_t B = max_rows, H = c.hidden_size, D = c.head_dim, E = c.num_experts,
                k = c.experts_per_token, I = c.intermediate_size;
  const int64_t qkv = int64_t(c.num_attention_heads + 2 * c.num_key_value_heads) * D;
  ws.max_rows = max_rows;
  ws.x = FloatBuffer(B * H);
  ws.t = FloatBuffer(B * H);
  ws.qkv = FloatBuffer(B * qkv);
  ws.attn = FloatBuffer(B * c.num_attention_heads * D);
  ws.proj = FloatBuffer(B * H);
  ws.gate = FloatBuffer(B * E);
  ws.topk_expert.assign(B * k, 0);
  ws.topk_weight = FloatBuffer(B * k);
  ws.expert_count.assign(E, 0);
  ws.expert_offset.assign(E + 1, 0);
  ws.active_experts.reserve(E);
  ws.group_row.assign(B * k, 0);
  ws.assignment_at.assign(B * k, 0);
  ws.expert_in = FloatBuffer(B * k * H);
  ws.expert_act = FloatBuffer(B * k * I);
  ws.expert_out = FloatBuffer(B * k * H);
  ws.mlp1_tile = FloatBuffer(int64_t(threads) * B * kMlp1Chunk);
  ws.scores = FloatBuffer(int64_t(threads) * context_length);
  ws.rope_cos = FloatBuffer(int64_t(context_length) * (D / 2));
  ws.rope_sin = FloatBuffer(int64_t(context_length) * (D / 2));
  cpu::rope_tables(c, context_length, ws.rope_cos.data(), ws.rope_sin.data());
  ws.max_logit_rows = max_logit_rows;
  ws.final_hidden = FloatBuffer(int64_t(max_logit_rows) * H);
  ws.logits = FloatBuffer(int64_t(max_logit_rows) * c.vocab_size);
}

void forward_step(const Model::Impl& model, Workspace& ws, KvCache& kv, ThreadPool& pool,
                  std::span<const StepRow> rows, std::span<const int> logit_rows) {
  const ModelWeights& w = model.weights;
  const ModelConfig& c = w.config;
  const int B = int(rows.size());
  const int H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
            NKV = c.num_key_value_heads, E = c.num_experts, K = c.experts_per_token,
            I = c.intermediate_size, QKV = model.qkv_rows;
  const float attn_scale = 1.0f / std::sqrt(float(D));
  float* x = ws.x.data();        // [B, H]
  float* t = ws.t.data();        // [B, H]
  float* qkv = ws.qkv.data();    // [B, QKV]
  float* attn = ws.attn.data();  // [B, NH D]
  float* proj = ws.proj.data();  // [B, H]

  // Embedding: x = embedding[token].
  for (int r = 0; r < B; ++r) {
    const int64_t off = int64_t(rows[r].token) * H;
    for (int j = 0; j < H; ++j)
      x[r * H + j] = w.embedding.dtype == DType::kBF16 ? bf16_to_f32(w.embedding.bf16()[off + j])
                                                       : w.embedding.f32()[off + j];
  }

  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[l];

    // ---- attention: t = RMSNorm(x); qkv = t Wqkv^T + b; RoPE on q and k; cache k, v.
    for (int r = 0; r < B; ++r) cpu::rmsnorm(x + r * H, lw.attn_norm.f32(), H, kRmsEps, t + r * H);
    linear(pool, lw.qkv_w, QKV, H, lw.qkv_b.f32(), t, B, qkv);
    for (int r = 0; r < B; ++r) {
      float* q = qkv + int64_t(r) * QKV;  // [NH, D], then k [NKV, D], then v [NKV, D]
      const float* cos_row = ws.rope_cos.data() + int64_t(rows[r].pos) * (D / 2);
      const float* sin_row = ws.rope_sin.data() + int64_t(rows[r].pos) * (D / 2);
      cpu::rope_apply(q, NH, D, cos_row, sin_row);
      cpu::rope_apply(q + NH * D, NKV, D, cos_row, sin_row);
      std::copy_n(q + NH * D, NKV * D, kv.key(rows[r].slot, l, rows[r].pos));
      std::copy_n(q + (NH + NKV) * D, NKV * D, kv.value(rows[r].slot, l, rows[r].pos));
    }
    // Each (row, query head) attends over its sequence's cache: causal, the last
    // sliding_window keys on even layers, the sink logit in the denominator.
    const bool windowed = layer_window(c, l) > 0;
    pool.parallel_for(int64_t(B) * NH, 8, [&](int64_t begin, int64_t end, int worker) {
      float* scores = ws.scores.data() + int64_t(worker) * kv.positions;
      for (int64_t i = begin; i < end; ++i) {
        const int r = int(i / NH), h = int(i % NH), kvh = h / (NH / NKV);
        const StepRow& row = rows[r];
        const int first = windowed ? std::max(0, row.pos - c.sliding_window + 1) : 0;
        cpu::attention_head(qkv + int64_t(r) * QKV + h * D, kv.key(row.slot, l, first) + kvh * D,
                            kv.value(row.slot, l, first) + kvh * D, kv.width, row.pos - first + 1,
                            D, lw.sinks.f32()[h], attn_scale, scores,
                            attn + (int64_t(r) * NH + h) * D);
      }
    });
    // x = x + attn Wout^T + b
    linear(pool, lw.out_w, H, NH * D, lw.out_b.f32(), attn, B, proj);
    for (int64_t i = 0; i < int64_t(B) * H; ++i) x[i] += proj[i];

    // ---- mixture of experts: t = RMSNorm(x); router top-k; softmax over the k.
    for (int r = 0; r < B; ++r) cpu::rmsnorm(x + r * H, lw.mlp_norm.f32(), H, kRmsEps, t + r * H);
    linear(pool, lw.gate_w, E, H, lw.gate_b.f32(), t, B, ws.gate.data());
    for (int r = 0; r < B; ++r)
      cpu::router_topk(ws.gate.data() + r * E, E, K, ws.topk_expert.data() + r * K,
                       ws.topk_weight.data() + r * K);

    // Group the (row, slot) assignments by expert (counting sort), so that each expert's
    // weights are read once for all rows routed to it.
    std::fill(ws.expert_count.begin(), ws.expert_count.end(), 0);
    for (int i = 0; i < B * K; ++i) ++ws.expert_count[ws.topk_expert[i]];
    ws.active_experts.clear();
    ws.expert_offset[0] = 0;
    for (int e = 0; e < E; ++e) {
      ws.expert_offset[e + 1] = ws.expert_offset[e] + ws.expert_count[e];
      if (ws.expert_count[e]) ws.active_experts.push_back(e);
      ws.expert_count[e] = ws.expert_offset[e];  // now the fill cursor
    }
    const bool mxfp4 = w.experts_mxfp4;
    for (int r = 0; r < B; ++r)
      for (int s = 0; s < K; ++s) {
        const int at = ws.expert_count[ws.topk_expert[r * K + s]]++;
        ws.group_row[at] = r;
        ws.assignment_at[r * K + s] = at;
        float* dst = ws.expert_in.data() + int64_t(at) * H;
        if (mxfp4)
          cpu::mf4_deinterleave(t + r * H, H, dst);
        else
          std::copy_n(t + r * H, H, dst);
      }

    // mlp1 + clamped SwiGLU, fused: a unit computes kMlp1Chunk rows (gate/linear pairs) of one
    // expert for all its rows into a per-thread tile, then writes the activations.
    const int n_active = int(ws.active_experts.size());
    const int units1 = (2 * I + kMlp1Chunk - 1) / kMlp1Chunk;
    pool.parallel_for(int64_t(n_active) * units1, 1, [&](int64_t begin, int64_t end, int worker) {
      float* tile = ws.mlp1_tile.data() + int64_t(worker) * ws.max_rows * kMlp1Chunk;
      for (int64_t u = begin; u < end; ++u) {
        const int e = ws.active_experts[u / units1];
        const int n0 = int(u % units1) * kMlp1Chunk, n1 = std::min(2 * I, n0 + kMlp1Chunk);
        const int base = ws.expert_offset[e], count = ws.expert_offset[e + 1] - base;
        expert_rows(lw.mlp1_blocks, lw.mlp1_scales, mxfp4, e, 2 * I, H, n0, n1,
                    ws.expert_in.data() + int64_t(base) * H, count,
                    lw.mlp1_b.f32() + int64_t(e) * 2 * I + n0, tile, n1 - n0);
        const int pairs = (n1 - n0) / 2;
        for (int i = 0; i < count; ++i) {
          float act[kMlp1Chunk / 2];
          cpu::swiglu_interleaved(tile + i * (n1 - n0), pairs, c.swiglu_limit, act);
          float* dst = ws.expert_act.data() + int64_t(base + i) * I;
          for (int p = 0; p < pairs; ++p) {
            const int a = n0 / 2 + p;
            dst[mxfp4 ? deinterleaved_index(a) : a] = act[p];
          }
        }
      }
    });
    // mlp2: y = a Wmlp2[e]^T + b, per expert over its rows.
    const int units2 = (H + kRowGrain - 1) / kRowGrain;
    pool.parallel_for(int64_t(n_active) * units2, 1, [&](int64_t begin, int64_t end, int) {
      for (int64_t u = begin; u < end; ++u) {
        const int e = ws.active_experts[u / units2];
        const int n0 = int(u % units2) * int(kRowGrain), n1 = std::min<int>(H, n0 + kRowGrain);
        const int base = ws.expert_offset[e], count = ws.expert_offset[e + 1] - base;
        expert_rows(lw.mlp2_blocks, lw.mlp2_scales, mxfp4, e, H, I, n0, n1,
                    ws.expert_act.data() + int64_t(base) * I, count,
                    lw.mlp2_b.f32() + int64_t(e) * H + n0,
                    ws.expert_out.data() + int64_t(base) * H + n0, H);
      }
    });
    // x = x + sum_s weight_s * y_s, in slot order (the same sum whatever the batch).
    for (int r = 0; r < B; ++r) {
      float* pr = proj + r * H;
      std::fill_n(pr, H, 0.0f);
      for (int s = 0; s < K; ++s) {
        const float wgt = ws.topk_weight[r * K + s];
        const float* y = ws.expert_out.data() + int64_t(ws.assignment_at[r * K + s]) * H;
        for (int j = 0; j < H; ++j) pr[j] += wgt * y[j];
      }
      for (int j = 0; j < H; ++j) x[r * H + j] += pr[j];
    }
  }

  // Final RMSNorm and unembedding, only for the rows whose logits are wanted.
  const int L = int(logit_rows.size());
  for (int i = 0; i < L; ++i)
    cpu::rmsnorm(x + int64_t(logit_rows[i]) * H, w.norm.f32(), H, kRmsEps,
                 ws.final_hidden.data() + int64_t(i) * H);
  if (L > 0)
    linear(pool, w.unembedding, c.vocab_size, H, nullptr, ws.final_hidden.data(), L,
           ws.logits.data());
}

}  // namespace mind4

namespace mind4 {
namespace {

// The reference line behind the StepBackend seam: fp32 KV cache, workspace and thread pool.
class CpuBackend final : public StepBackend {
 public:
  CpuBackend(const Model::Impl& model, const ContextOptions& o, int max_logit_rows)
      : model_(model), pool_(o.threads) {
    const ModelConfig& c = model.weights.config;
    const int S = o.max_sequences;
    const int width = c.num_key_value_heads * c.head_dim;
    const int64_t kv_floats = int64_t(S) * c.num_hidden_layers * o.context_length * width;
    try {
      kv_.layers = c.num_hidden_layers;
      kv_.positions = o.context_length;
      kv_.width = width;
      kv_.k = FloatBuffer(kv_floats);
      kv_.v = FloatBuffer(kv_floats);
      workspace_init(ws_, c, o.max_batch_tokens, max_logit_rows, pool_.size(), o.context_length);
    } catch (const std::bad_alloc&) {
      throw Error(Status::kOutOfMemory,
                  detail::cat("Context: cannot allocate the KV cache and scratch (KV cache ",
                              2 * kv_floats * 4 / (1 << 20), " MiB for ", S, " sequences x ",
                              o.context_length, " positions)"));
    }
  }

  std::span<const float> forward(std::span<const StepRow> rows,
                                 std::span<const int> logit_rows) override {
    forward_step(model_, ws_, kv_, pool_, rows, logit_rows);
    return {ws_.logits.data(), logit_rows.size() * size_t(model_.weights.config.vocab_size)};
  }
  int threads() const override { return pool_.size(); }

 private:
  const Model::Impl& model_;
  ThreadPool pool_;
  KvCache kv_;
  Workspace ws_;
};

}  // namespace

std::unique_ptr<StepBackend> make_cpu_backend(const Model::Impl& model,
                                              const ContextOptions& options, int max_logit_rows) {
  return std::make_unique<CpuBackend>(model, options, max_logit_rows);
}

}  // namespace mind4
