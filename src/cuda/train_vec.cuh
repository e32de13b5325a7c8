// Wide loads and stores of the training's elementwise kernels, and the block shape of a kernel
// over rows. The kernels are memory-bound: one 16-byte access moves what eight 2-byte ones did,
// so that the same number of threads keeps enough bytes in flight to fill the card's bandwidth.
// A kernel takes its width as a template argument: the wide width where the launcher finds the
// rows a multiple of it and every pointer on the 16-byte grid (train_aligned16), else 1 (element
// by element, any alignment).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/device_util.cuh"

namespace mind4::cuda {

// A 32-bit lane of a wide word holds 4 / sizeof(T) elements: to float (the same conversion as
// to_f32), and from float (each rounded by from_f32, the only rounding point). Built from lanes,
// not by writing elements through a pointer into the word: nvcc then keeps the 16-byte store.
template <typename T>
__device__ __forceinline__ void train_lane_to_f32(uint32_t u, float* v) {
  if constexpr (sizeof(T) == 4) {
    v[0] = __uint_as_float(u);
  } else {
    v[0] = to_f32(__ushort_as_bfloat16(static_cast<unsigned short>(u & 0xffffu)));
    v[1] = to_f32(__ushort_as_bfloat16(static_cast<unsigned short>(u >> 16)));
  }
}
template <typename T>
__device__ __forceinline__ uint32_t train_f32_to_lane(const float* v) {
  if constexpr (sizeof(T) == 4) {
    return __float_as_uint(v[0]);
  } else {
    return uint32_t(__bfloat16_as_ushort(from_f32<__nv_bfloat16>(v[0]))) |
           uint32_t(__bfloat16_as_ushort(from_f32<__nv_bfloat16>(v[1]))) << 16;
  }
}

// The 16 / sizeof(T) elements of a 16-byte word as float, and floats rounded to T into one.
template <typename T>
__device__ __forceinline__ void train_unpack16(const uint4& w, float* v) {
  constexpr int kPerLane = 4 / int(sizeof(T));
  train_lane_to_f32<T>(w.x, v);
  train_lane_to_f32<T>(w.y, v + kPerLane);
  train_lane_to_f32<T>(w.z, v + 2 * kPerLane);
  train_lane_to_f32<T>(w.w, v + 3 * kPerLane);
}
template <typename T>
__device__ __forceinline__ uint4 train_pack16(const float* v) {
  constexpr int kPerLane = 4 / int(sizeof(T));
  return make_uint4(train_f32_to_lane<T>(v), train_f32_to_lane<T>(v + kPerLane),
                    train_f32_to_lane<T>(v + 2 * kPerLane), train_f32_to_lane<T>(v + 3 * kPerLane));
}

// N consecutive elements from p as float. kWide: in 16-byte words (8 bytes where that is all),
// p aligned to them; otherwise one element at a time (any alignment). The wide accesses go
// through __ldg / __stwb, which always emit one vector instruction (plain dereferences of the
// words were split into 4-byte accesses by nvcc 12 in some of these kernels). __ldg: every input
// here is read-only for the kernel's lifetime.
template <int N, bool kWide, typename T>
__device__ __forceinline__ void train_load(const T* __restrict__ p, float* v) {
  if constexpr (kWide) {
    constexpr int kBytes = N * int(sizeof(T)), kPerLane = 4 / int(sizeof(T));
    static_assert(kBytes % 16 == 0 || kBytes == 8, "wide accesses are 16-byte words or 8 bytes");
    if constexpr (kBytes == 8) {
      const uint2 w = __ldg(reinterpret_cast<const uint2*>(p));
      train_lane_to_f32<T>(w.x, v);
      train_lane_to_f32<T>(w.y, v + kPerLane);
    } else {
#pragma unroll
      for (int k = 0; k < kBytes / 16; ++k)
        train_unpack16<T>(__ldg(reinterpret_cast<const uint4*>(p) + k), v + k * 4 * kPerLane);
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = to_f32(p[i]);
  }
}

// The store: each v[i] rounded to T, then written as train_load reads.
template <int N, bool kWide, typename T>
__device__ __forceinline__ void train_store(T* __restrict__ p, const float* v) {
  if constexpr (kWide) {
    constexpr int kBytes = N * int(sizeof(T)), kPerLane = 4 / int(sizeof(T));
    static_assert(kBytes % 16 == 0 || kBytes == 8, "wide accesses are 16-byte words or 8 bytes");
    if constexpr (kBytes == 8) {
      __stwb(reinterpret_cast<uint2*>(p),
             make_uint2(train_f32_to_lane<T>(v), train_f32_to_lane<T>(v + kPerLane)));
    } else {
#pragma unroll
      for (int k = 0; k < kBytes / 16; ++k)
        __stwb(reinterpret_cast<uint4*>(p) + k, train_pack16<T>(v + k * 4 * kPerLane));
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = from_f32<T>(v[i]);
  }
}

inline bool train_aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Block of 256 threads over rows of `items` work items each: x along the row (the smallest power
// of two from 32 to 256 that covers it, so that short rows do not leave most threads idle), y over
// rows. Grid: enough blocks for `rows` rows (the kernels stride over rows beyond it).
inline dim3 train_row_block(int items) {
  int tx = 32;
  while (tx < items && tx < 256) tx *= 2;
  return dim3(tx, 256 / tx);
}
inline int train_row_grid(int64_t rows, dim3 block) {
  return int(std::clamp<int64_t>((rows + block.y - 1) / block.y, 1, int64_t(1) << 24));
}

}  // namespace mind4::cuda
