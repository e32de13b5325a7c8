// The CUDA half of `mind4 bench` (bench_cuda.cpp), called by cmd_bench.cpp for --backend cuda.
#pragma once

#include <string>
#include <vector>

namespace mind4_bench_cuda {

struct CudaBenchArgs {
  std::string checkpoint, dtype;
  int prefill_tokens, decode_context, decode_tokens, runs;
  std::vector<int> batch_sizes;
  bool json;
  bool sampling = false;  // also decode that samples (on the host, then on the GPU)
};

// Prints the figures (or JSON); kUnsupported in a build without the CUDA line.
void run(const CudaBenchArgs& args);

}  // namespace mind4_bench_cuda
