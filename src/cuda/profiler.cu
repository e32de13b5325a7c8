// StepProfiler: events between ops, summed per op name and step shape.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cuda/check.h"
#include "cuda/profiler.h"

namespace mind4::cuda {

namespace {
constexpr size_t kProfilerEvents = 2048;
}

StepProfiler::StepProfiler() {
  const char* v = std::getenv("MIND4_CUDA_PROFILE");
  on_ = v && *v && *v != '0';
  if (!on_) return;
  events_.resize(kProfilerEvents);
  names_.resize(kProfilerEvents);
  host_.resize(kProfilerEvents);
  for (auto& e : events_) check(cudaEventCreate(&e), "cudaEventCreate (profiler)");
}

StepProfiler::~StepProfiler() {
  for (auto& [shape, ops] : total_ms_) {
    double sum = 0;
    for (auto& [op, ms] : ops) sum += ms;
    std::vector<std::pair<double, std::string>> sorted;
    for (auto& [op, ms] : ops) sorted.emplace_back(ms, op);
    std::sort(sorted.rbegin(), sorted.rend());
    const int n = steps_[shape];
    std::fprintf(stderr,
                 "mind4 cuda profile, steps of %s: %d steps, %.3f ms per step\n"
                 "  %-24s %9s %6s %14s\n",
                 shape.c_str(), n, sum / n, "op", "GPU us", "", "host us (enqueue)");
    for (auto& [ms, op] : sorted)
      std::fprintf(stderr, "  %-24s %9.1f %5.1f%% %14.1f\n", op.c_str(), 1e3 * ms / n,
                   100 * ms / sum, 1e3 * host_ms_[shape][op] / n);
  }
  for (auto& e : events_) cudaEventDestroy(e);
}

void StepProfiler::begin(cudaStream_t s, int rows) {
  if (!on_) return;
  used_ = 0;
  rows_ = rows;
  mark(s, nullptr);
}

void StepProfiler::mark(cudaStream_t s, const char* op) {
  if (!on_ || used_ >= events_.size()) return;
  check(cudaEventRecord(events_[used_], s), "cudaEventRecord (profiler)");
  host_[used_] = std::chrono::steady_clock::now();
  names_[used_++] = op;
}

void StepProfiler::end() {
  if (!on_ || used_ == 0) return;
  const std::string shape = "rows=" + std::to_string(rows_);
  // The first step of a shape pays one-time costs (cuBLAS heuristics, kernel attributes): skip it.
  if (++seen_[shape] == 1) return;
  auto& ops = total_ms_[shape];
  auto& host = host_ms_[shape];
  for (size_t i = 1; i < used_; ++i) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, events_[i - 1], events_[i]), "cudaEventElapsedTime");
    ops[names_[i]] += ms;
    host[names_[i]] += std::chrono::duration<double, std::milli>(host_[i] - host_[i - 1]).count();
  }
  ++steps_[shape];
}

}  // namespace mind4::cuda
