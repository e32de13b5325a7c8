// AdamW (decoupled weight decay, PyTorch's formulation), the learning-rate schedule, and global
// gradient-norm clipping, over the flat parameter array of params.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "train/params.h"

namespace mind4::train {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

enum class DecayKind { kCosine, kLinear };

struct LrSchedule {
  double max_lr = 1e-3, min_lr = 1e-4;
  int64_t warmup_steps = 0, total_steps = 1;
  DecayKind decay = DecayKind::kCosine;
  // Step 0 is the first step: linear warmup (step+1)/warmup * max, then cosine or linear decay
  // from max_lr to min_lr at the last step.
  double at(int64_t step) const;
};

// Per-parameter state (m, v) in fp32 beside fp32 master weights.
class AdamW {
 public:
  AdamW(const ParamLayout& layout, AdamWConfig config);
  // One update at learning rate lr: p -= lr*wd*p (decay tensors only), then the bias-corrected
  // Adam step. `step` counts from 1.
  void update(ThreadPool& pool, float* params, const float* grads, double lr);
  int64_t step() const { return step_; }
  void set_step(int64_t s) { step_ = s; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }

 private:
  const ParamLayout& layout_;
  AdamWConfig config_;
  std::vector<float> m_, v_;
  std::vector<uint8_t> decay_;  // per 16-float chunk of the flat array
  int64_t step_ = 0;
};

// Global L2 norm of grads (in double, a fixed order); when it exceeds max_norm > 0, scales grads
// by max_norm / (norm + 1e-6) as torch.nn.utils.clip_grad_norm_ does. Returns the norm before.
double clip_grad_norm(ThreadPool& pool, float* grads, int64_t n, double max_norm);

}  // namespace mind4::train
