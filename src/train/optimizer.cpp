#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace mind4::train {

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return max_lr * double(step + 1) / double(warmup_steps);
  const int64_t span = std::max<int64_t>(1, total_steps - 1 - warmup_steps);
  const double progress = std::clamp(double(step - warmup_steps) / double(span), 0.0, 1.0);
  if (decay == DecayKind::kLinear) return max_lr - (max_lr - min_lr) * progress;
  return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

AdamW::AdamW(const ParamLayout& layout, AdamWConfig config)
    : layout_(layout),
      config_(config),
      m_(size_t(layout.total), 0.0f),
      v_(size_t(layout.total), 0.0f),
      decay_(size_t(layout.total / 16), 0) {
  for (const auto& t : layout.tensors)
    if (t.decay)
      for (int64_t c = t.offset / 16; c < (t.offset + t.numel + 15) / 16; ++c) decay_[c] = 1;
}

void AdamW::update(ThreadPool& pool, float* p, const float* g, double lr) {
  ++step_;
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double bc1 = 1.0 - std::pow(b1, double(step_)), bc2 = 1.0 - std::pow(b2, double(step_));
  // The same float arithmetic as torch.optim.AdamW (foreach=False): step_size = lr / bc1,
  // denom = sqrt(v) / sqrt(bc2) + eps.
  const float step_size = float(lr / bc1), bc2_sqrt = float(std::sqrt(bc2));
  const float decay = float(1.0 - lr * config_.weight_decay), eps = float(config_.eps);
  const float fb1 = float(b1), fb2 = float(b2);
  float* m = m_.data();
  float* v = v_.data();
  const int64_t chunks = layout_.total / 16;
  pool.parallel_for(chunks, 1024, [&](int64_t c0, int64_t c1, int) {
    for (int64_t c = c0; c < c1; ++c) {
      const bool dc = decay_[c];
      for (int64_t i = c * 16; i < c * 16 + 16; ++i) {
        if (dc) p[i] *= decay;
        m[i] = fb1 * m[i] + (1.0f - fb1) * g[i];
        v[i] = fb2 * v[i] + (1.0f - fb2) * g[i] * g[i];
        p[i] -= step_size * (m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps));
      }
    }
  });
}

double clip_grad_norm(ThreadPool& pool, float* grads, int64_t n, double max_norm) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(size_t(chunks), 0.0);
  pool.parallel_for(chunks, 1, [&](int64_t c0, int64_t c1, int) {
    for (int64_t c = c0; c < c1; ++c) {
      double s = 0.0;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i)
        s += double(grads[i]) * grads[i];
      partial[c] = s;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  const double norm = std::sqrt(total);
  if (max_norm > 0.0 && norm > max_norm) {
    const float coef = float(max_norm / (norm + 1e-6));
    pool.parallel_for(n, kChunk, [&](int64_t i0, int64_t i1, int) {
      for (int64_t i = i0; i < i1; ++i) grads[i] *= coef;
    });
  }
  return norm;
}

}  // namespace mind4::train
