// Compile-only check of the cuBLAS/cuSOLVER wrappers with nvcc (no GPU and no CUDA Kokkos needed).
#include <delayopt/linalg/cuda.hpp>

template <class T>
void instantiate(cudaStream_t s, T* a, T* b, T* c, T* w, int* info) {
  auto& h = delayopt::linalg::cuda::Handles::on(s);
  delayopt::linalg::cuda::gemm(h.blas, CUBLAS_OP_N, CUBLAS_OP_T, 4, 4, 4, T(1), a, 4, b, 4, T(0), c, 4);
  delayopt::linalg::cuda::syrk(h.blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_T, 4, 4, T(1), a, 4, T(0), c, 4);
  delayopt::linalg::cuda::symm(h.blas, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_UPPER, 4, 4, T(1), a, 4, b, 4, T(0), c, 4);
  const int lw = delayopt::linalg::cuda::syevd_lwork(h.solver, 4, a, w);
  delayopt::linalg::cuda::syevd(h.solver, 4, a, w, c, lw, info);
  const int lq = delayopt::linalg::cuda::qr_lwork(h.solver, 4, a, w);
  delayopt::linalg::cuda::qr_q(h.solver, 4, a, w, c, lq, info);
  T* const* ptrs = reinterpret_cast<T* const*>(w);  // device arrays of pointers in real use
  delayopt::linalg::cuda::gemm_batched(h.blas, CUBLAS_OP_N, CUBLAS_OP_T, 4, 4, 4, T(1), ptrs, 4, ptrs, 4, T(0), ptrs, 4,
                                       2);
  delayopt::linalg::cuda::geqrf_batched(h.blas, 4, ptrs, ptrs, 2);
}

template void instantiate<float>(cudaStream_t, float*, float*, float*, float*, int*);
template void instantiate<double>(cudaStream_t, double*, double*, double*, double*, int*);
