// A small persistent thread pool for the CPU reference line. Decode calls parallel_for about ten
// times per layer, so a call must cost microseconds, not the tens of microseconds of creating
// threads or going through a queue of std::function: workers stay alive, spin briefly on a
// generation counter, then sleep on it (futex via std::atomic::wait); the caller takes part in
// the work and chunks are handed out by one atomic counter (dynamic balancing for uneven rows).
// The caller never waits for a worker that has not started: on a machine where another program
// holds a core, the caller does the work alone instead of waiting a scheduler slice for it.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <type_traits>
#include <vector>

namespace mind4 {

class ThreadPool {
 public:
  // threads = total threads doing work, the caller included; 0 = all hardware threads.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end, worker) for consecutive chunks of [0, n) of at most `grain` items;
  // worker is in [0, size()) (index per-thread scratch with it). Returns when every chunk is
  // done. An exception thrown by fn is rethrown here (the first one; other chunks still run).
  // Not reentrant: fn must not call parallel_for on the same pool.
  template <typename Fn>
  void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (workers_.empty() || n <= grain) {
      fn(int64_t(0), n, 0);
      return;
    }
    using F = std::remove_reference_t<Fn>;
    run(n, grain, &trampoline<F>, const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using Call = void (*)(void* fn, int64_t begin, int64_t end, int worker);
  template <typename Fn>
  static void trampoline(void* fn, int64_t begin, int64_t end, int worker) {
    (*static_cast<Fn*>(fn))(begin, end, worker);  // Fn may be const
  }

  void run(int64_t n, int64_t grain, Call call, void* fn);
  void work_on_current_job(int worker);
  void worker_main(int worker);

  std::vector<std::thread> workers_;
  // The current job; written by the caller before generation_ is bumped.
  Call call_ = nullptr;
  void* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  std::atomic<int64_t> next_{0};
  // Workers join a job through joined_, which the caller closes (makes negative) once every chunk
  // is taken; it then waits for done_ to reach the number that joined. A worker that was asleep
  // or descheduled and wakes after that finds the job closed and costs the caller nothing.
  std::atomic<int> joined_{0};
  std::atomic<int> done_{0};
  std::atomic<uint32_t> generation_{0};  // bumped once per job; workers wait for a change
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

}  // namespace mind4
