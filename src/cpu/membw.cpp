#include "cpu/membw.h"

#include <immintrin.h>

// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 reduce/zero
// intrinsics (a known false positive of the headers, not of this code).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>

#include "core/thread_pool.h"
#include "cpu/isa.h"

namespace mind4::cpu {
namespace {

MIND4_TARGET_AVX512 float stream_sum_avx512(const float* x, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; i < n; ++i) s += x[i];
  return s;
}

MIND4_TARGET_AVX2 float stream_sum_avx2(const float* x, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0;
  for (float v : lanes) s += v;
  for (; i < n; ++i) s += x[i];
  return s;
}

}  // namespace

float stream_sum(const float* x, size_t n) {
  switch (active_isa()) {
    case Isa::kAvx512: return stream_sum_avx512(x, n);
    case Isa::kAvx2: return stream_sum_avx2(x, n);
    case Isa::kScalar: break;
  }
  float s[4] = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int l = 0; l < 4; ++l) s[l] += x[i + l];
  for (; i < n; ++i) s[0] += x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int repeats) {
  const size_t n = bytes / sizeof(float);
  auto buf = std::make_unique_for_overwrite<float[]>(n);
  // Touch every page from the threads that will read it (first touch places pages).
  const int64_t chunks = pool.size() * 16;
  const size_t per = (n + chunks - 1) / chunks;
  pool.parallel_for(chunks, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t c = b; c < e; ++c) {
      size_t lo = std::min(n, size_t(c) * per), hi = std::min(n, lo + per);
      std::fill(buf.get() + lo, buf.get() + hi, 1.0f);
    }
  });
  std::atomic<float> sink{0.0f};
  double best = 0.0;
  for (int r = 0; r <= repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(chunks, 1, [&](int64_t b, int64_t e, int) {
      float s = 0;
      for (int64_t c = b; c < e; ++c) {
        size_t lo = std::min(n, size_t(c) * per), hi = std::min(n, lo + per);
        s += stream_sum(buf.get() + lo, hi - lo);
      }
      sink.store(s, std::memory_order_relaxed);
    });
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, double(n * sizeof(float)) / secs / 1e9);  // r = 0 warms up
  }
  return best;
}

}  // namespace mind4::cpu
