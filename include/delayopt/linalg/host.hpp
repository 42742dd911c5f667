/// \file delayopt/linalg/host.hpp
/// \brief Dense linear algebra on host memory through Eigen: symmetric eigendecomposition, QR,
/// products. Every solver reports a Status and checks its output for non-finite values, because
/// some backends fail silently.
#pragma once

#include <Eigen/Dense>

#include <cstddef>
#include <type_traits>

namespace delayopt::linalg {

/// Outcome of a factorization.
enum class Status { success, failed, nonfinite };

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;  // factorizations run column-major (faster)
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>>;

/// Eigenvectors of the symmetric matrix A + shift I (lower triangle read) into Q, columns in
/// descending eigenvalue order. Computed in S (float or double); Q is untouched unless it succeeds.
template <class S, class T>
Status eigh_descending(const ConstMatrixMap<T>& A, MatrixMap<T> Q, double shift) {
  if (!A.template triangularView<Eigen::Lower>().toDenseMatrix().allFinite()) return Status::nonfinite;
  ColMatrix<S> a = A.template cast<S>();
  a.diagonal().array() += static_cast<S>(shift);
  Eigen::SelfAdjointEigenSolver<ColMatrix<S>> es(a, Eigen::ComputeEigenvectors);
  if (es.info() != Eigen::Success) return Status::failed;
  if (!es.eigenvectors().allFinite()) return Status::nonfinite;
  Q = es.eigenvectors().rowwise().reverse().template cast<T>();  // ascending -> descending
  return Status::success;
}

/// Q (m x m) of the complete Householder QR of A (m x n), computed in S. Q is untouched on failure.
template <class S, class T>
Status qr_q(const ConstMatrixMap<T>& A, MatrixMap<T> Q) {
  if (!A.allFinite()) return Status::nonfinite;
  Eigen::HouseholderQR<ColMatrix<S>> qr(A.template cast<S>());
  ColMatrix<S> q = qr.householderQ();
  if (!q.allFinite()) return Status::nonfinite;
  Q = q.template cast<T>();
  return Status::success;
}

/// Left and right singular vectors (full, square) of M, computed in S.
template <class S, class T>
Status svd_full(const ConstMatrixMap<T>& M, MatrixMap<T> U, MatrixMap<T> V) {
  Eigen::BDCSVD<ColMatrix<S>> svd(M.template cast<S>(), Eigen::ComputeFullU | Eigen::ComputeFullV);
  if (svd.info() != Eigen::Success) return Status::failed;
  if (!svd.matrixU().allFinite() || !svd.matrixV().allFinite()) return Status::nonfinite;
  U = svd.matrixU().template cast<T>();
  V = svd.matrixV().template cast<T>();
  return Status::success;
}

}  // namespace delayopt::linalg
