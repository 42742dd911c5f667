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
/// Blocks whose rotated sides are at most the policy's batch_max_side are grouped by shape; a group
/// runs each product as one cuBLAS <t>gemmBatched and every element pass as one kernel, so a model
/// of many small layers costs a few launches per step instead of a few per layer. Its refresh QR is
/// one <t>geqrfBatched plus linalg::batched::form_q up to batch_qr_max_side, cuSOLVER's geqrf +
/// orgqr per block above. Larger blocks go one by one (SYRK, SYMM, cuSOLVER). A batched accumulate
/// forms G G^T with GEMM, filling both triangles; only the upper one (the row-major lower, as on the
/// host) is read.
///
/// Limits of this backend: source Source::covariance only (the momentum source's SVD runs on host
/// memory), factorizations in T (no retry in double), Kokkos >= 4.3 (Kokkos::Experimental::sort_by_key).
#pragma once

#include "delayopt/linalg/batched.hpp"
#include "delayopt/linalg/cuda.hpp"

#include <Kokkos_Sort.hpp>

#include <array>
#include <climits>
#include <cstdint>
#include <map>
#include <string>

static_assert(delayopt::compat::has_sort_by_key,
              "delayopt's CUDA eigenbasis backend needs Kokkos >= 4.3 (Kokkos::Experimental::sort_by_key)");

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
  using Group = BatchGroup<T, mem>;

  static linalg::cuda::Handles& handles(const ExecSpace& space) {
    return linalg::cuda::Handles::on(space.cuda_stream());
  }

  static State make_state(const ExecSpace& space, std::vector<Block> blocks, bool covariance) {
    if (!covariance)
      throw error("delayopt::basis: Source::momentum runs on host memory only; use Source::covariance on CUDA");
    State st;
    std::size_t largest = 0, side = 0;
    for (auto& b : blocks) {
      // cuBLAS/cuSOLVER take int dimensions, and the kernels on a side x side factor index it with
      // int: a rotated side above 46340 would overflow (the block itself may be larger: permute_slot
      // indexes it in 64 bits).
      constexpr std::size_t max_side = 46340;  // 46340^2 < 2^31
      if ((b.left && b.rows > max_side) || (b.right && b.cols > max_side) || b.rows > INT_MAX || b.cols > INT_MAX)
        throw invalid_hyperparameter("delayopt::basis (CUDA): a " + std::to_string(b.rows) + " x " +
                                     std::to_string(b.cols) + " block rotates a side longer than " +
                                     std::to_string(max_side) + "; lower max_dim to keep that side unrotated");
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
    make_groups(st);
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
      if (st.blocks[i].group < 0) project_block(space, st, i, in.flat(i).data(), out.flat(i).data());
    for (Group& g : st.groups) project_group(space, g, in, out, /*back=*/false);
  }
  static void project_back_all(const ExecSpace& space, State& st, Set& x) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i)
      if (st.blocks[i].group < 0) project_back_block(space, st, i, x.flat(i).data(), x.flat(i).data());
    for (Group& g : st.groups) project_group(space, g, x, x, /*back=*/true);
  }

  // ---- factors ----------------------------------------------------------------------------------
  /// L <- beta L + (1-beta) G G^T, R <- beta R + (1-beta) G^T G: one SYRK each (column-major upper
  /// triangle = row-major lower triangle).
  static void accumulate(const ExecSpace& space, State& st, const Set& g, double beta) {
    auto blas = h(space).blas;
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      const Block& b = st.blocks[i];
      if (b.group >= 0) continue;
      const int m = static_cast<int>(b.rows), n = static_cast<int>(b.cols);
      const T* G = g.flat(i).data();
      if (b.left)
        linalg::cuda::syrk(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_T, m, n, T(1 - beta), G, n, T(beta), b.L.data(), m);
      if (b.right)
        linalg::cuda::syrk(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, n, m, T(1 - beta), G, n, T(beta), b.R.data(), n);
    }
    for (Group& grp : st.groups) accumulate_group(space, grp, g, beta);
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
      if ((!b.left && !b.right) || b.group >= 0) continue;
      for (Set* m : linear) project_back_block(space, st, i, m->flat(i).data(), m->flat(i).data());
      if (b.left) refresh_side(space, st, i, b.L, b.QL, second, /*rows=*/true);
      if (b.right) refresh_side(space, st, i, b.R, b.QR, second, /*rows=*/false);
      for (Set* m : linear) project_block(space, st, i, m->flat(i).data(), m->flat(i).data());
    }
    for (Group& g : st.groups) {
      for (Set* m : linear) project_group(space, g, *m, *m, /*back=*/true);
      if (g.left) refresh_group_side(space, st, g, second, /*rows=*/true);
      if (g.right) refresh_group_side(space, st, g, second, /*rows=*/false);
      for (Set* m : linear) project_group(space, g, *m, *m, /*back=*/false);
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
    // 64-bit indices: one side may be unrotated and long (an embedding), so m * n can pass 2^31.
    const std::int64_t m = static_cast<std::int64_t>(b.rows), n = static_cast<std::int64_t>(b.cols);
    T* tmp = st.tmp.data();
    Kokkos::parallel_for(
        "delayopt::basis::permute_second_moment",
        Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<std::int64_t>>(space, 0, m * n),
        KOKKOS_LAMBDA(const std::int64_t k) {
          const std::int64_t r = k / n, c = k % n;
          tmp[k] = rows ? v[idx(r) * n + c] : v[r * n + idx(c)];
        });
    copy(space, tmp, v, static_cast<std::size_t>(m) * n);
  }

  // ---- batched groups -----------------------------------------------------------------------------
  /// Rows of BatchGroup::ptrs: the blocks' factors and bases, their slices of the group's work
  /// buffer, and the two parameter sets of the current call (written by gather()).
  enum Role : int { kL, kR, kQL, kQR, kTmp, kSqA, kSqB, kSqC, kTau, kKeys, kIn, kOut, kRoles };

  /// Where role r's slice of a block's part of the group's work buffer starts: rows x cols (kTmp),
  /// three side^2 squares (kSqA, kSqB, kSqC), then side values each for kTau and kKeys; kIn (the first
  /// role after them) gives the part's length. `side` is the group's larger rotated side, so a
  /// refresh of the smaller side uses the start of each square.
  static std::size_t work_offset(std::size_t rows, std::size_t cols, std::size_t side, Role r) {
    const std::size_t mn = rows * cols, ss = side * side;
    switch (r) {
      case kTmp:
        return 0;
      case kSqA:
        return mn;
      case kSqB:
        return mn + ss;
      case kSqC:
        return mn + 2 * ss;
      case kTau:
        return mn + 3 * ss;
      case kKeys:
        return mn + 3 * ss + side;
      default:
        return mn + 3 * ss + 2 * side;
    }
  }

  /// Groups the batchable blocks by (rows, cols, sides); a group holds at most 2^30 work elements,
  /// so that every flattened index fits an int.
  static void make_groups(State& st) {
    std::map<std::array<std::size_t, 4>, std::vector<int>> by_shape;
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      Block& b = st.blocks[i];
      b.group = -1;
      if (b.batchable && (b.left || b.right))
        by_shape[{b.rows, b.cols, std::size_t(b.left) + 2 * b.right, b.batch_qr}].push_back(int(i));
    }
    st.groups.clear();
    for (const auto& [shape, members] : by_shape) {
      const Block& first = st.blocks[members.front()];
      const std::size_t side = std::max(first.left ? first.rows : 0, first.right ? first.cols : 0);
      const std::size_t stride = work_offset(first.rows, first.cols, side, kIn);
      const std::size_t per_group = std::max<std::size_t>(1, (std::size_t(1) << 30) / stride);
      if (stride > INT_MAX) continue;  // stays on its own (not reachable with a sane batch_max_side)
      for (std::size_t start = 0; start < members.size(); start += per_group) {
        const std::size_t count = std::min(per_group, members.size() - start);
        Group g;
        g.rows = int(first.rows), g.cols = int(first.cols), g.left = first.left, g.right = first.right;
        g.side = int(side), g.stride = stride, g.batch_qr = first.batch_qr;
        g.blocks = Kokkos::View<int*, mem>("delayopt::basis::group_blocks", count);
        g.ptrs = decltype(g.ptrs)("delayopt::basis::group_pointers", kRoles, count);
        g.work = Kokkos::View<T*, mem>("delayopt::basis::group_work", stride * count);
        g.order = Kokkos::View<int*, mem>("delayopt::basis::group_order", side * count);
        g.info = Kokkos::View<int*, mem>("delayopt::basis::group_info", 2 * count);
        auto blocks = Kokkos::create_mirror_view(g.blocks);
        auto ptrs = Kokkos::create_mirror_view(g.ptrs);
        const auto at = [](T* p) { return reinterpret_cast<std::uintptr_t>(p); };
        for (std::size_t k = 0; k < count; ++k) {
          Block& b = st.blocks[members[start + k]];
          b.group = int(st.groups.size());
          blocks(k) = members[start + k];
          T* w = g.work.data() + k * stride;
          ptrs(kL, k) = at(b.L.data());
          ptrs(kR, k) = at(b.R.data());
          ptrs(kQL, k) = at(b.QL.data());
          ptrs(kQR, k) = at(b.QR.data());
          for (Role r : {kTmp, kSqA, kSqB, kSqC, kTau, kKeys})
            ptrs(r, k) = at(w + work_offset(b.rows, b.cols, side, r));
        }
        Kokkos::deep_copy(g.blocks, blocks);
        Kokkos::deep_copy(g.ptrs, ptrs);
        st.groups.push_back(std::move(g));
      }
    }
  }

  /// The device array of role r's pointers, as cuBLAS's batched routines take it.
  static T* const* array(const Group& g, Role r) {
    return reinterpret_cast<T* const*>(g.ptrs.data() + std::size_t(r) * g.ptrs.extent(1));
  }

  /// Role kIn <- the group's blocks of `in`, kOut <- those of `out` (one small kernel, stream-ordered).
  static void gather(const ExecSpace& space, const Group& g, const Set& in, const Set& out) {
    auto from = in.refs(), to = out.refs();
    auto blocks = g.blocks;
    auto p = g.ptrs;
    Kokkos::parallel_for(
        "delayopt::basis::batched_gather", policy(space, 0, g.count()), KOKKOS_LAMBDA(const int k) {
          p(kIn, k) = reinterpret_cast<std::uintptr_t>(from(blocks(k)).data);
          p(kOut, k) = reinterpret_cast<std::uintptr_t>(to(blocks(k)).data);
        });
  }

  /// out = U^T in V (back: U in V^T) for every block of the group, as project_block does per block.
  static void project_group(const ExecSpace& space, Group& g, const Set& in, Set& out, bool back) {
    gather(space, g, in, out);
    auto blas = h(space).blas;
    const int m = g.rows, n = g.cols, B = g.count();
    const auto N = CUBLAS_OP_N, Tr = CUBLAS_OP_T;
    auto *IN = array(g, kIn), *OUT = array(g, kOut), *TMP = array(g, kTmp), *QL = array(g, kQL), *QR = array(g, kQR);
    if (g.left && g.right) {
      linalg::cuda::gemm_batched(blas, back ? Tr : N, N, n, m, n, T(1), QR, n, IN, n, T(0), TMP, n, B);
      linalg::cuda::gemm_batched(blas, N, back ? N : Tr, n, m, m, T(1), TMP, n, QL, m, T(0), OUT, n, B);
      return;
    }
    if (g.left)
      linalg::cuda::gemm_batched(blas, N, back ? N : Tr, n, m, m, T(1), IN, n, QL, m, T(0), TMP, n, B);
    else
      linalg::cuda::gemm_batched(blas, back ? Tr : N, N, n, m, n, T(1), QR, n, IN, n, T(0), TMP, n, B);
    const int mn = m * n;
    auto p = g.ptrs;
    Kokkos::parallel_for(
        "delayopt::basis::batched_copy_out", policy(space, 0, B * mn), KOKKOS_LAMBDA(const int e) {
          const int b = e / mn, k = e % mn;
          reinterpret_cast<T*>(p(kOut, b))[k] = reinterpret_cast<const T*>(p(kTmp, b))[k];
        });
  }

  /// L <- beta L + (1-beta) G G^T, R <- beta R + (1-beta) G^T G over the group, by GEMM (see above).
  static void accumulate_group(const ExecSpace& space, Group& grp, const Set& g, double beta) {
    gather(space, grp, g, g);
    auto blas = h(space).blas;
    const int m = grp.rows, n = grp.cols, B = grp.count();
    auto* G = array(grp, kIn);
    if (grp.left)
      linalg::cuda::gemm_batched(blas, CUBLAS_OP_T, CUBLAS_OP_N, m, m, n, T(1 - beta), G, n, G, n, T(beta),
                                 array(grp, kL), m, B);
    if (grp.right)
      linalg::cuda::gemm_batched(blas, CUBLAS_OP_N, CUBLAS_OP_T, n, n, m, T(1 - beta), G, n, G, n, T(beta),
                                 array(grp, kR), n, B);
  }

  /// refresh_side over a group: F Q by one batched GEMM on F's symmetric completion, the Rayleigh
  /// quotients, the re-sort (linalg::batched::argsort_descending), the permutations, the QR (one
  /// batched geqrf and linalg::batched::form_q, or cuSOLVER per block above batch_qr_max_side), then
  /// a commit per block that keeps the permuted old basis (and counts a failure) where the solver
  /// reported an error or the new basis is not finite.
  static void refresh_group_side(const ExecSpace& space, State& st, Group& g, const std::vector<Set*>& second,
                                 bool rows) {
    const int s = rows ? g.rows : g.cols, ss = s * s, B = g.count();
    const Role F = rows ? kL : kR, Q = rows ? kQL : kQR;
    auto p = g.ptrs;
    const auto ptr = [=] KOKKOS_FUNCTION(Role r, int b) { return reinterpret_cast<T*>(p(r, b)); };
    // F is kept in its column-major upper triangle (the row-major lower, as on the host).
    Kokkos::parallel_for(
        "delayopt::basis::batched_symmetrize", policy(space, 0, B * ss), KOKKOS_LAMBDA(const int e) {
          const int b = e / ss, k = e % ss, r = k % s, c = k / s;
          const T* f = ptr(F, b);
          ptr(kSqC, b)[k] = r <= c ? f[r + c * s] : f[c + r * s];
        });
    auto blas = h(space).blas;
    // Row-major F Q == column-major Q^T F, into A.
    linalg::cuda::gemm_batched(blas, CUBLAS_OP_N, CUBLAS_OP_N, s, s, s, T(1), array(g, Q), s, array(g, kSqC), s, T(0),
                               array(g, kSqA), s, B);
    Kokkos::parallel_for(
        "delayopt::basis::batched_rayleigh", policy(space, 0, B * s), KOKKOS_LAMBDA(const int e) {
          const int b = e / s, c = e % s;
          const T *q = ptr(Q, b), *fq = ptr(kSqA, b);
          T sum = 0;
          for (int r = 0; r < s; ++r) sum += q[r * s + c] * fq[r * s + c];
          ptr(kKeys, b)[c] = sum;
        });
    linalg::batched::argsort_descending(space, B, s, array(g, kKeys), g.order.data());
    // C <- Q with columns re-sorted (row-major); B <- F Q with columns re-sorted, column-major, for the QR.
    const int* order = g.order.data();
    Kokkos::parallel_for(
        "delayopt::basis::batched_permute", policy(space, 0, B * ss), KOKKOS_LAMBDA(const int e) {
          const int b = e / ss, k = e % ss;
          const int* idx = order + b * s;
          ptr(kSqC, b)[k] = ptr(Q, b)[(k / s) * s + idx[k % s]];
          ptr(kSqB, b)[(k % s) + (k / s) * s] = ptr(kSqA, b)[(k % s) * s + idx[k / s]];
        });
    for (Set* v : second) permute_group_slot(space, g, *v, rows);
    // QR of B into A (batched), or in place per block (cuSOLVER; info words in g.info).
    Role fresh = kSqA;
    if (g.batch_qr) {
      linalg::cuda::geqrf_batched(blas, s, array(g, kSqB), array(g, kTau), B);
      linalg::batched::form_q(space, B, s, array(g, kSqB), array(g, kTau), array(g, kSqA));
    } else {
      fresh = kSqB;
      const std::size_t b_at = work_offset(g.rows, g.cols, g.side, kSqB);
      for (int k = 0; k < B; ++k)
        linalg::cuda::qr_q(h(space).solver, s, g.work.data() + k * g.stride + b_at, st.vec.data(), st.work.data(),
                           static_cast<int>(st.work.extent(0)), g.info.data() + 2 * k);
    }
    const int* info = g.info.data();
    auto failures = st.device_failures;
    using team_policy = Kokkos::TeamPolicy<ExecSpace>;
    Kokkos::parallel_for(
        "delayopt::basis::batched_commit", team_policy(space, B, Kokkos::AUTO),
        KOKKOS_LAMBDA(const typename team_policy::member_type& t) {
          const int b = t.league_rank();
          const T *q_new = ptr(fresh, b), *kept = ptr(kSqC, b);
          int bad = 0;
          Kokkos::parallel_reduce(
              Kokkos::TeamThreadRange(t, ss), [&](const int k, int& n) { n += Kokkos::isfinite(q_new[k]) ? 0 : 1; },
              bad);
          const bool ok = bad == 0 && info[2 * b] == 0 && info[2 * b + 1] == 0;
          T* q = ptr(Q, b);
          Kokkos::parallel_for(Kokkos::TeamThreadRange(t, ss),
                               [&](const int k) { q[k] = ok ? q_new[(k / s) + (k % s) * s] : kept[k]; });
          if (!ok) Kokkos::single(Kokkos::PerTeam(t), [&] { Kokkos::atomic_add(&failures(), std::int64_t(1)); });
        });
  }

  /// Second-moment slot v of every block of the group permuted with the re-sorted basis: rows (left
  /// side) or columns, through the group's per-block scratch.
  static void permute_group_slot(const ExecSpace& space, Group& g, Set& v, bool rows) {
    const int m = g.rows, n = g.cols, mn = m * n, s = rows ? m : n;
    auto refs = v.refs();
    auto blocks = g.blocks;
    auto p = g.ptrs;
    const int* order = g.order.data();
    Kokkos::parallel_for(
        "delayopt::basis::batched_permute_second_moment", policy(space, 0, g.count() * mn), KOKKOS_LAMBDA(const int e) {
          const int b = e / mn, k = e % mn, r = k / n, c = k % n;
          const int* idx = order + b * s;
          const T* x = refs(blocks(b)).data;
          reinterpret_cast<T*>(p(kTmp, b))[k] = rows ? x[idx[r] * n + c] : x[r * n + idx[c]];
        });
    Kokkos::parallel_for(
        "delayopt::basis::batched_copy_back", policy(space, 0, g.count() * mn), KOKKOS_LAMBDA(const int e) {
          const int b = e / mn, k = e % mn;
          refs(blocks(b)).data[k] = reinterpret_cast<const T*>(p(kTmp, b))[k];
        });
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
