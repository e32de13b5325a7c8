#include "train/gemm.h"

#include <algorithm>

#include "cpu/matmul.h"

namespace mind4::train {
namespace {

// Chunks of output columns: a multiple of the kernel's 4-row tile, so chunk edges never change
// which code path computes an element.
constexpr int64_t kGemmGrain = 32;

}  // namespace

template <>
void gemm_nt<float>(ThreadPool& pool, const float* A, int64_t lda, int M, const float* B, int N,
                    int K, const float* bias, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  pool.parallel_for(N, kGemmGrain, [&](int64_t n0, int64_t n1, int) {
    cpu::f32_f32w_matmul(A, lda, M, B, K, bias, C, ldc, int(n0), int(n1));
  });
}

template <>
void gemm_nt<double>(ThreadPool& pool, const double* A, int64_t lda, int M, const double* B, int N,
                     int K, const double* bias, double* C, int64_t ldc) {
  pool.parallel_for(M, 4, [&](int64_t m0, int64_t m1, int) {
    for (int64_t m = m0; m < m1; ++m)
      for (int n = 0; n < N; ++n) {
        double s = bias ? bias[n] : 0.0;
        for (int k = 0; k < K; ++k) s += A[m * lda + k] * B[int64_t(n) * K + k];
        C[m * ldc + n] = s;
      }
  });
}

template <typename T>
void transpose(ThreadPool& pool, const T* src, int R, int C, T* dst) {
  constexpr int kTile = 32;
  const int tiles_c = (C + kTile - 1) / kTile;
  pool.parallel_for(tiles_c, 1, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) {
      const int c0 = int(t) * kTile, c1 = std::min(C, c0 + kTile);
      for (int r0 = 0; r0 < R; r0 += kTile) {
        const int r1 = std::min(R, r0 + kTile);
        for (int c = c0; c < c1; ++c)
          for (int r = r0; r < r1; ++r) dst[int64_t(c) * R + r] = src[int64_t(r) * C + c];
      }
    }
  });
}

template <typename T>
void gemm_nn(ThreadPool& pool, const T* A, int M, int K, const T* B, int N, T* C,
             GemmScratch<T>& s) {
  if (M == 0 || N == 0) return;
  T* bt = GemmScratch<T>::sized(s.b, int64_t(N) * K);  // B^T [N, K]
  transpose(pool, B, K, N, bt);
  gemm_nt(pool, A, K, M, bt, N, K, static_cast<const T*>(nullptr), C, N);
}

template <typename T>
void gemm_tn_acc(ThreadPool& pool, const T* A, int R, int M, const T* B, int N, T* C,
                 GemmScratch<T>& s) {
  if (R == 0 || M == 0 || N == 0) return;
  T* at = GemmScratch<T>::sized(s.a, int64_t(M) * R);  // A^T [M, R]
  T* bt = GemmScratch<T>::sized(s.b, int64_t(N) * R);  // B^T [N, R]
  T* c = GemmScratch<T>::sized(s.c, int64_t(M) * N);
  transpose(pool, A, R, M, at);
  transpose(pool, B, R, N, bt);
  gemm_nt(pool, at, R, M, bt, N, R, static_cast<const T*>(nullptr), c, N);
  const int64_t total = int64_t(M) * N;
  pool.parallel_for(total, 1 << 14, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) C[i] += c[i];
  });
}

template <typename T>
void colsum_acc(ThreadPool& pool, const T* A, int64_t lda, int R, int N, T* out) {
  pool.parallel_for(N, 64, [&](int64_t j0, int64_t j1, int) {
    for (int64_t j = j0; j < j1; ++j) {
      T s = 0;
      for (int r = 0; r < R; ++r) s += A[int64_t(r) * lda + j];
      out[j] += s;
    }
  });
}

template void transpose<float>(ThreadPool&, const float*, int, int, float*);
template void transpose<double>(ThreadPool&, const double*, int, int, double*);
template void gemm_nn<float>(ThreadPool&, const float*, int, int, const float*, int, float*,
                             GemmScratch<float>&);
template void gemm_nn<double>(ThreadPool&, const double*, int, int, const double*, int, double*,
                              GemmScratch<double>&);
template void gemm_tn_acc<float>(ThreadPool&, const float*, int, int, const float*, int, float*,
                                 GemmScratch<float>&);
template void gemm_tn_acc<double>(ThreadPool&, const double*, int, int, const double*, int, double*,
                                  GemmScratch<double>&);
template void colsum_acc<float>(ThreadPool&, const float*, int64_t, int, int, float*);
template void colsum_acc<double>(ThreadPool&, const double*, int64_t, int, int, double*);

}  // namespace mind4::train
