// Where a training step runs. run_training (trainer.cpp) owns the data, the schedule, logging and
// checkpoints; a TrainEngine owns the parameters, their gradients and the AdamW state, and runs
// the forward, backward and update on its device: the CPU engine over TrainModel<float> and
// AdamW, the CUDA engine (src/cuda/train_engine.cu) on the GPU. Both keep fp32 master weights
// and fp32 m/v in the flat ParamLayout order, so a checkpoint of either resumes on either.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/thread_pool.h"
#include "train/model.h"
#include "train/params.h"
#include "train/train_config.h"

namespace mind4::train {

class TrainEngine {
 public:
  virtual ~TrainEngine() = default;
  // Starts a step's gradient accumulation (gradients to zero).
  virtual void zero_grads() = 0;
  // Forward and backward over one micro-batch (tokens, targets [batch, seq] on the host), adding
  // grad_scale * d loss / d params to the gradients.
  virtual LossParts accumulate(const int* tokens, const int* targets, float grad_scale) = 0;
  // Clips the accumulated gradients to max_norm (0 = no clipping; torch's clip_grad_norm_) and
  // applies one AdamW update at learning rate lr. Returns the gradient norm before clipping.
  virtual double clip_and_update(double max_norm, double lr) = 0;
  // Mean cross-entropy of one micro-batch, no gradients.
  virtual double eval_loss(const int* tokens, const int* targets) = 0;
  // The fp32 master weights and AdamW m, v (layout.total floats each), and the optimizer step.
  virtual void read_state(float* params, float* adam_m, float* adam_v) = 0;
  virtual void write_state(const float* params, const float* adam_m, const float* adam_v,
                           int64_t step) = 0;
  // The gradients accumulated since zero_grads (layout.total floats; tests compare engines).
  virtual void read_grads(float* grads) = 0;
  // Waits for the work enqueued so far (timings).
  virtual void synchronize() {}
  // The matrix throughput the MFU figure is measured against (FLOP/s) and what it is.
  virtual double peak_flops() = 0;
  virtual std::string describe() const = 0;
};

// Throws Error(kUnsupported) naming execution.backend when the configured backend cannot run in
// this build or on this machine (a CUDA config without a usable GPU): called before any work.
void check_train_backend(const TrainConfig& config);

// The engine of config.execution (check_train_backend first). pool serves the CPU engine.
std::unique_ptr<TrainEngine> make_train_engine(const TrainConfig& config, const ParamLayout& layout,
                                               ThreadPool& pool);

// The CPU engine alone (tests compare the two).
std::unique_ptr<TrainEngine> make_cpu_train_engine(const TrainConfig& config,
                                                   const ParamLayout& layout, ThreadPool& pool);

#ifdef MIND4_HAVE_CUDA
// src/cuda/train_engine.cu: dtype float32 (fp32 everywhere, no TF32) or bfloat16 (bf16 GEMM
// operands with fp32 accumulation, fp32 master weights, statistics and reductions).
struct CudaTrainOptions {
  int attn_tile = 0;    // queries per attention tile (0 = 256; tests use small tiles)
  int keep_probs = -1;  // keep attention P for the backward: 1 yes, 0 recompute, -1 when it fits
  // Fused tensor-core attention (src/cuda/train_flash.cu) in bf16 mode with head dimension 64:
  // 1 on, 0 off, -1 as MIND4_CUDA_TRAIN_FLASH says ("0" = off; on by default: 65.7 -> 52.1 ms per
  // step at issue 5's shape on an H100).
  // Elsewhere (float32, other head dimensions) the cuBLAS route runs and describe() says why.
  int flash = -1;
  // Each layer's expert products as one strided-batched call over uniform segments when no
  // expert has more than 1.25x its even share: 1 allowed, 0 one expert at a time, -1 as
  // MIND4_CUDA_TRAIN_EXPERT_BATCH says ("0" = off; allowed by default).
  int expert_batch = -1;
};
std::unique_ptr<TrainEngine> make_cuda_train_engine(const TrainConfig& config,
                                                    const ParamLayout& layout,
                                                    CudaTrainOptions options = {});
// Empty when a CUDA GPU is usable, else why not.
std::string cuda_train_gpu_missing();
#endif

}  // namespace mind4::train
