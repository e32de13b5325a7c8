// The whole gpt-oss model for training: a forward that keeps the activations the backward needs,
// and the backward of every op, over a batch of B sequences of S tokens (all starting at position
// 0). Templated on the scalar: float trains, double checks gradients against finite differences.
//
// Loss = mean cross-entropy over the B*S targets + aux_coef * load-balancing loss, where the
// load-balancing loss is the Switch Transformer one averaged over layers:
//   aux = mean_l E * sum_e f_le * P_le,  f_le = (top-k assignments to e) / tokens,
//                                       P_le = mean over tokens of softmax(router logits)_e.
// (f is a count: only P carries a gradient.)
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "train/gemm.h"
#include "train/params.h"

namespace mind4::train {

struct LossParts {
  double ce = 0.0;   // mean cross-entropy
  double aux = 0.0;  // load-balancing loss (before the coefficient)
};

template <typename T>
class TrainModel {
 public:
  TrainModel(const ParamLayout& layout, int batch, int seq, float aux_coef, ThreadPool& pool);

  // Forward over tokens [B, S] with targets [B, S]; when grads is not null, the backward adds
  // grad_scale * d(ce + aux_coef * aux)/dparams into grads.
  LossParts run(const T* params, const int* tokens, const int* targets, T* grads, T grad_scale);

  int batch() const { return B_; }
  int seq() const { return S_; }
  const ParamLayout& layout() const { return layout_; }
  // Logits [B*S, V] of the last run() without grads (for comparisons with the inference path).
  const T* logits() const { return logits_.data(); }

 private:
  struct LayerActs {
    std::vector<T> xin, rstd1, t1, qkv, attn, lse, xmid, rstd2, t2, glog, probs, topk_w, xe, h, act,
        y;
    std::vector<int> topk_e, offset, group_row, assign_at, cursor;
  };
  void forward_layer(int l, const T* params, T* xout);
  void backward_layer(int l, const T* params, T* grads, T grad_scale);

  ParamLayout layout_;
  int B_, S_, T_;
  float aux_coef_;
  ThreadPool& pool_;
  std::vector<T> rope_cos_, rope_sin_;
  std::vector<LayerActs> acts_;
  std::vector<T> xf_, rstdf_, tf_, logits_;
  std::vector<double> row_loss_;
  std::vector<double> aux_f_;  // per layer [E]: f_le
  // Backward buffers.
  std::vector<T> dx_, dt_, dtmp_, dqkv_, dattn_, dglog_, dy_, dact_, dh_, dxe_, dw_, dsink_part_,
      aux_g_;
  std::vector<T> scores_;  // per worker [2 S]: attention scratch
  GemmScratch<T> scratch_;
};

}  // namespace mind4::train
