/// \file delayopt/linalg/cuda.hpp
/// \brief cuBLAS / cuSOLVER for the rotated bases on CUDA memory: per-thread handles bound to the
/// caller's stream, and float/double overloads of the few routines the bases use. Column-major, as
/// the libraries are; callers pass row-major matrices as their column-major transposes.
///
/// Included only with -DDELAYOPT_ENABLE_CUDA_LINALG=ON (it needs the CUDA toolkit's headers).
#pragma once

#include "delayopt/core/error.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <Kokkos_Core.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace delayopt::linalg::cuda {

inline void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw error(std::string("delayopt::linalg::cuda: ") + what + " failed (cublasStatus_t " + std::to_string(int(s)) +
                ")");
}
inline void check(cusolverStatus_t s, const char* what) {
  if (s != CUSOLVER_STATUS_SUCCESS)
    throw error(std::string("delayopt::linalg::cuda: ") + what + " failed (cusolverStatus_t " + std::to_string(int(s)) +
                ")");
}

/// cuBLAS and cuSOLVER handles, one pair per host thread (NVIDIA's advice: a handle shared by
/// threads would race on its stream binding, e.g. pipeline stages each driving their own stream).
/// Created on a thread's first call, all destroyed by Kokkos::finalize (as Kokkos Kernels'
/// singletons are); bound to the stream of each call.
class Handles {
 public:
  static Handles& on(cudaStream_t stream) {
    thread_local Handles* h = nullptr;
    thread_local std::uint64_t generation = 0;
    Registry& r = registry();
    if (!h || generation != r.generation.load()) {  // first call, or the handles died with Kokkos
      h = r.create();
      generation = r.generation.load();
    }
    check(cublasSetStream(h->blas, stream), "cublasSetStream");
    check(cusolverDnSetStream(h->solver, stream), "cusolverDnSetStream");
    return *h;
  }
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;

 private:
  struct Registry {
    std::mutex mutex;
    std::vector<std::unique_ptr<Handles>> all;
    std::atomic<std::uint64_t> generation{1};
    bool hooked = false;

    Handles* create() {
      auto h = std::make_unique<Handles>();
      check(cublasCreate(&h->blas), "cublasCreate");
      if (const auto s = cusolverDnCreate(&h->solver); s != CUSOLVER_STATUS_SUCCESS) {
        cublasDestroy(h->blas);
        check(s, "cusolverDnCreate");
      }
      const std::lock_guard<std::mutex> lock(mutex);
      if (!hooked) Kokkos::push_finalize_hook([] { registry().destroy_all(); });
      hooked = true;
      all.push_back(std::move(h));
      return all.back().get();
    }
    void destroy_all() {
      const std::lock_guard<std::mutex> lock(mutex);
      for (auto& h : all) {
        cublasDestroy(h->blas);
        cusolverDnDestroy(h->solver);
      }
      all.clear();
      hooked = false;
      ++generation;
    }
  };
  static Registry& registry() {
    static Registry r;
    return r;
  }
};

// ---- cuBLAS -------------------------------------------------------------------------------------
inline void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                 const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  check(cublasSgemm(h, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc), "cublasSgemm");
}
inline void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, double alpha,
                 const double* A, int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  check(cublasDgemm(h, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc), "cublasDgemm");
}
inline void syrk(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t t, int n, int k, float alpha,
                 const float* A, int lda, float beta, float* C, int ldc) {
  check(cublasSsyrk(h, uplo, t, n, k, &alpha, A, lda, &beta, C, ldc), "cublasSsyrk");
}
inline void syrk(cublasHandle_t h, cublasFillMode_t uplo, cublasOperation_t t, int n, int k, double alpha,
                 const double* A, int lda, double beta, double* C, int ldc) {
  check(cublasDsyrk(h, uplo, t, n, k, &alpha, A, lda, &beta, C, ldc), "cublasDsyrk");
}
inline void symm(cublasHandle_t h, cublasSideMode_t side, cublasFillMode_t uplo, int m, int n, float alpha,
                 const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  check(cublasSsymm(h, side, uplo, m, n, &alpha, A, lda, B, ldb, &beta, C, ldc), "cublasSsymm");
}
inline void symm(cublasHandle_t h, cublasSideMode_t side, cublasFillMode_t uplo, int m, int n, double alpha,
                 const double* A, int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  check(cublasDsymm(h, side, uplo, m, n, &alpha, A, lda, B, ldb, &beta, C, ldc), "cublasDsymm");
}

/// C[i] = alpha op(A[i]) op(B[i]) + beta C[i] for i < batch; A, B, C are device arrays of pointers.
inline void gemm_batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                         const float* const A[], int lda, const float* const B[], int ldb, float beta, float* const C[],
                         int ldc, int batch) {
  check(cublasSgemmBatched(h, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc, batch), "cublasSgemmBatched");
}
inline void gemm_batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                         double alpha, const double* const A[], int lda, const double* const B[], int ldb, double beta,
                         double* const C[], int ldc, int batch) {
  check(cublasDgemmBatched(h, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc, batch), "cublasDgemmBatched");
}

/// Householder QR of each column-major n x n A[i] in LAPACK's packed form (R on and above the
/// diagonal, reflectors below, scalars in tau[i]); linalg::batched::form_q forms Q from it. cuBLAS
/// reports only invalid arguments (in a host int); numerical trouble shows as non-finite output.
inline void geqrf_batched(cublasHandle_t h, int n, float* const A[], float* const tau[], int batch) {
  int info = 0;
  check(cublasSgeqrfBatched(h, n, n, A, n, tau, &info, batch), "cublasSgeqrfBatched");
  if (info != 0) throw error("delayopt::linalg::cuda: cublasSgeqrfBatched rejected argument " + std::to_string(-info));
}
inline void geqrf_batched(cublasHandle_t h, int n, double* const A[], double* const tau[], int batch) {
  int info = 0;
  check(cublasDgeqrfBatched(h, n, n, A, n, tau, &info, batch), "cublasDgeqrfBatched");
  if (info != 0) throw error("delayopt::linalg::cuda: cublasDgeqrfBatched rejected argument " + std::to_string(-info));
}

// ---- cuSOLVER: symmetric eigendecomposition (syevd), QR (geqrf + orgqr) ------------------------------
inline int syevd_lwork(cusolverDnHandle_t h, int n, const float* A, const float* W) {
  int lwork = 0;
  check(cusolverDnSsyevd_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, n, A, n, W, &lwork),
        "cusolverDnSsyevd_bufferSize");
  return lwork;
}
inline int syevd_lwork(cusolverDnHandle_t h, int n, const double* A, const double* W) {
  int lwork = 0;
  check(cusolverDnDsyevd_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, n, A, n, W, &lwork),
        "cusolverDnDsyevd_bufferSize");
  return lwork;
}
/// Eigenvectors (ascending eigenvalues) of the symmetric n x n A (upper triangle, column-major) into A.
inline void syevd(cusolverDnHandle_t h, int n, float* A, float* W, float* work, int lwork, int* info) {
  check(cusolverDnSsyevd(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, n, A, n, W, work, lwork, info),
        "cusolverDnSsyevd");
}
inline void syevd(cusolverDnHandle_t h, int n, double* A, double* W, double* work, int lwork, int* info) {
  check(cusolverDnDsyevd(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, n, A, n, W, work, lwork, info),
        "cusolverDnDsyevd");
}

inline int qr_lwork(cusolverDnHandle_t h, int n, float* A, const float* tau) {
  int a = 0, b = 0;
  check(cusolverDnSgeqrf_bufferSize(h, n, n, A, n, &a), "cusolverDnSgeqrf_bufferSize");
  check(cusolverDnSorgqr_bufferSize(h, n, n, n, A, n, tau, &b), "cusolverDnSorgqr_bufferSize");
  return a > b ? a : b;
}
inline int qr_lwork(cusolverDnHandle_t h, int n, double* A, const double* tau) {
  int a = 0, b = 0;
  check(cusolverDnDgeqrf_bufferSize(h, n, n, A, n, &a), "cusolverDnDgeqrf_bufferSize");
  check(cusolverDnDorgqr_bufferSize(h, n, n, n, A, n, tau, &b), "cusolverDnDorgqr_bufferSize");
  return a > b ? a : b;
}
/// Replaces the column-major n x n A by the Q factor of its Householder QR.
inline void qr_q(cusolverDnHandle_t h, int n, float* A, float* tau, float* work, int lwork, int* info) {
  check(cusolverDnSgeqrf(h, n, n, A, n, tau, work, lwork, info), "cusolverDnSgeqrf");
  check(cusolverDnSorgqr(h, n, n, n, A, n, tau, work, lwork, info + 1), "cusolverDnSorgqr");
}
inline void qr_q(cusolverDnHandle_t h, int n, double* A, double* tau, double* work, int lwork, int* info) {
  check(cusolverDnDgeqrf(h, n, n, A, n, tau, work, lwork, info), "cusolverDnDgeqrf");
  check(cusolverDnDorgqr(h, n, n, n, A, n, tau, work, lwork, info + 1), "cusolverDnDorgqr");
}

}  // namespace delayopt::linalg::cuda
