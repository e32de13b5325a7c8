#include "train/engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "mind4/status.h"
#include "train/gemm.h"
#include "train/optimizer.h"

#ifdef MIND4_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace mind4::train {
namespace {

// The matrix throughput this machine reaches with the training kernel (square products over the
// whole pool): the "peak" of the CPU MFU figure, measured, as the GPU figures use a measured peak.
double cpu_engine_measure_peak(ThreadPool& pool) {
  using clock = std::chrono::steady_clock;
  const int n = 384;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  gemm_nt(pool, a.data(), n, n, b.data(), n, n, static_cast<const float*>(nullptr), c.data(), n);
  int reps = 0;
  const auto t0 = clock::now();
  double s = 0.0;
  do {
    gemm_nt(pool, a.data(), n, n, b.data(), n, n, static_cast<const float*>(nullptr), c.data(), n);
    ++reps;
    s = std::chrono::duration<double>(clock::now() - t0).count();
  } while (s < 0.3);
  return 2.0 * n * n * double(n) * reps / s;
}

// TrainModel<float> + AdamW on the thread pool: the arithmetic the PyTorch parity and the
// bit-for-bit resume tests pin down.
class CpuTrainEngine final : public TrainEngine {
 public:
  CpuTrainEngine(const TrainConfig& cfg, const ParamLayout& layout, ThreadPool& pool)
      : layout_(layout),
        pool_(pool),
        params_(size_t(layout.total), 0.0f),
        grads_(size_t(layout.total), 0.0f),
        opt_(layout_, cfg.adamw),
        model_(layout_, cfg.micro_batch, cfg.seq_len, cfg.aux_loss_coef, pool) {}

  void zero_grads() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }
  LossParts accumulate(const int* tokens, const int* targets, float grad_scale) override {
    return model_.run(params_.data(), tokens, targets, grads_.data(), grad_scale);
  }
  double clip_and_update(double max_norm, double lr) override {
    const double norm = clip_grad_norm(pool_, grads_.data(), layout_.total, max_norm);
    opt_.update(pool_, params_.data(), grads_.data(), lr);
    return norm;
  }
  double eval_loss(const int* tokens, const int* targets) override {
    return model_.run(params_.data(), tokens, targets, nullptr, 1.0f).ce;
  }
  void read_state(float* p, float* m, float* v) override {
    std::memcpy(p, params_.data(), params_.size() * sizeof(float));
    std::memcpy(m, opt_.m().data(), params_.size() * sizeof(float));
    std::memcpy(v, opt_.v().data(), params_.size() * sizeof(float));
  }
  void write_state(const float* p, const float* m, const float* v, int64_t step) override {
    std::memcpy(params_.data(), p, params_.size() * sizeof(float));
    std::memcpy(opt_.m().data(), m, params_.size() * sizeof(float));
    std::memcpy(opt_.v().data(), v, params_.size() * sizeof(float));
    opt_.set_step(step);
  }
  void read_grads(float* g) override {
    std::memcpy(g, grads_.data(), grads_.size() * sizeof(float));
  }
  double peak_flops() override { return cpu_engine_measure_peak(pool_); }
  std::string describe() const override {
    return "cpu, float32, " + std::to_string(pool_.size()) + " threads";
  }

 private:
  ParamLayout layout_;
  ThreadPool& pool_;
  std::vector<float> params_, grads_;
  AdamW opt_;
  TrainModel<float> model_;
};

}  // namespace

#ifdef MIND4_HAVE_CUDA
std::string cuda_train_gpu_missing() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("no usable CUDA GPU (") + cudaGetErrorString(e) + ")";
  if (n == 0) return "no CUDA GPU on this machine";
  return "";
}
#endif

void check_train_backend(const TrainConfig& c) {
  if (c.execution.backend != Backend::kCuda) return;
#ifdef MIND4_HAVE_CUDA
  const std::string why = cuda_train_gpu_missing();
  MIND4_CHECK(why.empty(), Status::kUnsupported, c.source, ": execution.backend is cuda, but ", why,
              "; use backend: cpu with dtype: float32 (and a smaller model)");
#else
  throw Error(Status::kUnsupported,
              c.source +
                  ": execution.backend is cuda, but this build of mind4 has no CUDA line (it was "
                  "configured without nvcc); use backend: cpu with dtype: float32");
#endif
}

std::unique_ptr<TrainEngine> make_cpu_train_engine(const TrainConfig& c, const ParamLayout& layout,
                                                   ThreadPool& pool) {
  return std::make_unique<CpuTrainEngine>(c, layout, pool);
}

std::unique_ptr<TrainEngine> make_train_engine(const TrainConfig& c, const ParamLayout& layout,
                                               ThreadPool& pool) {
  check_train_backend(c);
#ifdef MIND4_HAVE_CUDA
  if (c.execution.backend == Backend::kCuda) return make_cuda_train_engine(c, layout);
#endif
  return make_cpu_train_engine(c, layout, pool);
}

}  // namespace mind4::train
