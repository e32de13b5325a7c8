#include "core/thread_pool.h"

#include <immintrin.h>

namespace mind4 {
namespace {

// Spinning keeps the wake-up latency of back-to-back decode calls near a microsecond; after this
// many pauses (tens of microseconds) a thread sleeps so that an idle pool costs no CPU.
constexpr int kSpinIterations = 20000;
constexpr int kClosedJob = -(1 << 30);

template <typename T, typename Pred>
void spin_then_wait(const std::atomic<T>& a, T old, Pred done) {
  for (int i = 0; i < kSpinIterations; ++i) {
    if (done()) return;
    _mm_pause();
  }
  while (!done()) a.wait(old, std::memory_order_acquire), old = a.load(std::memory_order_acquire);
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = int(std::thread::hardware_concurrency());
  if (threads < 1) threads = 1;
  workers_.reserve(threads - 1);
  for (int w = 1; w < threads; ++w) workers_.emplace_back([this, w] { worker_main(w); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work_on_current_job(int worker) {
  for (;;) {
    int64_t begin = next_.fetch_add(grain_, std::memory_order_relaxed);
    if (begin >= n_) return;
    int64_t end = begin + grain_ < n_ ? begin + grain_ : n_;
    try {
      call_(fn_, begin, end, worker);
    } catch (...) {
      bool expected = false;
      if (failed_.compare_exchange_strong(expected, true)) error_ = std::current_exception();
    }
  }
}

void ThreadPool::worker_main(int worker) {
  uint32_t seen = 0;
  for (;;) {
    spin_then_wait(generation_, seen,
                   [&] { return generation_.load(std::memory_order_acquire) != seen; });
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    // A closed job (negative count) is finished or about to be: nothing to do, nobody waits.
    if (joined_.fetch_add(1, std::memory_order_acq_rel) < 0) continue;
    work_on_current_job(worker);
    done_.fetch_add(1, std::memory_order_acq_rel);
    done_.notify_one();
  }
}

void ThreadPool::run(int64_t n, int64_t grain, Call call, void* fn) {
  call_ = call;
  fn_ = fn;
  n_ = n;
  grain_ = grain;
  failed_.store(false, std::memory_order_relaxed);
  error_ = nullptr;
  next_.store(0, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  // Release: a worker whose fetch_add on joined_ reads this value sees the job's fields above.
  joined_.store(0, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  work_on_current_job(0);
  // Every chunk is taken: close the job. Far below zero, so that late joiners keep it negative.
  const int joined = joined_.exchange(kClosedJob, std::memory_order_acq_rel);
  int done = done_.load(std::memory_order_acquire);
  spin_then_wait(done_, done, [&] { return done_.load(std::memory_order_acquire) == joined; });
  if (failed_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
}

}  // namespace mind4
