// The two physical ceilings of the GPU, measured in this process (docs/perf-notes.md): device
// copy bandwidth (bytes read + written per second) and bf16 matrix throughput through cuBLAS.
// Benchmarks print their results as fractions of these. Plain C++ (the bench command calls it).
#pragma once

#include <string>

namespace mind4::cuda {

struct Ceilings {
  std::string device;    // the GPU's name
  double copy_gb_per_s;  // 1 GiB device-to-device copies, read + write bytes, median of 10
  double bf16_tflops;    // 8192^3 bf16 GEMM (f32 accumulate) on random data, median of 10
};

Ceilings measure_ceilings();

}  // namespace mind4::cuda
