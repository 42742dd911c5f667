/// \file delayopt/linalg/batched.hpp
/// \brief Kernels over a batch of equal-size small matrices, one Kokkos team per matrix, for the parts
/// of a batched basis refresh that cuBLAS and cuSOLVER have no batched routine for: forming Q from
/// the reflectors of a batched QR (cublas<t>geqrfBatched leaves LAPACK's packed form; orgqr has no
/// batched form) and a stable descending argsort of each matrix's column keys.
///
/// Matrices are addressed through device arrays of pointers, as cuBLAS's batched routines take them.
/// Any execution space; tests/test_linalg_batched.cpp checks both kernels on the host against Eigen's
/// HouseholderQR and std::stable_sort.
#pragma once

#include <Kokkos_Core.hpp>

namespace delayopt::linalg::batched {

/// For every b < batch: q[b] <- Q = H_0 H_1 ... H_{n-1}, the n x n column-major orthogonal factor
/// whose reflectors H_j = I - tau_j v_j v_j^T the QR left in the column-major a[b] and tau[b]
/// (v_j(j) = 1, v_j below that in column j of a[b], zero above): LAPACK's unblocked orgqr (org2r).
/// Q is built backwards from I, so that step j only touches Q(j:, j:); one team per matrix, one
/// thread per column of each step.
template <class ExecSpace, class T>
void form_q(const ExecSpace& space, int batch, int n, const T* const* a, const T* const* tau, T* const* q) {
  using policy = Kokkos::TeamPolicy<ExecSpace>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "delayopt::linalg::batched::form_q", policy(space, batch, Kokkos::AUTO), KOKKOS_LAMBDA(const member& t) {
        const int b = t.league_rank();
        const T* A = a[b];
        const T* tb = tau[b];
        T* Q = q[b];
        Kokkos::parallel_for(Kokkos::TeamThreadRange(t, n * n),
                             [&](const int k) { Q[k] = (k % n) == (k / n) ? T(1) : T(0); });
        t.team_barrier();
        for (int j = n - 1; j >= 0; --j) {
          const T* v = A + j * n;  // v(j) = 1 implicitly; v(j+1:) below the diagonal
          Kokkos::parallel_for(Kokkos::TeamThreadRange(t, j, n), [&](const int c) {
            T* col = Q + c * n;
            T w = col[j];
            for (int r = j + 1; r < n; ++r) w += v[r] * col[r];
            w *= tb[j];
            col[j] -= w;
            for (int r = j + 1; r < n; ++r) col[r] -= w * v[r];
          });
          t.team_barrier();
        }
      });
}

/// For every b < batch: order[b * n + j] <- the index of the column with the j-th largest key of
/// keys[b] (n keys), ties in index order, as std::stable_sort with `>` orders them. NaN keys sort
/// after every number, so the result is always a permutation. One team per matrix; each key's rank is counted
/// directly (n^2 comparisons), which for the side lengths batched here costs less than a sort's
/// passes and launches.
template <class ExecSpace, class T>
void argsort_descending(const ExecSpace& space, int batch, int n, const T* const* keys, int* order) {
  using policy = Kokkos::TeamPolicy<ExecSpace>;
  using member = typename policy::member_type;
  Kokkos::parallel_for(
      "delayopt::linalg::batched::argsort_descending", policy(space, batch, Kokkos::AUTO),
      KOKKOS_LAMBDA(const member& t) {
        const int b = t.league_rank();
        const T* key = keys[b];
        Kokkos::parallel_for(Kokkos::TeamThreadRange(t, n), [&](const int c) {
          const T kc = key[c];
          const bool nan_c = kc != kc;
          int rank = 0;
          for (int j = 0; j < n; ++j) {
            const T kj = key[j];
            const bool ahead = (kj != kj) ? (nan_c && j < c) : (nan_c || kj > kc || (kj == kc && j < c));
            rank += ahead ? 1 : 0;
          }
          order[b * n + rank] = c;
        });
      });
}

}  // namespace delayopt::linalg::batched
