// Dense linear layers through cuBLAS (the QKV, out, router and unembedding matrices): bf16 or f32
// operands, f32 accumulation. Row-major out[M, N] = x[M, K] w[N, K]^T is, column-major,
// out^T[N, M] = w^T... i.e. cuBLAS's C = op(A) op(B) with A = w (transposed), B = x.
#include "cuda/device_util.cuh"

namespace mind4::cuda {

void linear(cublasHandle_t blas, ActType t, const void* x, int M, int K, const void* w, int N,
            void* out, bool out_f32) {
  MIND4_CUDA_ARG(blas && x && w && out, "linear", "null pointer");
  MIND4_CUDA_ARG(M >= 0 && K > 0 && N > 0, "linear", "M = ", M, ", K = ", K, ", N = ", N);
  if (M == 0) return;
  const cudaDataType_t in = t == ActType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  const cudaDataType_t o = out_f32 || t == ActType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  const float alpha = 1.0f, beta = 0.0f;
  check(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, w, in, K, x, in, K, &beta,
                     out, o, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        t == ActType::kF32 ? "cublasGemmEx (linear f32)" : "cublasGemmEx (linear bf16)");
}

}  // namespace mind4::cuda
