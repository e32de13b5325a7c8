// Shapes: B sequences, S positions, T = B*S rows, H hidden, NH/NKV heads, D head_dim, QKV =
// (NH + 2 NKV) D, E experts, K experts per token, I intermediate, V vocabulary.
#include "train/model.h"

#include <algorithm>
#include <cmath>

#include "cpu/ops.h"
#include "mind4/status.h"
#include "train/ops.h"

namespace mind4::train {

template <typename T>
TrainModel<T>::TrainModel(const ParamLayout& layout, int batch, int seq, float aux_coef,
                          ThreadPool& pool)
    : layout_(layout), B_(batch), S_(seq), T_(batch * seq), aux_coef_(aux_coef), pool_(pool) {
  const ModelConfig& c = layout.config;
  MIND4_CHECK(batch > 0 && seq > 0, Status::kInvalidArgument, "batch and sequence must be > 0");
  const int64_t NT = T_, H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
                NKV = c.num_key_value_heads, E = c.num_experts, K = c.experts_per_token,
                I = c.intermediate_size, V = c.vocab_size, QKV = (NH + 2 * NKV) * D;
  // The rotary tables in T, from the same double-precision frequencies as inference.
  double inv_freq[512], conc;
  cpu::rope_frequencies(c, inv_freq, &conc);
  rope_cos_.resize(size_t(seq) * (D / 2));
  rope_sin_.resize(size_t(seq) * (D / 2));
  for (int p = 0; p < seq; ++p)
    for (int i = 0; i < D / 2; ++i) {
      const double angle = double(p) * inv_freq[i];
      // Rounded through float exactly as cpu::rope_tables, so float training sees the tables the
      // inference forward uses.
      const double cs = std::cos(angle) * conc, sn = std::sin(angle) * conc;
      rope_cos_[p * (D / 2) + i] = std::is_same_v<T, float> ? T(float(cs)) : T(cs);
      rope_sin_[p * (D / 2) + i] = std::is_same_v<T, float> ? T(float(sn)) : T(sn);
    }
  acts_.resize(c.num_hidden_layers);
  for (auto& a : acts_) {
    a.xin.resize(NT * H), a.rstd1.resize(NT), a.t1.resize(NT * H), a.qkv.resize(NT * QKV);
    a.attn.resize(NT * NH * D), a.lse.resize(NT * NH), a.xmid.resize(NT * H), a.rstd2.resize(NT);
    a.t2.resize(NT * H), a.glog.resize(NT * E), a.probs.resize(NT * E), a.topk_w.resize(NT * K);
    a.xe.resize(NT * K * H), a.h.resize(NT * K * 2 * I), a.act.resize(NT * K * I);
    a.y.resize(NT * K * H);
    a.topk_e.resize(NT * K), a.offset.resize(E + 1), a.group_row.resize(NT * K);
    a.assign_at.resize(NT * K);
  }
  xf_.resize(NT * H), rstdf_.resize(NT), tf_.resize(NT * H), logits_.resize(NT * V);
  row_loss_.resize(NT);
  aux_f_.resize(size_t(c.num_hidden_layers) * E);
  dx_.resize(NT * H), dt_.resize(NT * H), dtmp_.resize(NT * H), dqkv_.resize(NT * QKV);
  dattn_.resize(NT * NH * D), dglog_.resize(NT * E), dy_.resize(NT * K * H);
  dact_.resize(NT * K * I), dh_.resize(NT * K * 2 * I), dxe_.resize(NT * K * H), dw_.resize(NT * K);
  dsink_part_.resize(size_t(B_) * NKV * NH), aux_g_.resize(E);
  scores_.resize(size_t(pool.size()) * 2 * seq);  // per worker: attention's two rows of scratch
}

template <typename T>
void TrainModel<T>::forward_layer(int l, const T* P, T* xout) {
  const ModelConfig& c = layout_.config;
  const LayerOffsets& o = layout_.layers[l];
  LayerActs& a = acts_[l];
  const int H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
            NKV = c.num_key_value_heads, E = c.num_experts, K = c.experts_per_token,
            I = c.intermediate_size, QKV = (NH + 2 * NKV) * D, NT = T_;
  const T* x = a.xin.data();  // written by the embedding or the previous layer

  // ---- attention
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r)
      a.rstd1[r] = rmsnorm_fwd(x + r * H, P + o.attn_norm, H, a.t1.data() + r * H);
  });
  gemm_nt(pool_, a.t1.data(), H, NT, P + o.qkv_w, QKV, H, P + o.qkv_b, a.qkv.data(), QKV);
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const int pos = int(r % S_);
      T* q = a.qkv.data() + r * QKV;
      const T* cs = rope_cos_.data() + pos * (D / 2);
      const T* sn = rope_sin_.data() + pos * (D / 2);
      rope_fwd(q, NH, D, cs, sn);
      rope_fwd(q + NH * D, NKV, D, cs, sn);
    }
  });
  const AttnShape shape{S_, NH, NKV, D, layer_window(c, l)};
  const T scale = T(1.0 / std::sqrt(double(D)));
  pool_.parallel_for(int64_t(B_) * NKV, 1, [&](int64_t i0, int64_t i1, int worker) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / NKV;
      attention_fwd(shape, int(i % NKV), a.qkv.data() + b * S_ * QKV, P + o.sinks, scale,
                    a.attn.data() + b * S_ * NH * D, a.lse.data() + b * S_ * NH,
                    scores_.data() + int64_t(worker) * 2 * S_);
    }
  });
  gemm_nt(pool_, a.attn.data(), NH * D, NT, P + o.out_w, H, NH * D, P + o.out_b, a.xmid.data(), H);
  for (int64_t i = 0; i < int64_t(NT) * H; ++i) a.xmid[i] += x[i];

  // ---- mixture of experts
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r)
      a.rstd2[r] = rmsnorm_fwd(a.xmid.data() + r * H, P + o.mlp_norm, H, a.t2.data() + r * H);
  });
  gemm_nt(pool_, a.t2.data(), H, NT, P + o.gate_w, E, H, P + o.gate_b, a.glog.data(), E);
  for (int r = 0; r < NT; ++r) {
    router_fwd(a.glog.data() + r * E, E, K, a.topk_e.data() + r * K, a.topk_w.data() + r * K);
    softmax_fwd(a.glog.data() + r * E, E, a.probs.data() + r * E);
  }
  // Group assignments by expert (counting sort, stable in row order).
  std::vector<int>& off = a.offset;
  std::fill(off.begin(), off.end(), 0);
  for (int i = 0; i < NT * K; ++i) ++off[a.topk_e[i] + 1];
  for (int e = 0; e < E; ++e) {
    aux_f_[size_t(l) * E + e] = double(off[e + 1]) / NT;
    off[e + 1] += off[e];
  }
  std::vector<int>& cursor = a.cursor;
  cursor.assign(off.begin(), off.end() - 1);
  for (int r = 0; r < NT; ++r)
    for (int s = 0; s < K; ++s) {
      const int at = cursor[a.topk_e[r * K + s]]++;
      a.group_row[at] = r;
      a.assign_at[r * K + s] = at;
      std::copy_n(a.t2.data() + int64_t(r) * H, H, a.xe.data() + int64_t(at) * H);
    }
  for (int e = 0; e < E; ++e) {
    const int base = off[e], cnt = off[e + 1] - off[e];
    if (!cnt) continue;
    gemm_nt(pool_, a.xe.data() + int64_t(base) * H, H, cnt, P + o.mlp1_w + int64_t(e) * 2 * I * H,
            2 * I, H, P + o.mlp1_b + int64_t(e) * 2 * I, a.h.data() + int64_t(base) * 2 * I, 2 * I);
    pool_.parallel_for(cnt, 16, [&](int64_t i0, int64_t i1, int) {
      for (int64_t i = base + i0; i < base + i1; ++i)
        swiglu_fwd(a.h.data() + i * 2 * I, I, T(c.swiglu_limit), a.act.data() + i * I);
    });
    gemm_nt(pool_, a.act.data() + int64_t(base) * I, I, cnt, P + o.mlp2_w + int64_t(e) * H * I, H,
            I, P + o.mlp2_b + int64_t(e) * H, a.y.data() + int64_t(base) * H, H);
  }
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      T* xo = xout + r * H;
      std::copy_n(a.xmid.data() + r * H, H, xo);
      for (int s = 0; s < K; ++s) {
        const T w = a.topk_w[r * K + s];
        const T* y = a.y.data() + int64_t(a.assign_at[r * K + s]) * H;
        for (int j = 0; j < H; ++j) xo[j] += w * y[j];
      }
    }
  });
}

template <typename T>
void TrainModel<T>::backward_layer(int l, const T* P, T* G, T grad_scale) {
  const ModelConfig& c = layout_.config;
  const LayerOffsets& o = layout_.layers[l];
  LayerActs& a = acts_[l];
  const int H = c.hidden_size, D = c.head_dim, NH = c.num_attention_heads,
            NKV = c.num_key_value_heads, E = c.num_experts, K = c.experts_per_token,
            I = c.intermediate_size, QKV = (NH + 2 * NKV) * D, NT = T_;
  T* dx = dx_.data();  // in: d loss / d layer output; out: d loss / d layer input

  // ---- mixture of experts: out = xmid + sum_s w_s y_s
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r)
      for (int s = 0; s < K; ++s) {
        const int64_t at = a.assign_at[r * K + s];
        dw_[r * K + s] = train_dot(dx + r * H, a.y.data() + at * H, H);
        const T w = a.topk_w[r * K + s];
        for (int j = 0; j < H; ++j) dy_[at * H + j] = w * dx[r * H + j];
      }
  });
  for (int e = 0; e < E; ++e) {
    const int64_t base = a.offset[e];
    const int cnt = a.offset[e + 1] - a.offset[e];
    if (!cnt) continue;
    T* dy = dy_.data() + base * H;
    gemm_tn_acc(pool_, dy, cnt, H, a.act.data() + base * I, I, G + o.mlp2_w + int64_t(e) * H * I,
                scratch_);
    colsum_acc(pool_, dy, H, cnt, H, G + o.mlp2_b + int64_t(e) * H);
    gemm_nn(pool_, dy, cnt, H, P + o.mlp2_w + int64_t(e) * H * I, I, dact_.data() + base * I,
            scratch_);
    pool_.parallel_for(cnt, 16, [&](int64_t i0, int64_t i1, int) {
      for (int64_t i = base + i0; i < base + i1; ++i)
        swiglu_bwd(a.h.data() + i * 2 * I, I, T(c.swiglu_limit), dact_.data() + i * I,
                   dh_.data() + i * 2 * I);
    });
    T* dh = dh_.data() + base * 2 * I;
    gemm_tn_acc(pool_, dh, cnt, 2 * I, a.xe.data() + base * H, H,
                G + o.mlp1_w + int64_t(e) * 2 * I * H, scratch_);
    colsum_acc(pool_, dh, 2 * I, cnt, 2 * I, G + o.mlp1_b + int64_t(e) * 2 * I);
    gemm_nn(pool_, dh, cnt, 2 * I, P + o.mlp1_w + int64_t(e) * 2 * I * H, H, dxe_.data() + base * H,
            scratch_);
  }
  // Router: the top-k softmax weights, plus the load-balancing term through the full softmax.
  const double aux_scale = double(grad_scale) * aux_coef_ * E / (double(NT) * c.num_hidden_layers);
  for (int e = 0; e < E; ++e) aux_g_[e] = T(aux_scale * aux_f_[size_t(l) * E + e]);
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      T* dg = dglog_.data() + r * E;
      std::fill_n(dg, E, T(0));
      router_bwd(a.topk_e.data() + r * K, a.topk_w.data() + r * K, dw_.data() + r * K, K, dg);
      if (aux_coef_ != 0.0f) softmax_bwd(a.probs.data() + r * E, aux_g_.data(), E, dg);
      // dt2 = sum over slots of the expert inputs' gradients.
      T* dt = dt_.data() + r * H;
      std::fill_n(dt, H, T(0));
      for (int s = 0; s < K; ++s) {
        const T* src = dxe_.data() + int64_t(a.assign_at[r * K + s]) * H;
        for (int j = 0; j < H; ++j) dt[j] += src[j];
      }
    }
  });
  gemm_tn_acc(pool_, dglog_.data(), NT, E, a.t2.data(), H, G + o.gate_w, scratch_);
  colsum_acc(pool_, dglog_.data(), E, NT, E, G + o.gate_b);
  gemm_nn(pool_, dglog_.data(), NT, E, P + o.gate_w, H, dtmp_.data(), scratch_);
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      T* dt = dt_.data() + r * H;
      for (int j = 0; j < H; ++j) dt[j] += dtmp_[r * H + j];
      rmsnorm_bwd(a.xmid.data() + r * H, P + o.mlp_norm, a.rstd2[r], dt, H, dtmp_.data() + r * H,
                  static_cast<T*>(nullptr));
      for (int j = 0; j < H; ++j) dx[r * H + j] += dtmp_[r * H + j];
    }
  });
  // Norm scale gradient by columns (one thread per column: a fixed summation order).
  auto norm_grad = [&](const T* x, const T* rstd, const T* dy, T* dg) {
    pool_.parallel_for(H, 32, [&](int64_t j0, int64_t j1, int) {
      for (int64_t j = j0; j < j1; ++j) {
        T s = 0;
        for (int r = 0; r < NT; ++r) s += dy[int64_t(r) * H + j] * x[int64_t(r) * H + j] * rstd[r];
        dg[j] += s;
      }
    });
  };
  norm_grad(a.xmid.data(), a.rstd2.data(), dt_.data(), G + o.mlp_norm);

  // ---- attention: xmid = xin + attn Wo^T + bo
  gemm_tn_acc(pool_, dx, NT, H, a.attn.data(), NH * D, G + o.out_w, scratch_);
  colsum_acc(pool_, dx, H, NT, H, G + o.out_b);
  gemm_nn(pool_, dx, NT, H, P + o.out_w, NH * D, dattn_.data(), scratch_);
  std::fill(dqkv_.begin(), dqkv_.end(), T(0));
  std::fill(dsink_part_.begin(), dsink_part_.end(), T(0));
  const AttnShape shape{S_, NH, NKV, D, layer_window(c, l)};
  const T scale = T(1.0 / std::sqrt(double(D)));
  pool_.parallel_for(int64_t(B_) * NKV, 1, [&](int64_t i0, int64_t i1, int worker) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / NKV;
      attention_bwd(shape, int(i % NKV), a.qkv.data() + b * S_ * QKV, P + o.sinks, scale,
                    a.attn.data() + b * S_ * NH * D, a.lse.data() + b * S_ * NH,
                    dattn_.data() + b * S_ * NH * D, dqkv_.data() + b * S_ * QKV,
                    dsink_part_.data() + i * NH, scores_.data() + int64_t(worker) * 2 * S_);
    }
  });
  for (int64_t i = 0; i < int64_t(B_) * NKV; ++i)
    for (int h = 0; h < NH; ++h) G[o.sinks + h] += dsink_part_[i * NH + h];
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const int pos = int(r % S_);
      T* dq = dqkv_.data() + r * QKV;
      const T* cs = rope_cos_.data() + pos * (D / 2);
      const T* sn = rope_sin_.data() + pos * (D / 2);
      rope_bwd(dq, NH, D, cs, sn);
      rope_bwd(dq + NH * D, NKV, D, cs, sn);
    }
  });
  gemm_tn_acc(pool_, dqkv_.data(), NT, QKV, a.t1.data(), H, G + o.qkv_w, scratch_);
  colsum_acc(pool_, dqkv_.data(), QKV, NT, QKV, G + o.qkv_b);
  gemm_nn(pool_, dqkv_.data(), NT, QKV, P + o.qkv_w, H, dt_.data(), scratch_);
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      rmsnorm_bwd(a.xin.data() + r * H, P + o.attn_norm, a.rstd1[r], dt_.data() + r * H, H,
                  dtmp_.data() + r * H, static_cast<T*>(nullptr));
      for (int j = 0; j < H; ++j) dx[r * H + j] += dtmp_[r * H + j];
    }
  });
  norm_grad(a.xin.data(), a.rstd1.data(), dt_.data(), G + o.attn_norm);
}

template <typename T>
LossParts TrainModel<T>::run(const T* P, const int* tokens, const int* targets, T* G,
                             T grad_scale) {
  const ModelConfig& c = layout_.config;
  const int H = c.hidden_size, V = c.vocab_size, L = c.num_hidden_layers, E = c.num_experts,
            NT = T_;
  for (int r = 0; r < NT; ++r) {
    MIND4_CHECK(tokens[r] >= 0 && tokens[r] < V && targets[r] >= 0 && targets[r] < V,
                Status::kTokenOutOfRange, "token ", tokens[r], " or target ", targets[r],
                " at row ", r, " is outside the vocabulary of ", V);
  }
  // Embedding into the first layer's input.
  T* x0 = L > 0 ? acts_[0].xin.data() : xf_.data();
  for (int r = 0; r < NT; ++r)
    std::copy_n(P + layout_.embedding + int64_t(tokens[r]) * H, H, x0 + int64_t(r) * H);
  for (int l = 0; l < L; ++l) {
    T* xout = l + 1 < L ? acts_[l + 1].xin.data() : xf_.data();
    forward_layer(l, P, xout);
  }
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r)
      rstdf_[r] = rmsnorm_fwd(xf_.data() + r * H, P + layout_.norm, H, tf_.data() + r * H);
  });
  gemm_nt(pool_, tf_.data(), H, NT, P + layout_.unembedding, V, H, static_cast<const T*>(nullptr),
          logits_.data(), V);

  LossParts loss;
  for (int l = 0; l < L; ++l) {
    const LayerActs& a = acts_[l];
    double aux_l = 0.0;
    for (int e = 0; e < E; ++e) {
      double pe = 0.0;
      for (int r = 0; r < NT; ++r) pe += double(a.probs[int64_t(r) * E + e]);
      aux_l += aux_f_[size_t(l) * E + e] * pe / NT;
    }
    loss.aux += aux_l * E / L;
  }
  if (!G) {
    // Loss only: keep the logits intact (all_logits comparisons), compute the loss in double.
    for (int r = 0; r < NT; ++r) {
      const T* lg = logits_.data() + int64_t(r) * V;
      double m = lg[0], sum = 0.0;
      for (int i = 1; i < V; ++i) m = std::max(m, double(lg[i]));
      for (int i = 0; i < V; ++i) sum += std::exp(double(lg[i]) - m);
      row_loss_[r] = m + std::log(sum) - double(lg[targets[r]]);
    }
  } else {
    const T ce_scale = T(double(grad_scale) / NT);
    pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r)
        row_loss_[r] = cross_entropy_fwd_bwd(logits_.data() + r * V, V, targets[r], ce_scale);
    });
  }
  for (int r = 0; r < NT; ++r) loss.ce += row_loss_[r];
  loss.ce /= NT;
  if (!G) return loss;

  // ---- backward: logits -> final norm -> layers -> embedding
  gemm_tn_acc(pool_, logits_.data(), NT, V, tf_.data(), H, G + layout_.unembedding, scratch_);
  gemm_nn(pool_, logits_.data(), NT, V, P + layout_.unembedding, H, dt_.data(), scratch_);
  pool_.parallel_for(NT, 16, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r)
      rmsnorm_bwd(xf_.data() + r * H, P + layout_.norm, rstdf_[r], dt_.data() + r * H, H,
                  dx_.data() + r * H, static_cast<T*>(nullptr));
  });
  pool_.parallel_for(H, 32, [&](int64_t j0, int64_t j1, int) {
    for (int64_t j = j0; j < j1; ++j) {
      T s = 0;
      for (int r = 0; r < NT; ++r)
        s += dt_[int64_t(r) * H + j] * xf_[int64_t(r) * H + j] * rstdf_[r];
      G[layout_.norm + j] += s;
    }
  });
  for (int l = L - 1; l >= 0; --l) backward_layer(l, P, G, grad_scale);
  for (int r = 0; r < NT; ++r) {
    T* ge = G + layout_.embedding + int64_t(tokens[r]) * H;
    for (int j = 0; j < H; ++j) ge[j] += dx_[int64_t(r) * H + j];
  }
  return loss;
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace mind4::train
