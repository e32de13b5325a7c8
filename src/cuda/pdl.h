// The host side of programmatic dependent launch (pdl.cuh has the device side and the launch
// helper): a per-thread switch that the backend sets while it enqueues a decode step. Plain C++
// (tests include it).
#pragma once

namespace mind4::cuda {

// Set (per host thread) while a decode step is enqueued: launch_pdl then asks for programmatic
// serialisation. Off for every other launch (prefill, tests unless they set it).
extern thread_local bool pdl_launches;

// RAII: pdl_launches = on within a scope.
class PdlScope {
 public:
  explicit PdlScope(bool on) : saved_(pdl_launches) { pdl_launches = on; }
  ~PdlScope() { pdl_launches = saved_; }
  PdlScope(const PdlScope&) = delete;
  PdlScope& operator=(const PdlScope&) = delete;

 private:
  bool saved_;
};

}  // namespace mind4::cuda
