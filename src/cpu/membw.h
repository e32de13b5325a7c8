// The machine's memory-read bandwidth, measured in-process: the physical bound that decode faces
// (bytes of weights per token / bandwidth = the fastest possible token).
#pragma once

#include <cstddef>

namespace mind4 {
class ThreadPool;
}

namespace mind4::cpu {

// Sums `bytes` (default 1 GiB: far beyond any cache) with every thread of `pool` reading its own
// slice with wide loads, `repeats` times after one warm-up pass; returns the best GB/s (1e9 B/s).
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30, int repeats = 3);

// Sums n floats reading them with the widest loads available (a pure streaming read).
float stream_sum(const float* x, size_t n);

}  // namespace mind4::cpu
