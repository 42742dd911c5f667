/// \file delayopt/basis/detail/eigenbasis_cuda.hpp
/// \brief Eigenbasis operations on CUDA memory: cuBLAS products (SYRK, GEMM, SYMM) and cuSOLVER
/// factorizations (syevd, geqrf + orgqr) on the execution space's stream, with no host sync.
///
/// Matrices are stored row-major (LayoutRight) as on the host, so a checkpoint moves between
/// backends unchanged; the column-major libraries see each one as its transpose: a row-major
/// rows x cols block G is the column-major cols x rows matrix G^T, and the row-major lower triangle
/// of a factor is the column-major upper triangle. A failed or non-finite factorization keeps the
/// previous basis and increments a device counter (EigenState::device_failures).
///
/// Limits of this backend: source Source::covariance only (the momentum source's SVD runs on host
/// memory), factorizations in T (no retry in double), Kokkos >= 4.3 (Kokkos::Experimental::sort_by_key).
#pragma once

#include "delayopt/linalg/cuda.hpp"

#include <Kokkos_Sort.hpp>

#if KOKKOS_VERSION < 40300
#error "delayopt's CUDA eigenbasis backend needs Kokkos >= 4.3"
#endif

namespace delayopt::basis::detail {

template <class T, class ExecSpace>
struct EigenbasisOps<T, ExecSpace, false> {
  static_assert(std::is_same_v<ExecSpace, Kokkos::Cuda>,
                "delayopt::basis: the device eigenbasis backend supports Kokkos::Cuda");
  using State = EigenState<T, ExecSpace>;
  using Set = ParamSet<T, ExecSpace>;
  using Block = EigenBlock<T, typename ExecSpace::memory_space>;
  using mem = typename ExecSpace::memory_space;
  using policy = Kokkos::RangePolicy<ExecSpace>;

  static linalg::cuda::Handles& handles(const ExecSpace& space) {
    return linalg::cuda::Handles::on(space.cuda_stream());
  }

  static State make_state(const ExecSpace& space, std::vector<Block> blocks, bool covariance) {
    if (!covariance)
      throw error("delayopt::basis: Source::momentum runs on host memory only; use Source::covariance on CUDA");
    State st;
    std::size_t largest = 0, side = 0;
    for (auto& b : blocks) {
      using V = typename Block::matrix;
      if (b.left) b.QL = V("delayopt::basis::QL", b.rows, b.rows), b.L = V("delayopt::basis::L", b.rows, b.rows);
      if (b.right) b.QR = V("delayopt::basis::QR", b.cols, b.cols), b.R = V("delayopt::basis::R", b.cols, b.cols);
      largest = std::max(largest, b.rows * b.cols);
      if (b.left) side = std::max(side, b.rows);
      if (b.right) side = std::max(side, b.cols);
    }
    st.blocks = std::move(blocks);
    st.tmp = Kokkos::View<T*, mem>("delayopt::basis::tmp", largest);
    st.square_a = Kokkos::View<T*, mem>("delayopt::basis::square_a", side * side);
    st.square_b = Kokkos::View<T*, mem>("delayopt::basis::square_b", side * side);
    st.vec = Kokkos::View<T*, mem>("delayopt::basis::vec", side);
    st.ints = Kokkos::View<int*, mem>("delayopt::basis::ints", 3 + side);
    st.device_failures = Kokkos::View<std::int64_t, mem>("delayopt::basis::device_failures");
    int lwork = 1;
    if (side > 0) {
      auto& h = handles(space);
      const int n = static_cast<int>(side);
      lwork = std::max(linalg::cuda::syevd_lwork(h.solver, n, st.square_a.data(), st.vec.data()),
                       linalg::cuda::qr_lwork(h.solver, n, st.square_a.data(), st.vec.data()));
    }
    st.work = Kokkos::View<T*, mem>("delayopt::basis::solver_work", lwork);
    return st;
  }

  static linalg::cuda::Handles& h(const ExecSpace& space) { return handles(space); }

  // ---- projections ------------------------------------------------------------------------------
  /// out = U^T in V (row-major); column-major: out^T = V^T in^T U.
  static void project_block(const ExecSpace& space, State& st, std::size_t i, const T* in, T* out) {
    const Block& b = st.blocks[i];
    const int m = static_cast<int>(b.rows), n = static_cast<int>(b.cols);
    auto blas = h(space).blas;
    T* tmp = st.tmp.data();
    if (b.left && b.right) {
      linalg::cuda::gemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, n, T(1), b.QR.data(), n, in, n, T(0), tmp, n);
      linalg::cuda::gemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, n, m, m, T(1), tmp, n, b.QL.data(), m, T(0), out, n);
    } else if (b.left || b.right) {
      if (b.left)
        linalg::cuda::gemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, n, m, m, T(1), in, n, b.QL.data(), m, T(0), tmp, n);
      else
        linalg::cuda::gemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, n, T(1), b.QR.data(), n, in, n, T(0), tmp, n);
      copy(space, tmp, out, b.rows * b.cols);
    } else if (in != out) {
      copy(space, in, out, b.rows * b.cols);
    }
  }

  /// out = U in V^T (row-major); column-major: out^T = V in^T U^T.
  static void project_back_block(const ExecSpace& space, State& st, std::size_t i, const T* in, T* out) {
    const Block& b = st.blocks[i];
    const int m = static_cast<int>(b.rows), n = static_cast<int>(b.cols);
    auto blas = h(space).blas;
    T* tmp = st.tmp.data();
    if (b.left && b.right) {
      linalg::cuda::gemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, n, T(1), b.QR.data(), n, in, n, T(0), tmp, n);
      linalg::cuda::gemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, m, T(1), tmp, n, b.QL.data(), m, T(0), out, n);
    } else if (b.left || b.right) {
      if (b.left)
        linalg::cuda::gemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, m, T(1), in, n, b.QL.data(), m, T(0), tmp, n);
      else
        linalg::cuda::gemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, n, T(1), b.QR.data(), n, in, n, T(0), tmp, n);
      copy(space, tmp, out, b.rows * b.cols);
    } else if (in != out) {
      copy(space, in, out, b.rows * b.cols);
    }
  }

  static void project_all(const ExecSpace& space, State& st, const Set& in, Set& out) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i)
      project_block(space, st, i, in.flat(i).data(), out.flat(i).data());
  }
  static void project_back_all(const ExecSpace& space, State& st, Set& x) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i)
      project_back_block(space, st, i, x.flat(i).data(), x.flat(i).data());
  }

  // ---- factors ----------------------------------------------------------------------------------
  /// L <- beta L + (1-beta) G G^T, R <- beta R + (1-beta) G^T G: one SYRK each (column-major upper
  /// triangle = row-major lower triangle).
  static void accumulate(const ExecSpace& space, State& st, const Set& g, double beta) {
    auto blas = h(space).blas;
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      const Block& b = st.blocks[i];
      const int m = static_cast<int>(b.rows), n = static_cast<int>(b.cols);
      const T* G = g.flat(i).data();
      if (b.left)
        linalg::cuda::syrk(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_T, m, n, T(1 - beta), G, n, T(beta), b.L.data(), m);
      if (b.right)
        linalg::cuda::syrk(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, n, m, T(1 - beta), G, n, T(beta), b.R.data(), n);
    }
  }

  static void lookahead(const ExecSpace&, State&, double, const Set&, const Set*, Set&) {
    throw error("delayopt::basis: Source::momentum runs on host memory only");
  }

  /// First basis: syevd of F + 1e-30 I; eigenvectors reordered to descending eigenvalues.
  static void initialize(const ExecSpace& space, State& st, const EigenSettings&, const Set*) {
    for (auto& b : st.blocks) {
      if (b.left) set_identity(space, b.QL), eigh_into(space, st, b.L, b.QL);
      if (b.right) set_identity(space, b.QR), eigh_into(space, st, b.R, b.QR);
    }
  }

  static void eigh_into(const ExecSpace& space, State& st, const typename Block::matrix& F,
                        const typename Block::matrix& Q) {
    const int n = static_cast<int>(F.extent(0));
    T* A = st.square_a.data();
    const T* f = F.data();
    Kokkos::parallel_for(
        "delayopt::basis::eigh_prepare", policy(space, 0, n * n),
        KOKKOS_LAMBDA(const int k) { A[k] = f[k] + ((k % n) == (k / n) ? T(1e-30) : T(0)); });
    auto& hs = h(space);
    int* info = st.ints.data();
    linalg::cuda::syevd(hs.solver, n, A, st.vec.data(), st.work.data(), static_cast<int>(st.work.extent(0)), info);
    // Column-major eigenvector j (ascending) -> row-major column n-1-j of Q.
    commit(space, st, n, Q.data(), 1, [=] KOKKOS_FUNCTION(int r, int c) { return A[r + (n - 1 - c) * n]; });
  }

  /// Writes src(r, c) into the row-major n x n Q if the solver's info words are 0 and every value is
  /// finite; otherwise leaves Q and counts a failure. `ninfo` info words sit at the start of st.ints.
  template <class Src>
  static void commit(const ExecSpace& space, State& st, int n, T* Q, int ninfo, Src src) {
    int* ints = st.ints.data();
    Kokkos::View<int, mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> nonfinite(ints + 2);
    Kokkos::parallel_reduce(
        "delayopt::basis::check_finite", policy(space, 0, n * n),
        KOKKOS_LAMBDA(const int k, int& count) { count += Kokkos::isfinite(src(k / n, k % n)) ? 0 : 1; }, nonfinite);
    auto failures = st.device_failures;
    Kokkos::parallel_for(
        "delayopt::basis::commit", policy(space, 0, n * n), KOKKOS_LAMBDA(const int k) {
          bool ok = ints[2] == 0;
          for (int q = 0; q < ninfo; ++q) ok = ok && ints[q] == 0;
          if (ok) Q[k] = src(k / n, k % n);
          if (k == 0 && !ok) failures() += 1;
        });
  }

  /// Power iteration + QR from the current basis, with SOAP's re-sort and the moment bookkeeping.
  static void refresh(const ExecSpace& space, State& st, const EigenSettings&, const std::vector<Set*>& linear,
                      const std::vector<Set*>& second, const Set*) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      Block& b = st.blocks[i];
      if (!b.left && !b.right) continue;
      for (Set* m : linear) project_back_block(space, st, i, m->flat(i).data(), m->flat(i).data());
      if (b.left) refresh_side(space, st, i, b.L, b.QL, second, /*rows=*/true);
      if (b.right) refresh_side(space, st, i, b.R, b.QR, second, /*rows=*/false);
      for (Set* m : linear) project_block(space, st, i, m->flat(i).data(), m->flat(i).data());
    }
    ++st.refreshes;
  }

  static void refresh_side(const ExecSpace& space, State& st, std::size_t i, const typename Block::matrix& F,
                           const typename Block::matrix& Qv, const std::vector<Set*>& second, bool rows) {
    const Block& b = st.blocks[i];
    const int n = static_cast<int>(F.extent(0));
    auto& hs = h(space);
    T* Q = Qv.data();
    T* FQ = st.square_a.data();  // row-major F Q  ==  column-major Q^T F
    linalg::cuda::symm(hs.blas, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_UPPER, n, n, T(1), F.data(), n, Q, n, T(0), FQ, n);
    // Rayleigh quotients diag(Q^T F Q), sorted descending (keys negated) with their column indices.
    Kokkos::View<T*, mem> keys(st.vec.data(), n);
    Kokkos::View<int*, mem> idx(st.ints.data() + 3, n);
    Kokkos::parallel_for(
        "delayopt::basis::rayleigh", policy(space, 0, n), KOKKOS_LAMBDA(const int c) {
          T s = 0;
          for (int r = 0; r < n; ++r) s += Q[r * n + c] * FQ[r * n + c];
          keys(c) = -s;
          idx(c) = c;
        });
    Kokkos::Experimental::sort_by_key(space, keys, idx);
    // Permute the columns of Q (in place through square_b) and of FQ (into square_b's transpose).
    T* QP = st.square_b.data();
    Kokkos::parallel_for(
        "delayopt::basis::permute_basis", policy(space, 0, n * n),
        KOKKOS_LAMBDA(const int k) { QP[k] = Q[(k / n) * n + idx(k % n)]; });
    copy(space, QP, Q, static_cast<std::size_t>(n) * n);
    // Column-major copy of the permuted F Q for geqrf: A[r + c n] = FQ[r n + idx[c]].
    Kokkos::parallel_for(
        "delayopt::basis::permute_product", policy(space, 0, n * n),
        KOKKOS_LAMBDA(const int k) { QP[(k % n) + (k / n) * n] = FQ[(k % n) * n + idx(k / n)]; });
    for (Set* v : second) permute_slot(space, st, b, v->flat(i).data(), idx, rows);
    linalg::cuda::qr_q(hs.solver, n, QP, st.vec.data(), st.work.data(), static_cast<int>(st.work.extent(0)),
                       st.ints.data());
    commit(space, st, n, Q, 2, [=] KOKKOS_FUNCTION(int r, int c) { return QP[r + c * n]; });
  }

  /// Second-moment slot of block b permuted with the re-sorted basis: rows (left side) or columns.
  static void permute_slot(const ExecSpace& space, State& st, const Block& b, T* v, const Kokkos::View<int*, mem>& idx,
                           bool rows) {
    const int m = static_cast<int>(b.rows), n = static_cast<int>(b.cols);
    T* tmp = st.tmp.data();
    Kokkos::parallel_for(
        "delayopt::basis::permute_second_moment", policy(space, 0, m * n), KOKKOS_LAMBDA(const int k) {
          const int r = k / n, c = k % n;
          tmp[k] = rows ? v[idx(r) * n + c] : v[r * n + idx(c)];
        });
    copy(space, tmp, v, static_cast<std::size_t>(m) * n);
  }

  static void set_identity(const ExecSpace& space, const typename Block::matrix& Q) {
    const int n = static_cast<int>(Q.extent(0));
    T* q = Q.data();
    Kokkos::parallel_for(
        "delayopt::basis::identity", policy(space, 0, n * n),
        KOKKOS_LAMBDA(const int k) { q[k] = (k / n) == (k % n) ? T(1) : T(0); });
  }

  static void copy(const ExecSpace& space, const T* src, T* dst, std::size_t n) {
    Kokkos::View<const T*, mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> s(src, n);
    Kokkos::View<T*, mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> d(dst, n);
    Kokkos::deep_copy(space, d, s);
  }

  static std::size_t state_bytes(const State& st) {
    std::size_t n = 0;
    for (const auto& b : st.blocks) n += (b.L.size() + b.R.size() + b.QL.size() + b.QR.size()) * sizeof(T);
    return n;
  }

  static State clone(const ExecSpace& space, const State& src) {
    State out = make_state(space, src.blocks, true);
    for (std::size_t i = 0; i < src.blocks.size(); ++i) {
      const auto& a = src.blocks[i];
      auto& b = out.blocks[i];
      if (a.left) Kokkos::deep_copy(space, b.L, a.L), Kokkos::deep_copy(space, b.QL, a.QL);
      if (a.right) Kokkos::deep_copy(space, b.R, a.R), Kokkos::deep_copy(space, b.QR, a.QR);
    }
    out.calls = src.calls;
    out.refreshes = src.refreshes;
    out.failures = src.failures;
    Kokkos::deep_copy(space, out.device_failures, src.device_failures);
    return out;
  }
};

}  // namespace delayopt::basis::detail
