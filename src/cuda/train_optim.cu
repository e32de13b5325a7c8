// Training's optimizer side on the GPU: the squared gradient norm (double partial sums added on
// the host in a fixed order), AdamW with the clipping factor folded in and the bf16 weight copy
// refreshed in the same pass, and the row-major GEMM wrapper over cuBLAS.
#include "cuda/train_kernels.h"
#include "cuda/train_util.cuh"

namespace mind4::cuda {
namespace {

__global__ void train_sumsq_kernel(const float* __restrict__ g, int64_t n,
                                   double* __restrict__ partial) {
  __shared__ double part[32];
  double s = 0.0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    s += double(g[i]) * g[i];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0;
    for (int w = 0; w < int(blockDim.x >> 5); ++w) t += part[w];
    partial[blockIdx.x] = t;
  }
}

__global__ void train_adamw_kernel(float* __restrict__ p, const float* __restrict__ g,
                                   float* __restrict__ m, float* __restrict__ v,
                                   const uint8_t* __restrict__ decay_chunks, int64_t n, AdamWStep s,
                                   __nv_bfloat16* __restrict__ p_bf16) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = s.grad_coef == 1.0f ? g[i] : g[i] * s.grad_coef;
    float pi = p[i];
    if (decay_chunks[i >> 4]) pi *= s.decay;
    const float mi = s.beta1 * m[i] + (1.0f - s.beta1) * gi;
    const float vi = s.beta2 * v[i] + (1.0f - s.beta2) * gi * gi;
    pi -= s.step_size * (mi / (sqrtf(vi) / s.bc2_sqrt + s.eps));
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (p_bf16) p_bf16[i] = __float2bfloat16_rn(pi);
  }
}

}  // namespace

void train_sumsq(const float* g, int64_t n, double* partial, cudaStream_t stream) {
  MIND4_CUDA_ARG(g && partial && n >= 0, "train_sumsq", "null pointer or n = ", n);
  train_sumsq_kernel<<<train_sumsq_blocks, 256, 0, stream>>>(g, n, partial);
  check_launch("train_sumsq");
}

void train_adamw(float* p, const float* g, float* m, float* v, const uint8_t* decay_chunks,
                 int64_t n, AdamWStep s, void* p_bf16, cudaStream_t stream) {
  MIND4_CUDA_ARG(p && g && m && v && decay_chunks, "train_adamw", "null pointer");
  MIND4_CUDA_ARG(n >= 0 && n % 16 == 0, "train_adamw", "n = ", n, " (a multiple of 16)");
  if (n == 0) return;
  train_adamw_kernel<<<train_blocks(n), 256, 0, stream>>>(p, g, m, v, decay_chunks, n, s,
                                                          static_cast<__nv_bfloat16*>(p_bf16));
  check_launch("train_adamw");
}

void train_gemm(cublasHandle_t blas, ActType t, int M, int N, int K, GemmArg a, GemmArg b,
                float beta, void* c, bool c_f32, int64_t ldc, int64_t stride_c, int batch,
                const char* what) {
  MIND4_CUDA_ARG(blas && a.p && b.p && c && what, "train_gemm", "null pointer");
  MIND4_CUDA_ARG(M >= 0 && N >= 0 && K >= 0 && batch >= 1, "train_gemm", what, ": M = ", M,
                 ", N = ", N, ", K = ", K, ", batch = ", batch);
  if (M == 0 || N == 0) return;
  const cudaDataType_t in = t == ActType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  const cudaDataType_t out = c_f32 || t == ActType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  const float alpha = 1.0f;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: B comes first, and a
  // row-major operand stored untransposed is, to cuBLAS, already the transpose.
  const cublasOperation_t opa = a.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = b.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch == 1)
    check(cublasGemmEx(blas, opb, opa, N, M, K, &alpha, b.p, in, int(b.ld), a.p, in, int(a.ld),
                       &beta, c, out, int(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          what);
  else
    check(cublasGemmStridedBatchedEx(blas, opb, opa, N, M, K, &alpha, b.p, in, int(b.ld), b.stride,
                                     a.p, in, int(a.ld), a.stride, &beta, c, out, int(ldc),
                                     stride_c, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          what);
}

}  // namespace mind4::cuda
