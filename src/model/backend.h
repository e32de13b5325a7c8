// The seam between a Context (sequences, queue, batching into steps) and an execution line.
// A Context owns one StepBackend, made for its model's backend: the CPU reference line
// (src/model/forward.cpp) or the CUDA line (src/cuda/). Both see the same steps: rows that mix
// any number of sequences, each a (KV slot, position, token), and the rows whose logits are
// wanted. Nothing here allocates per step.
#pragma once

#include <memory>
#include <span>

#include "model/model_impl.h"

namespace mind4 {

class StepBackend {
 public:
  virtual ~StepBackend() = default;
  // One forward step over rows (at most options.max_batch_tokens). Writes K/V of every row into
  // the backend's cache; returns the logits [logit_rows.size(), V] of the rows named, in host
  // memory, valid until the next call (an empty span when the logits stay in device memory).
  virtual std::span<const float> forward(std::span<const StepRow> rows,
                                         std::span<const int> logit_rows) = 0;
  // Waits for the steps forward() queued and did not wait for (a line that keeps its logits in
  // device memory may return before the step ends when they are not copied to the host).
  virtual void finish() {}
  // Host threads the backend computes with (the CPU line's pool; 1 for the CUDA line).
  virtual int threads() const = 0;

  // ---- lines that keep logits in device memory (CUDA). Such a line also stores each step's
  // wanted logits per KV slot (the last logit row of each slot in the step wins); with
  // set_logits_to_host(false) forward() skips the copy to the host and returns an empty span.
  virtual bool has_device_logits() const { return false; }
  virtual void set_logits_to_host(bool) {}
  // Copies the stored logits of a slot (V floats) to dst.
  virtual void download_logits(int slot, float* dst);
  // One token per job from the slots' stored logits (Context::sample's contract). history: the
  // tokens the penalties count.
  struct SlotSample {
    int slot;
    uint64_t seed, step;
    std::span<const int> history;
  };
  virtual void sample(std::span<const SlotSample> jobs, const SamplingConfig& config,
                      LogprobMode mode, std::span<SampledToken> out);

  // ---- lines that draw a token into the next step on the device (Context::append_sampled).
  virtual bool draws_on_device() const { return false; }
  // Queues one draw a job (no penalties): the forward() whose rows hold the job's slot with
  // token kDrawnToken runs it first and feeds its token to that row.
  virtual void queue_draws(std::span<const SlotSample> jobs, const SamplingConfig& config,
                           LogprobMode mode);
  // The token drawn for slot, waiting for it (a draw no forward() has run yet runs now); a
  // sampler error throws as sample() does. The slot's draw is then forgotten.
  virtual SampledToken take_drawn(int slot);
  // Forgets the slot's draw, run or not.
  virtual void cancel_draw(int) {}
};

// A step row's token that a queued draw provides (see queue_draws).
constexpr int kDrawnToken = -1;

// max_logit_rows: the most rows whose logits one step may want.
std::unique_ptr<StepBackend> make_cpu_backend(const Model::Impl& model,
                                              const ContextOptions& options, int max_logit_rows);

// ---- the CUDA line (src/cuda/backend.cu; src/model/backend_no_cuda.cpp when nvcc was absent) --

// True when this build has the CUDA line compiled in.
bool cuda_compiled();
// Checks that a GPU exists and has room, then uploads the weights once (dense matrices in the
// activation dtype, MXFP4 experts packed as stored). kUnsupported without a GPU or without the
// CUDA line in this build, kOutOfMemory when the GPU lacks room (both before any upload).
std::shared_ptr<const cuda::DeviceModel> cuda_upload_model(const ModelWeights& weights,
                                                           const ExecutionConfig& execution);
std::unique_ptr<StepBackend> make_cuda_backend(const Model::Impl& model,
                                               const ContextOptions& options, int max_logit_rows);

}  // namespace mind4
