// The CPU line's thread pool: every index of a parallel_for is visited exactly once, whatever the
// thread count (more threads than cores included, where workers wake late and join jobs that the
// caller has already closed or a later job), and an exception thrown by a chunk reaches the
// caller.
#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "core/thread_pool.h"

namespace mind4 {
namespace {

TEST(ThreadPool, EveryIndexOnceAtAnyThreadCount) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    std::vector<int> hits(4000);
    for (int rep = 0; rep < 1500; ++rep) {
      const int n = 1 + (rep * 37) % 4000, grain = 1 + rep % 64;
      std::fill(hits.begin(), hits.begin() + n, 0);
      pool.parallel_for(n, grain, [&](int64_t begin, int64_t end, int worker) {
        ASSERT_GE(worker, 0);
        ASSERT_LT(worker, pool.size());
        for (int64_t i = begin; i < end; ++i) ++hits[size_t(i)];
      });
      for (int i = 0; i < n; ++i)
        ASSERT_EQ(hits[size_t(i)], 1)
            << "threads " << threads << ", job " << rep << ", index " << i;
    }
  }
}

TEST(ThreadPool, ChunkExceptionReachesTheCaller) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(1000, 10,
                                 [](int64_t begin, int64_t, int) {
                                   if (begin == 500) throw std::runtime_error("chunk 50");
                                 }),
               std::runtime_error);
  // The pool still works afterwards.
  std::vector<int> hits(100);
  pool.parallel_for(100, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) ++hits[size_t(i)];
  });
  for (int h : hits) EXPECT_EQ(h, 1);
}

}  // namespace
}  // namespace mind4
