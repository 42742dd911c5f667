/// \file delayopt/basis/kronecker_eigen.hpp
/// \brief Eigenbases of Kronecker factors (SOAP / basis rotation / full-rank GaLore) and of the full
/// gradient covariance of small blocks.
///
/// For a rank-2 block G (m x n) the moment policy runs on G~ = U^T G V, and its increment is mapped
/// back as U D~ V^T. Source `covariance`: U, V are eigenvectors of L = EMA(G G^T), R = EMA(G^T G)
/// (descending eigenvalues). Source `momentum`: U, V are singular vectors of the first moment.
/// Refresh every k steps: a full eigendecomposition (or SVD) the first time, later one power
/// iteration + QR warm-started from the previous basis; columns are re-sorted by the Rayleigh
/// quotients diag(Q^T L Q) and second-moment slots are permuted with them, first-moment slots are
/// rotated into the new basis. docs/policies.md gives the equations, orderings and sources.
#pragma once

#include "delayopt/core/compat.hpp"
#include "delayopt/core/concepts.hpp"
#include "delayopt/core/error.hpp"
#include "delayopt/core/hyper.hpp"
#include "delayopt/core/param_set.hpp"
#include "delayopt/linalg/host.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace delayopt::basis {

/// Where the basis comes from.
enum class Source {
  covariance,  ///< eigenvectors of EMA(G G^T), EMA(G^T G) (SOAP; the paper's "2nd")
  momentum,    ///< singular vectors of the first moment (full-rank GaLore; the paper's "1st")
};
/// Which sides of a rank-2 block rotate.
enum class Geometry {
  two_sided,  ///< U^T G V (the paper's "bi")
  one_sided,  ///< only the smaller dimension (the paper's "uni"); ties rotate the rows
};
/// Where accumulation and refresh sit in a step.
enum class Ordering {
  /// SOAP (nikhilvyas/SOAP): the first call only initializes factors and basis (no parameter
  /// update); later calls project with the current basis, update, then accumulate and refresh.
  soap,
  /// Basis-rotation paper (arXiv 2602.03515, Alg. 1): accumulate and refresh first, then project
  /// the current gradient; the first call already updates.
  paper,
};
/// What rank-1 blocks (biases, norms) do.
enum class Rank1 {
  identity,  ///< stay in the coordinate basis (SOAP's default, precondition_1d = false)
  full,      ///< full eigenbasis of EMA(g g^T) when size <= max_dim (precondition_1d = true)
};

namespace detail {

/// One block seen as a row-major rows x cols matrix with its rotated sides.
template <class T, class Mem>
struct EigenBlock {
  using matrix = Kokkos::View<T**, Kokkos::LayoutRight, Mem>;
  std::size_t rows = 0, cols = 0;
  bool left = false, right = false;
  matrix L, R, QL, QR;  // factors (covariance source) and bases; unallocated on unrotated sides
  // Device backends: whether the block may share batched library calls with blocks of its shape
  // (rotated sides <= the policy's batch_max_side), and the group it was put in (-1: on its own).
  bool batchable = false;
  bool batch_qr = false;  // and whether its refresh QR is batched too (rotated sides <= batch_qr_max_side)
  int group = -1;
};

/// Device backends: blocks of one shape and geometry whose products, re-sort and QR run as one
/// batched call each. Host backends leave it empty.
template <class T, class Mem>
struct BatchGroup {
  int rows = 0, cols = 0;
  bool left = false, right = false;
  int side = 0;                    ///< the larger rotated side
  bool batch_qr = false;           ///< QR batched too (else cuSOLVER per block)
  std::size_t stride = 0;          ///< elements of `work` per block
  Kokkos::View<int*, Mem> blocks;  ///< block indices, ascending
  /// (role, block): matrix addresses, read as the arrays of pointers batched library calls take
  Kokkos::View<std::uintptr_t**, Kokkos::LayoutRight, Mem> ptrs;
  Kokkos::View<T*, Mem> work;     ///< per block: rows x cols, three side^2, tau, keys
  Kokkos::View<int*, Mem> order;  ///< per block: side re-sorted column indices
  Kokkos::View<int*, Mem> info;   ///< per block: two solver info words (cuSOLVER QR)
  int count() const { return static_cast<int>(blocks.extent(0)); }
};

/// Settings shared by KroneckerEigen and FullEigen, with the moment's betas resolved.
struct EigenSettings {
  Source source = Source::covariance;
  Ordering ordering = Ordering::soap;
  int refresh_every = 10;
  std::int64_t refresh_window = 0;  // > 0: refreshes_per_window refreshes per window instead
  std::int64_t refreshes_per_window = 0;
  double beta = 0.999;  // factor EMA
  double beta1 = 0.9;   // look-ahead momentum of the momentum source
  bool retry_in_double = true;

  /// Whether the t-th step (1-based) refreshes: every refresh_every steps, or refreshes_per_window
  /// evenly spaced refreshes in every window of refresh_window steps.
  bool due(std::int64_t t) const {
    if (refresh_window <= 0) return t % refresh_every == 0;
    const std::int64_t k = (t - 1) % refresh_window;  // position in the window, 0-based
    return (k + 1) * refreshes_per_window / refresh_window > k * refreshes_per_window / refresh_window;
  }
};

/// The refresh and factor-EMA options KroneckerEigen::Hyper and FullEigen::Hyper share; beta < 0
/// means "the moment's beta2".
inline void validate_refresh(std::string_view owner, int refresh_every, std::int64_t refresh_window,
                             std::int64_t refreshes_per_window, double beta) {
  hyper::require_in(owner, "refresh_every", refresh_every, 1, hyper::bound::closed, INFINITY, hyper::bound::open);
  hyper::require_nonnegative(owner, "refresh_window", static_cast<double>(refresh_window));
  hyper::require_in(owner, "refreshes_per_window", static_cast<double>(refreshes_per_window), 0, hyper::bound::closed,
                    static_cast<double>(refresh_window), hyper::bound::closed);
  if (beta >= 0) hyper::require_unit_interval(owner, "beta", beta);
}

/// State of an eigenbasis over all blocks of a ParamSet.
template <class T, class ExecSpace>
struct EigenState {
  using memory_space = typename ExecSpace::memory_space;
  std::vector<EigenBlock<T, memory_space>> blocks;
  std::int64_t calls = 0;              ///< calls with a finite gradient seen by the basis
  std::int64_t refreshes = 0;          ///< basis refreshes done (initialization excluded)
  std::int64_t failures = 0;           ///< host solver failures that kept the previous basis
  Kokkos::View<T*, memory_space> tmp;  ///< workspace of the largest block
  // Device backends only (cuSOLVER): solver workspace, two square scratch matrices, a vector, status
  // integers, and the failure count kept on the device so a failed solve needs no host sync.
  Kokkos::View<T*, memory_space> work, square_a, square_b, vec;
  Kokkos::View<int*, memory_space> ints;
  Kokkos::View<std::int64_t, memory_space> device_failures;
  std::vector<BatchGroup<T, memory_space>> groups;
};

/// Eigenbasis operations per memory kind: Eigen on host memory (below), cuBLAS/cuSOLVER on CUDA
/// memory (basis/detail/eigenbasis_cuda.hpp, with DELAYOPT_ENABLE_CUDA_LINALG).
template <class T, class ExecSpace, bool Host = compat::is_host_space_v<ExecSpace>>
struct EigenbasisOps {
  static_assert(Host,
                "delayopt::basis: rotated bases on device memory need the CUDA backend: configure with "
                "-DDELAYOPT_ENABLE_CUDA_LINALG=ON (cuBLAS/cuSOLVER) and a CUDA-enabled Kokkos");
};

template <class T>
linalg::MatrixMap<T> map(const Kokkos::View<T**, Kokkos::LayoutRight, Kokkos::HostSpace>& v) {
  return linalg::MatrixMap<T>(v.data(), v.extent(0), v.extent(1));
}
template <class T>
linalg::MatrixMap<T> map(T* data, std::size_t rows, std::size_t cols) {
  return linalg::MatrixMap<T>(data, rows, cols);
}

/// Runs a factorization in T, then in double if that failed and retrying is on; counts failures.
template <class T, class Fn>
bool attempt(bool retry, std::int64_t& failures, Fn&& fn) {
  linalg::Status s = fn.template operator()<T>();
  if (s != linalg::Status::success && retry && !std::is_same_v<T, double>) s = fn.template operator()<double>();
  if (s == linalg::Status::success) return true;
  ++failures;
  return false;
}

/// Implementation shared by KroneckerEigen and FullEigen on host memory (Eigen).
template <class T, class ExecSpace>
struct EigenbasisOps<T, ExecSpace, true> {
  using State = EigenState<T, ExecSpace>;
  using Set = ParamSet<T, ExecSpace>;
  using Block = EigenBlock<T, typename ExecSpace::memory_space>;
  using Mat = linalg::RowMatrix<T>;

  static State make_state(const ExecSpace&, std::vector<Block> blocks, bool covariance) {
    State st;
    std::size_t largest = 0;
    for (auto& b : blocks) {
      using V = typename Block::matrix;
      if (b.left) {
        b.QL = V("delayopt::basis::QL", b.rows, b.rows);
        if (covariance) b.L = V("delayopt::basis::L", b.rows, b.rows);
      }
      if (b.right) {
        b.QR = V("delayopt::basis::QR", b.cols, b.cols);
        if (covariance) b.R = V("delayopt::basis::R", b.cols, b.cols);
      }
      largest = std::max(largest, b.rows * b.cols);
    }
    st.blocks = std::move(blocks);
    st.tmp = Kokkos::View<T*, typename ExecSpace::memory_space>("delayopt::basis::tmp", largest);
    return st;
  }

  static linalg::MatrixMap<T> as_matrix(const Set& set, std::size_t i, const Block& b) {
    return map(set.flat(i).data(), b.rows, b.cols);
  }

  /// out = U^T in V (unrotated sides act as identity). `in` and `out` may alias.
  static void project(State& st, std::size_t i, const linalg::MatrixMap<T>& in, linalg::MatrixMap<T> out) {
    const Block& b = st.blocks[i];
    auto tmp = map(st.tmp.data(), b.rows, b.cols);
    if (b.left && b.right) {
      tmp.noalias() = map(b.QL).transpose() * in;
      out.noalias() = tmp * map(b.QR);
    } else if (b.left) {
      tmp.noalias() = map(b.QL).transpose() * in;
      out = tmp;
    } else if (b.right) {
      tmp.noalias() = in * map(b.QR);
      out = tmp;
    } else if (in.data() != out.data()) {
      out = in;
    }
  }

  /// out = U in V^T. `in` and `out` may alias.
  static void project_back(State& st, std::size_t i, const linalg::MatrixMap<T>& in, linalg::MatrixMap<T> out) {
    const Block& b = st.blocks[i];
    auto tmp = map(st.tmp.data(), b.rows, b.cols);
    if (b.left && b.right) {
      tmp.noalias() = map(b.QL) * in;
      out.noalias() = tmp * map(b.QR).transpose();
    } else if (b.left) {
      tmp.noalias() = map(b.QL) * in;
      out = tmp;
    } else if (b.right) {
      tmp.noalias() = in * map(b.QR).transpose();
      out = tmp;
    } else if (in.data() != out.data()) {
      out = in;
    }
  }

  static void project_all(const ExecSpace&, State& st, const Set& in, Set& out) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i)
      project(st, i, as_matrix(in, i, st.blocks[i]), as_matrix(out, i, st.blocks[i]));
  }
  static void project_back_all(const ExecSpace&, State& st, Set& x) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i)
      project_back(st, i, as_matrix(x, i, st.blocks[i]), as_matrix(x, i, st.blocks[i]));
  }

  /// out = beta1 M + (1 - beta1) G in the original basis, M the first moment rotated back (0 if none).
  static void lookahead(const ExecSpace&, State& st, double beta1, const Set& g, const Set* m, Set& out) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      const auto& b = st.blocks[i];
      auto o = as_matrix(out, i, b);
      if (m)
        project_back(st, i, as_matrix(*m, i, b), o);
      else
        o.setZero();
      o = static_cast<T>(beta1) * o + static_cast<T>(1 - beta1) * as_matrix(g, i, b);
    }
  }

  /// L <- beta L + (1 - beta) G G^T and R <- beta R + (1 - beta) G^T G, lower triangles (SYRK).
  static void accumulate(const ExecSpace&, State& st, const Set& g, double beta) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      Block& b = st.blocks[i];
      const auto G = as_matrix(g, i, b);
      if (b.left) {
        auto L = map(b.L);
        L.template triangularView<Eigen::Lower>() *= static_cast<T>(beta);
        L.template selfadjointView<Eigen::Lower>().rankUpdate(G, static_cast<T>(1 - beta));
      }
      if (b.right) {
        auto R = map(b.R);
        R.template triangularView<Eigen::Lower>() *= static_cast<T>(beta);
        R.template selfadjointView<Eigen::Lower>().rankUpdate(G.transpose(), static_cast<T>(1 - beta));
      }
    }
  }

  /// First basis: eigh of each factor, or SVD of the look-ahead momentum. A failed solve leaves the
  /// identity basis.
  static void initialize(const ExecSpace&, State& st, const EigenSettings& s, const Set* momentum) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      Block& b = st.blocks[i];
      if (b.left) map(b.QL).setIdentity();
      if (b.right) map(b.QR).setIdentity();
      if (s.source == Source::covariance) {
        for (int side = 0; side < 2; ++side) {
          if (!(side == 0 ? b.left : b.right)) continue;
          auto F = map(side == 0 ? b.L : b.R);
          auto Q = map(side == 0 ? b.QL : b.QR);
          attempt<T>(s.retry_in_double, st.failures, [&]<class S>() {
            return linalg::eigh_descending<S, T>(linalg::ConstMatrixMap<T>(F.data(), F.rows(), F.cols()), Q, 1e-30);
          });
        }
      } else if (b.left || b.right) {
        svd_basis(st, s, i, as_matrix(*momentum, i, b));
      }
    }
  }

  /// Full singular vectors of M into the rotated sides.
  static void svd_basis(State& st, const EigenSettings& s, std::size_t i, const linalg::MatrixMap<T>& M) {
    Block& b = st.blocks[i];
    Mat U(b.rows, b.rows), V(b.cols, b.cols);
    const bool ok = attempt<T>(s.retry_in_double, st.failures, [&]<class S>() {
      return linalg::svd_full<S, T>(linalg::ConstMatrixMap<T>(M.data(), M.rows(), M.cols()),
                                    linalg::MatrixMap<T>(U.data(), U.rows(), U.cols()),
                                    linalg::MatrixMap<T>(V.data(), V.rows(), V.cols()));
    });
    if (!ok) return;
    if (b.left) map(b.QL) = U;
    if (b.right) map(b.QR) = V;
  }

  /// Power iteration + QR from the current basis. `linear` slots are rotated into the new basis,
  /// `second` slots permuted with re-sorted columns. `lookahead` is the momentum the momentum source
  /// takes its singular vectors from (original basis).
  static void refresh(const ExecSpace&, State& st, const EigenSettings& s, const std::vector<Set*>& linear,
                      const std::vector<Set*>& second, const Set* lookahead) {
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      Block& b = st.blocks[i];
      if (!b.left && !b.right) continue;
      for (Set* m : linear) project_back(st, i, as_matrix(*m, i, b), as_matrix(*m, i, b));
      if (s.source == Source::covariance) {
        if (b.left) refresh_side(st, s, b.L, b.QL, i, second, /*rows=*/true);
        if (b.right) refresh_side(st, s, b.R, b.QR, i, second, /*rows=*/false);
      } else {
        refresh_momentum(st, s, i, as_matrix(*lookahead, i, b));
      }
      for (Set* m : linear) project(st, i, as_matrix(*m, i, b), as_matrix(*m, i, b));
    }
    ++st.refreshes;
  }

  static void refresh_side(State& st, const EigenSettings& s, const typename Block::matrix& Fv,
                           const typename Block::matrix& Qv, std::size_t i, const std::vector<Set*>& second,
                           bool rows) {
    const Block& b = st.blocks[i];
    auto Q = map(Qv);
    const auto n = Q.rows();
    Mat FQ(n, n);
    FQ.noalias() = map(Fv).template selfadjointView<Eigen::Lower>() * Q;
    // Rayleigh quotients diag(Q^T F Q) from the product the power iteration needs anyway.
    const Eigen::Matrix<T, Eigen::Dynamic, 1> est = Q.cwiseProduct(FQ).colwise().sum().transpose();
    std::vector<Eigen::Index> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](auto a, auto c) { return est(a) > est(c); });
    const Eigen::PermutationMatrix<Eigen::Dynamic> P = permutation(idx);
    Q = Q * P;  // column j <- column idx[j]
    FQ = FQ * P;
    for (Set* v : second) {
      auto V = as_matrix(*v, i, b);
      if (rows)
        V = P.transpose() * V;  // row j <- row idx[j]
      else
        V = V * P;
    }
    attempt<T>(s.retry_in_double, st.failures,
               [&]<class S>() { return linalg::qr_q<S, T>(linalg::ConstMatrixMap<T>(FQ.data(), n, n), Q); });
  }

  /// GaLore-style block power iteration: U <- qr(M V), V <- qr(M^T U) (complete), from the old bases.
  static void refresh_momentum(State& st, const EigenSettings& s, std::size_t i, const linalg::MatrixMap<T>& M) {
    Block& b = st.blocks[i];
    Mat U_old = b.left ? Mat(map(b.QL)) : Mat();
    if (b.left) {
      Mat MV = b.right ? Mat(M * map(b.QR)) : Mat(M);
      attempt<T>(s.retry_in_double, st.failures, [&]<class S>() {
        return linalg::qr_q<S, T>(linalg::ConstMatrixMap<T>(MV.data(), MV.rows(), MV.cols()), map(b.QL));
      });
    }
    if (b.right) {
      Mat MtU = b.left ? Mat(M.transpose() * U_old) : Mat(M.transpose());
      attempt<T>(s.retry_in_double, st.failures, [&]<class S>() {
        return linalg::qr_q<S, T>(linalg::ConstMatrixMap<T>(MtU.data(), MtU.rows(), MtU.cols()), map(b.QR));
      });
    }
  }

  static Eigen::PermutationMatrix<Eigen::Dynamic> permutation(const std::vector<Eigen::Index>& idx) {
    // Eigen: P(indices[c], c) = 1, so (Q P).col(c) = Q.col(indices[c]) and (P^T V).row(r) = V.row(indices[r]).
    Eigen::PermutationMatrix<Eigen::Dynamic> P(static_cast<Eigen::Index>(idx.size()));
    for (std::size_t j = 0; j < idx.size(); ++j) P.indices()[j] = static_cast<int>(idx[j]);
    return P;
  }

  static std::size_t state_bytes(const State& st) {
    std::size_t n = 0;
    for (const auto& b : st.blocks) n += (b.L.size() + b.R.size() + b.QL.size() + b.QR.size()) * sizeof(T);
    return n;
  }

  static State clone(const ExecSpace& space, const State& src) {
    State out = src;
    for (auto& b : out.blocks)
      for (auto* v : {&b.L, &b.R, &b.QL, &b.QR})
        if (v->size()) {
          typename Block::matrix copy(v->label(), v->extent(0), v->extent(1));
          Kokkos::deep_copy(space, copy, *v);
          *v = copy;
        }
    out.tmp = Kokkos::View<T*, typename ExecSpace::memory_space>("delayopt::basis::tmp", src.tmp.extent(0));
    return out;
  }
};

/// The generic rotated-basis protocol both policies implement through EigenbasisOps.
template <class Derived>
struct EigenbasisPolicy {
  static constexpr bool is_identity = false;

  template <class T, class ExecSpace>
  using State = EigenState<T, ExecSpace>;

  /// x~ = U^T x V for every block (in and out may be the same set).
  template <class T, class ExecSpace>
  static void project(const ExecSpace& space, EigenState<T, ExecSpace>& st, const ParamSet<T, ExecSpace>& in,
                      ParamSet<T, ExecSpace>& out) {
    EigenbasisOps<T, ExecSpace>::project_all(space, st, in, out);
  }

  /// x <- U x V^T for every block, in place.
  template <class T, class ExecSpace>
  static void project_back(const ExecSpace& space, EigenState<T, ExecSpace>& st, ParamSet<T, ExecSpace>& x) {
    EigenbasisOps<T, ExecSpace>::project_back_all(space, st, x);
  }

  /// Solver failures that kept the previous basis (reads the device count on device backends: fences).
  template <class T, class ExecSpace>
  static std::int64_t failures(const EigenState<T, ExecSpace>& st) {
    std::int64_t n = st.failures;
    if (st.device_failures.data()) {
      std::int64_t d = 0;
      Kokkos::deep_copy(d, st.device_failures);
      n += d;
    }
    return n;
  }

  /// Checkpoint protocol (io/checkpoint.hpp): the counters, then each block's allocated factors
  /// and bases. The failure count is one number on every backend (the device count folds in).
  template <class T, class ExecSpace, class Visitor>
  static void visit_state(EigenState<T, ExecSpace>& st, Visitor& v) {
    v.count("basis/calls", st.calls);
    v.count("basis/refreshes", st.refreshes);
    v.count(
        "basis/failures", [&] { return failures(st); }, [&](std::int64_t n) { st.failures = n; });
    for (std::size_t i = 0; i < st.blocks.size(); ++i) {
      auto& b = st.blocks[i];
      if (b.L.size()) v.array("basis/L", i, b.L);
      if (b.R.size()) v.array("basis/R", i, b.R);
      if (b.QL.size()) v.array("basis/QL", i, b.QL);
      if (b.QR.size()) v.array("basis/QR", i, b.QR);
    }
  }

  /// Bytes of factors and bases (the moment slots are counted by the optimizer).
  template <class T, class ExecSpace>
  static std::size_t state_bytes(const EigenState<T, ExecSpace>& st) {
    return EigenbasisOps<T, ExecSpace>::state_bytes(st);
  }

  template <class T, class ExecSpace>
  static EigenState<T, ExecSpace> clone(const ExecSpace& space, const EigenState<T, ExecSpace>& st) {
    return EigenbasisOps<T, ExecSpace>::clone(space, st);
  }

  /// Called once per finite-gradient call before the moment update, with the effective gradient
  /// (original basis). Returns whether the moments are updated in this call.
  template <class T, class ExecSpace, std::size_t N>
  static bool begin_step(const ExecSpace& space, const EigenSettings& s, EigenState<T, ExecSpace>& st,
                         const ParamSet<T, ExecSpace>& g, const std::array<ParamSet<T, ExecSpace>, N>& slots,
                         const std::vector<int>& linear_slots, const std::vector<int>& second_slots,
                         ParamSet<T, ExecSpace>& lookahead) {
    using Ops = EigenbasisOps<T, ExecSpace>;
    const bool first = st.calls++ == 0;
    if (s.source == Source::covariance) Ops::accumulate(space, st, g, s.beta);
    const bool paper = s.ordering == Ordering::paper;
    if (s.source == Source::momentum && (first || (paper && s.due(st.calls))))
      Ops::lookahead(space, st, s.beta1, g, linear_slots.empty() || first ? nullptr : &slots[linear_slots[0]],
                     lookahead);
    if (first) {
      Ops::initialize(space, st, s, &lookahead);
      return paper;  // SOAP skips the update on its first call
    }
    if (paper && s.due(st.calls)) refresh(space, s, st, slots, linear_slots, second_slots, &lookahead);
    return true;
  }

  /// Called after a moment update (SOAP ordering refreshes here, every refresh_every updates).
  /// `scratch` (params' shapes, free after the update) holds the momentum-source look-ahead, so a
  /// refresh allocates nothing.
  template <class T, class ExecSpace, std::size_t N>
  static void end_step(const ExecSpace& space, const EigenSettings& s, EigenState<T, ExecSpace>& st,
                       const std::array<ParamSet<T, ExecSpace>, N>& slots, const std::vector<int>& linear_slots,
                       const std::vector<int>& second_slots, ParamSet<T, ExecSpace>& scratch) {
    const std::int64_t t = st.calls - 1;  // SOAP's step: its first call updates nothing
    if (s.ordering != Ordering::soap || !s.due(t)) return;
    // After the update the first moment already is the look-ahead momentum beta1 m + (1-beta1) g.
    const ParamSet<T, ExecSpace>* m = linear_slots.empty() ? nullptr : &slots[linear_slots[0]];
    const bool momentum = s.source == Source::momentum && m;
    if (momentum) {
      scratch.assign(space, *m);
      EigenbasisOps<T, ExecSpace>::project_back_all(space, st, scratch);
    }
    refresh(space, s, st, slots, linear_slots, second_slots, momentum ? &scratch : nullptr);
  }

 private:
  template <class T, class ExecSpace, std::size_t N>
  static void refresh(const ExecSpace& space, const EigenSettings& s, EigenState<T, ExecSpace>& st,
                      const std::array<ParamSet<T, ExecSpace>, N>& slots, const std::vector<int>& linear_slots,
                      const std::vector<int>& second_slots, const ParamSet<T, ExecSpace>* lookahead) {
    std::vector<ParamSet<T, ExecSpace>*> lin, sec;
    auto& mutable_slots = const_cast<std::array<ParamSet<T, ExecSpace>, N>&>(slots);  // shallow handles
    for (int k : linear_slots) lin.push_back(&mutable_slots[k]);
    for (int k : second_slots) sec.push_back(&mutable_slots[k]);
    EigenbasisOps<T, ExecSpace>::refresh(space, st, s, lin, sec, lookahead);
  }
};

}  // namespace detail

/// Kronecker-factored eigenbasis for rank-2 blocks (SOAP, basis rotation, full-rank GaLore).
struct KroneckerEigen : detail::EigenbasisPolicy<KroneckerEigen> {
  static constexpr const char* name = "basis::KroneckerEigen";

  struct Hyper {
    Source source = Source::covariance;
    Geometry geometry = Geometry::two_sided;
    Ordering ordering = Ordering::soap;
    /// Steps between refreshes (SOAP's precondition_frequency).
    int refresh_every = 10;
    /// EMA factor of L and R; < 0 uses the moment policy's beta2 (SOAP's shampoo_beta = -1).
    double beta = -1.0;
    /// A side longer than this stays unrotated (SOAP's max_precond_dim).
    std::size_t max_dim = 10000;
    Rank1 rank1 = Rank1::identity;
    /// Retry a failed float eigensolve / QR in double before keeping the previous basis.
    bool retry_in_double = true;
    /// > 0: instead of every refresh_every steps, refresh refreshes_per_window times, evenly spaced,
    /// in every window of this many steps (a stage's share of a refresh budget,
    /// schedule::split_refresh_budget).
    std::int64_t refresh_window = 0;
    std::int64_t refreshes_per_window = 0;
    /// Device backends (CUDA): blocks whose rotated sides are all at most this long share one
    /// batched cuBLAS call per product and one kernel per element pass with the other blocks of
    /// their shape, instead of a launch sequence each; 0 batches nothing. Host backends ignore it.
    std::size_t batch_max_side = 512;
    /// Device backends: within a batched group, the refresh QR is batched too (cuBLAS
    /// <t>geqrfBatched) when the rotated sides are at most this long; above, cuSOLVER's blocked QR
    /// runs per block, which is faster there (docs/performance.md).
    std::size_t batch_qr_max_side = 128;

    void validate() const {
      detail::validate_refresh(name, refresh_every, refresh_window, refreshes_per_window, beta);
      hyper::require_in(name, "max_dim", static_cast<double>(max_dim), 1, hyper::bound::closed, INFINITY,
                        hyper::bound::open);
    }
  };

  /// Which sides of each block rotate; rank-2 LayoutLeft blocks are their row-major transpose.
  template <class T, class ExecSpace>
  static detail::EigenState<T, ExecSpace> init(const Hyper& h, const ParamSet<T, ExecSpace>& params) {
    std::vector<detail::EigenBlock<T, typename ExecSpace::memory_space>> blocks;
    for (const auto& s : params.shapes()) {
      detail::EigenBlock<T, typename ExecSpace::memory_space> b;
      const bool transposed = s.rank == 2 && s.layout == Layout::left;
      b.rows = transposed ? s.cols : s.rows;
      b.cols = transposed ? s.rows : s.cols;
      if (s.rank == 2) {
        const bool rows_smaller = b.rows <= b.cols;
        b.left = b.rows <= h.max_dim && (h.geometry == Geometry::two_sided || rows_smaller);
        b.right = b.cols <= h.max_dim && (h.geometry == Geometry::two_sided || !rows_smaller);
      } else {
        b.left = h.rank1 == Rank1::full && b.rows <= h.max_dim;
      }
      const auto fits = [&](std::size_t limit) {
        return (!b.left || b.rows <= limit) && (!b.right || b.cols <= limit);
      };
      b.batchable = fits(h.batch_max_side);
      b.batch_qr = fits(h.batch_qr_max_side);
      blocks.push_back(b);
    }
    return detail::EigenbasisOps<T, ExecSpace>::make_state(ExecSpace(), std::move(blocks),
                                                           h.source == Source::covariance);
  }

  static detail::EigenSettings settings(const Hyper& h, double beta1, double beta2) {
    return {h.source,
            h.ordering,
            h.refresh_every,
            h.refresh_window,
            h.refreshes_per_window,
            h.beta >= 0 ? h.beta : beta2,
            beta1,
            h.retry_in_double};
  }
};

/// Eigenbasis of the full covariance EMA(vec(G) vec(G)^T) of each block (small blocks only: the
/// factor has size^2 entries).
struct FullEigen : detail::EigenbasisPolicy<FullEigen> {
  static constexpr const char* name = "basis::FullEigen";

  struct Hyper {
    Ordering ordering = Ordering::soap;
    int refresh_every = 10;
    double beta = -1.0;
    /// Largest block (elements) allowed: the covariance is max_size^2 values.
    std::size_t max_size = 4096;
    bool retry_in_double = true;
    /// > 0: refreshes_per_window evenly spaced refreshes in every window of this many steps instead
    /// of one every refresh_every (as KroneckerEigen::Hyper's: a stage's share of a refresh budget).
    std::int64_t refresh_window = 0;
    std::int64_t refreshes_per_window = 0;
    /// Device backends: blocks of at most this many elements are batched by size, and their
    /// refresh QR too up to batch_qr_max_side (as KroneckerEigen::Hyper's); 0 batches nothing.
    std::size_t batch_max_side = 512;
    std::size_t batch_qr_max_side = 128;

    void validate() const {
      detail::validate_refresh(name, refresh_every, refresh_window, refreshes_per_window, beta);
      hyper::require_in(name, "max_size", static_cast<double>(max_size), 1, hyper::bound::closed, 16384,
                        hyper::bound::closed);
    }
  };

  template <class T, class ExecSpace>
  static detail::EigenState<T, ExecSpace> init(const Hyper& h, const ParamSet<T, ExecSpace>& params) {
    std::vector<detail::EigenBlock<T, typename ExecSpace::memory_space>> blocks;
    for (const auto& s : params.shapes()) {
      if (s.size() > h.max_size)
        throw shape_mismatch(std::string(name) + ": block " + describe(s) + " has " + std::to_string(s.size()) +
                             " elements, above max_size = " + std::to_string(h.max_size) +
                             " (its covariance would hold size^2 values); use basis::KroneckerEigen");
      detail::EigenBlock<T, typename ExecSpace::memory_space> b;
      b.rows = s.size();
      b.cols = 1;
      b.left = true;
      b.batchable = b.rows <= h.batch_max_side;
      b.batch_qr = b.rows <= h.batch_qr_max_side;
      blocks.push_back(b);
    }
    return detail::EigenbasisOps<T, ExecSpace>::make_state(ExecSpace(), std::move(blocks), true);
  }

  static detail::EigenSettings settings(const Hyper& h, double beta1, double beta2) {
    return {Source::covariance,           h.ordering, h.refresh_every,  h.refresh_window, h.refreshes_per_window,
            h.beta >= 0 ? h.beta : beta2, beta1,      h.retry_in_double};
  }
};

}  // namespace delayopt::basis

#if defined(DELAYOPT_ENABLE_CUDA_LINALG) && defined(KOKKOS_ENABLE_CUDA)
#include "delayopt/basis/detail/eigenbasis_cuda.hpp"
#endif
