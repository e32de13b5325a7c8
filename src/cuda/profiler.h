// Per-op GPU time of the forward step, for finding where a step's time goes: with
// MIND4_CUDA_PROFILE=1 in the environment, every eager step records an event after each op, the
// times are summed per op name (the first step of each shape is left out: one-time costs), and
// the table is printed to stderr when the context goes away. Beside each op's GPU time it shows the
// host's time from the previous mark to this one (enqueueing the op's launches, and any wait in
// them): where the host's time is the larger, the GPU waited for the host.
// CUDA graphs are off while profiling (their nodes cannot be timed one by one).
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace mind4::cuda {

class StepProfiler {
 public:
  StepProfiler();
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  bool on() const { return on_; }
  void begin(cudaStream_t s, int rows);       // before the step's first launch
  void mark(cudaStream_t s, const char* op);  // after op's launches
  void end();                                 // after the step has been synchronised

 private:
  bool on_ = false;
  std::vector<cudaEvent_t> events_;
  std::vector<const char*> names_;
  std::vector<std::chrono::steady_clock::time_point> host_;
  size_t used_ = 0;
  int rows_ = 0;
  std::map<std::string, std::map<std::string, double>> total_ms_;  // by "rows=B" then op
  std::map<std::string, std::map<std::string, double>> host_ms_;
  std::map<std::string, int> steps_, seen_;
};

}  // namespace mind4::cuda
