// The three matrix products of training, in float (through the vectorised inference kernel
// cpu::f32_f32w_matmul, with explicit transposes so that every product is "rows times rows") and
// in double (plain loops, for the finite-difference tests). Every output element is computed by
// one thread in a fixed order, so results do not depend on the thread count or on scheduling:
// a resumed run repeats an uninterrupted one bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"

namespace mind4::train {

// Grow-only scratch, so that steady-state steps allocate nothing.
template <typename T>
struct GemmScratch {
  std::vector<T> a, b, c;
  static T* sized(std::vector<T>& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
    return v.data();
  }
};

// C[M, N] = A[M, K] (row stride lda) * B[N, K]^T (+ bias[N]); C row stride ldc.
template <typename T>
void gemm_nt(ThreadPool& pool, const T* A, int64_t lda, int M, const T* B, int N, int K,
             const T* bias, T* C, int64_t ldc);
template <>
void gemm_nt<float>(ThreadPool& pool, const float* A, int64_t lda, int M, const float* B, int N,
                    int K, const float* bias, float* C, int64_t ldc);
template <>
void gemm_nt<double>(ThreadPool& pool, const double* A, int64_t lda, int M, const double* B, int N,
                     int K, const double* bias, double* C, int64_t ldc);

// C[M, N] = A[M, K] * B[K, N] (the input gradient dX = dY W of y = x W^T).
template <typename T>
void gemm_nn(ThreadPool& pool, const T* A, int M, int K, const T* B, int N, T* C,
             GemmScratch<T>& s);

// C[M, N] += A[R, M]^T * B[R, N] (the weight gradient dW += dY^T X over R rows).
template <typename T>
void gemm_tn_acc(ThreadPool& pool, const T* A, int R, int M, const T* B, int N, T* C,
                 GemmScratch<T>& s);

// out[j] += sum_r A[r * lda + j] for j < N (bias gradients), parallel over columns.
template <typename T>
void colsum_acc(ThreadPool& pool, const T* A, int64_t lda, int R, int N, T* out);

// dst[c, r] = src[r, c] for src [R, C].
template <typename T>
void transpose(ThreadPool& pool, const T* src, int R, int C, T* dst);

}  // namespace mind4::train
