// The experts' segments of grouped rows in the CUDA trainer, one rule for the host (which sizes
// the products by it) and the GPU (which places the rows by it, before the host has the counts).
#pragma once

#include <cuda_runtime_api.h>

namespace mind4::cuda {

struct TrainSegments {
  int capacity;  // rows of every segment when they are uniform, else 0
  int largest;   // the largest segment's rows
};

// offsets [E + 1]: each expert's first row when packed. Each expert's segment is its rows rounded
// up to `tile`; when uniform_max > 0 and no rounded count exceeds it, every segment takes the
// largest (one batched product per matrix). poffsets [E + 1]: where each segment starts.
__host__ __device__ inline TrainSegments train_segments(const int* offsets, int E, int tile,
                                                        int uniform_max, int* poffsets) {
  int largest = 0;
  poffsets[0] = 0;
  for (int e = 0; e < E; ++e) {
    const int rows = (offsets[e + 1] - offsets[e] + tile - 1) / tile * tile;
    largest = rows > largest ? rows : largest;
    poffsets[e + 1] = poffsets[e] + rows;
  }
  const int capacity = uniform_max > 0 && largest <= uniform_max ? largest : 0;
  if (capacity > 0)
    for (int e = 0; e <= E; ++e) poffsets[e] = e * capacity;
  return {capacity, largest};
}

}  // namespace mind4::cuda
