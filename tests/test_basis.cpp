// Properties of the rotated bases (basis::KroneckerEigen, basis::FullEigen).
#include "support/catch.hpp"
#include "support/helpers.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <random>

using namespace delayopt;
using delayopt::test::bitwise_equal;
using delayopt::test::host_values;
using E = Kokkos::DefaultHostExecutionSpace;
using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixView = Kokkos::View<double**, Kokkos::LayoutRight, E::memory_space>;

namespace {

Mat view_matrix(const MatrixView& v) { return Eigen::Map<const Mat>(v.data(), v.extent(0), v.extent(1)); }
void set_matrix(const MatrixView& v, const Mat& m) { Eigen::Map<Mat>(v.data(), v.extent(0), v.extent(1)) = m; }
Eigen::Map<Mat> block_map(const ParamSet<double, E>& s, std::size_t b) {
  return Eigen::Map<Mat>(s.flat(b).data(), s.shape(b).rows, s.shape(b).cols);
}

Mat random_orthogonal(int n, std::mt19937& gen) {
  std::normal_distribution<double> normal;
  Mat a(n, n);
  for (int i = 0; i < a.size(); ++i) a.data()[i] = normal(gen);
  return Mat(Eigen::HouseholderQR<Mat>(a).householderQ());
}

// Kronecker-structured problem: f(W) = 1/2 tr(W^T A W B), Hessian B (x) A; stochastic gradients
// G = A W B + A^{1/2} Z B^{1/2}, so E[G G^T] has A's eigenvectors and E[G^T G] has B's.
struct KronProblem {
  int m, n;
  Mat U, V, A, B, A_half, B_half;
  KronProblem(int m_, int n_, std::mt19937& gen) : m(m_), n(n_) {
    U = random_orthogonal(m, gen);
    V = random_orthogonal(n, gen);
    Eigen::VectorXd a(m), b(n);
    for (int i = 0; i < m; ++i) a(i) = std::pow(10.0, -2.0 * i / (m - 1));
    for (int i = 0; i < n; ++i) b(i) = std::pow(10.0, -1.0 * i / (n - 1));
    A = U * a.asDiagonal() * U.transpose();
    B = V * b.asDiagonal() * V.transpose();
    A_half = U * a.cwiseSqrt().asDiagonal() * U.transpose();
    B_half = V * b.cwiseSqrt().asDiagonal() * V.transpose();
  }
  Mat gradient(const Mat& W, double noise, std::mt19937& gen) const {
    std::normal_distribution<double> normal;
    Mat Z(m, n);
    for (int i = 0; i < Z.size(); ++i) Z.data()[i] = normal(gen);
    return A * W * B + noise * A_half * Z * B_half;
  }
};

// Largest |<q_i, u_j>| per column, minimized over columns: 1 when Q spans the same axes as U.
double alignment(const Mat& Q, const Mat& U) { return (Q.transpose() * U).cwiseAbs().colwise().maxCoeff().minCoeff(); }

}  // namespace

TEST_CASE("an unrotated KroneckerEigen (all sides above max_dim) equals Adam bit for bit", "[basis]") {
  E space;
  ParamSet<double, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 21);
  auto grads = ParamSet<double, E>::zeros_like(params);
  const moment::Adam::Hyper mh{.weight_decay = 0.01, .weight_decay_mode = moment::Adam::WeightDecay::decoupled};
  const Adam adam({.moment = mh, .schedule = {.lr = 1e-2}});
  const SOAP soap(
      {.basis = {.ordering = basis::Ordering::paper, .max_dim = 1}, .moment = mh, .schedule = {.lr = 1e-2}});
  auto pa = params.clone(space), ps = params.clone(space);
  auto sa = adam.init(space, pa);
  auto ss = soap.init(space, ps);
  for (unsigned t = 0; t < 12; ++t) {
    delayopt::test::fill_random(space, grads, 300 + t);
    adam.update(space, pa, grads, sa);
    soap.update(space, ps, grads, ss);
  }
  space.fence();
  CHECK(bitwise_equal(host_values(pa), host_values(ps)));
  CHECK(SOAP::state_bytes(ss) == Adam::state_bytes(sa));  // no factors, no bases
}

TEST_CASE("with the exact Kronecker eigenbasis, SOAP is Adam on the rotated problem", "[basis]") {
  std::mt19937 gen(7);
  const KronProblem prob(8, 6, gen);
  E space;
  ParamSet<double, E> w({{"W", 2, 8, 6}}), g({{"W", 2, 8, 6}});
  ParamSet<double, E> wr({{"W", 2, 8, 6}}), gr({{"W", 2, 8, 6}});  // the rotated problem for Adam
  Mat W0(8, 6);
  for (int i = 0; i < W0.size(); ++i) W0.data()[i] = std::normal_distribution<double>()(gen);
  block_map(w, 0) = W0;
  block_map(wr, 0) = prob.U.transpose() * W0 * prob.V;
  const moment::Adam::Hyper mh{.beta1 = 0.9, .beta2 = 0.99};
  const SOAP soap({.basis = {.ordering = basis::Ordering::paper, .refresh_every = 1000000},
                   .moment = mh,
                   .schedule = {.lr = 1e-2}});
  const Adam adam({.moment = mh, .schedule = {.lr = 1e-2}});
  auto ss = soap.init(space, w);
  auto sa = adam.init(space, wr);
  for (int t = 0; t < 30; ++t) {
    const Mat G = prob.gradient(block_map(w, 0), 0.0, gen);
    block_map(g, 0) = G;
    soap.update(space, w, g, ss);
    if (t == 0) {  // after the first (initializing) call, install the exact eigenbasis
      set_matrix(ss.basis.blocks[0].QL, prob.U);
      set_matrix(ss.basis.blocks[0].QR, prob.V);
      // redo the first step from scratch in the exact basis
      block_map(w, 0) = W0;
      for (auto& m : ss.moments) Kokkos::deep_copy(m.flat(0), 0.0);
      Kokkos::deep_copy(ss.counters, 0);
      soap.update(space, w, g, ss);
    }
    block_map(gr, 0) = prob.U.transpose() * G * prob.V;
    adam.update(space, wr, gr, sa);
    space.fence();
    const Mat back = prob.U * Mat(block_map(wr, 0)) * prob.V.transpose();
    REQUIRE((Mat(block_map(w, 0)) - back).cwiseAbs().maxCoeff() <= 1e-12);
  }
}

TEST_CASE("on a Kronecker-structured problem the two-sided covariance basis converges to the true eigenbasis",
          "[basis]") {
  std::mt19937 gen(11);
  const KronProblem prob(8, 6, gen);
  E space;
  ParamSet<double, E> w({{"W", 2, 8, 6}}), g({{"W", 2, 8, 6}});
  block_map(w, 0).setZero();
  const SOAP soap({.basis = {.refresh_every = 5}, .moment = {.beta2 = 0.99}, .schedule = {.lr = 1e-3}});
  auto st = soap.init(space, w);
  for (int t = 0; t < 400; ++t) {
    block_map(g, 0) = prob.gradient(block_map(w, 0), 1.0, gen);
    soap.update(space, w, g, st);
  }
  space.fence();
  const Mat QL = view_matrix(st.basis.blocks[0].QL), QR = view_matrix(st.basis.blocks[0].QR);
  CHECK(alignment(QL, prob.U) > 0.95);
  CHECK(alignment(QR, prob.V) > 0.95);
  // Bases stay orthogonal through 80 power-iteration refreshes.
  CHECK((QL.transpose() * QL - Mat::Identity(8, 8)).cwiseAbs().maxCoeff() <= 1e-12);
  CHECK((QR.transpose() * QR - Mat::Identity(6, 6)).cwiseAbs().maxCoeff() <= 1e-12);
  CHECK(st.basis.refreshes == 79);
  // Descending order of the Rayleigh quotients after a refresh.
  const Mat L = Mat(view_matrix(st.basis.blocks[0].L)).selfadjointView<Eigen::Lower>();
  const Eigen::VectorXd est = (QL.transpose() * L * QL).diagonal();
  for (int i = 1; i < 8; ++i) CHECK(est(i) <= est(i - 1) * (1 + 1e-6));
}

TEST_CASE("flipping the sign of basis columns (with the matching moment slices) changes nothing", "[basis]") {
  std::mt19937 gen(5);
  const KronProblem prob(8, 6, gen);
  E space;
  ParamSet<double, E> w({{"W", 2, 8, 6}}), g({{"W", 2, 8, 6}});
  for (int i = 0; i < 48; ++i) block_map(w, 0).data()[i] = std::normal_distribution<double>()(gen);
  const SOAP soap(soap_config(1e-2));
  auto st = soap.init(space, w);
  for (int t = 0; t < 7; ++t) {
    block_map(g, 0) = prob.gradient(block_map(w, 0), 0.5, gen);
    soap.update(space, w, g, st);
  }
  auto w2 = w.clone(space);
  auto st2 = SOAP::clone(space, st);
  space.fence();
  // Flip column 2 of Q_L (row 2 of the rotated m) and column 4 of Q_R (column 4 of the rotated m).
  Mat QL = view_matrix(st2.basis.blocks[0].QL), QR = view_matrix(st2.basis.blocks[0].QR);
  QL.col(2) *= -1;
  QR.col(4) *= -1;
  set_matrix(st2.basis.blocks[0].QL, QL);
  set_matrix(st2.basis.blocks[0].QR, QR);
  auto m = block_map(st2.moments[0], 0);
  m.row(2) *= -1;
  m.col(4) *= -1;
  for (int t = 0; t < 15; ++t) {  // crosses refreshes at updates 10
    const Mat G = prob.gradient(block_map(w, 0), 0.5, gen);
    block_map(g, 0) = G;
    soap.update(space, w, g, st);
    soap.update(space, w2, g, st2);
  }
  space.fence();
  CHECK((Mat(block_map(w, 0)) - Mat(block_map(w2, 0))).cwiseAbs().maxCoeff() <= 1e-12);
}

TEST_CASE("a failed eigensolve keeps the previous basis, counts the failure, and params stay finite", "[basis]") {
  E space;
  ParamSet<double, E> w({{"W", 2, 8, 6}}), g({{"W", 2, 8, 6}});
  delayopt::test::fill_random(space, w, 1);
  const SOAP soap({.basis = {.ordering = basis::Ordering::paper, .refresh_every = 2}, .schedule = {.lr = 1e-2}});
  auto st = soap.init(space, w);
  delayopt::test::fill_random(space, g, 2);
  soap.update(space, w, g, st);  // initializes the basis with eigh
  space.fence();
  const Mat QL_before = view_matrix(st.basis.blocks[0].QL);
  st.basis.blocks[0].L(3, 1) = std::numeric_limits<double>::quiet_NaN();  // inject a non-finite factor
  soap.update(space, w, g, st);                                           // call 2: refresh (power + QR)
  space.fence();
  CHECK(st.basis.failures >= 1);
  const Mat QL_after = view_matrix(st.basis.blocks[0].QL);
  CHECK(QL_after.allFinite());
  CHECK((QL_after.transpose() * QL_after - Mat::Identity(8, 8)).cwiseAbs().maxCoeff() <= 1e-12);
  // The kept basis is the previous one up to the re-sort of its columns.
  CHECK((QL_after.transpose() * QL_before).cwiseAbs().colwise().maxCoeff().minCoeff() == Approx(1.0));
  for (int t = 0; t < 5; ++t) soap.update(space, w, g, st);
  space.fence();
  for (double x : host_values(w)) REQUIRE(std::isfinite(x));
}

TEST_CASE("the momentum source starts from the singular vectors of the first moment", "[basis]") {
  E space;
  ParamSet<double, E> w({{"W", 2, 8, 6}}), g({{"W", 2, 8, 6}});
  delayopt::test::fill_random(space, w, 3);
  delayopt::test::fill_random(space, g, 4);
  const SOAP opt(
      {.basis = {.source = basis::Source::momentum, .ordering = basis::Ordering::paper}, .schedule = {.lr = 1e-2}});
  auto st = opt.init(space, w);
  const Mat G = block_map(g, 0);
  opt.update(space, w, g, st);
  space.fence();
  CHECK(st.basis.blocks[0].L.size() == 0);  // no factors are kept
  const Mat QL = view_matrix(st.basis.blocks[0].QL), QR = view_matrix(st.basis.blocks[0].QR);
  Mat D = QL.transpose() * G * QR;  // diagonal (singular values) for the SVD basis of (1 - beta1) G
  const double diag = D.diagonal().cwiseAbs().sum();
  D.diagonal().setZero();
  CHECK(D.cwiseAbs().maxCoeff() <= 1e-12 * diag);
  for (int t = 0; t < 25; ++t) opt.update(space, w, g, st);  // power-iteration refreshes
  space.fence();
  CHECK(st.basis.refreshes == 2);
  const Mat Q2 = view_matrix(st.basis.blocks[0].QL);
  CHECK((Q2.transpose() * Q2 - Mat::Identity(8, 8)).cwiseAbs().maxCoeff() <= 1e-12);
}

TEST_CASE("one-sided geometry rotates only the smaller side; rank-1 blocks follow Rank1", "[basis]") {
  E space;
  ParamSet<double, E> p({{"tall", 2, 16, 4}, {"wide", 2, 3, 9}, {"b", 1, 5}});
  const SOAP one({.basis = {.geometry = basis::Geometry::one_sided}});
  const auto st = one.init(space, p);
  CHECK((!st.basis.blocks[0].left && st.basis.blocks[0].right));
  CHECK((st.basis.blocks[1].left && !st.basis.blocks[1].right));
  CHECK((!st.basis.blocks[2].left && !st.basis.blocks[2].right));
  const SOAP full1d({.basis = {.rank1 = basis::Rank1::full}});
  const auto st2 = full1d.init(space, p);
  CHECK(st2.basis.blocks[2].left);
  CHECK(SOAP::state_bytes(st2) == 2 * (64 + 27 + 5) * 8 + 16 + 2 * 8 * (16 * 16 + 4 * 4 + 3 * 3 + 9 * 9 + 5 * 5));
}

TEST_CASE("FullEigen: the full covariance eigenbasis of small blocks, and a clear error above max_size", "[basis]") {
  E space;
  ParamSet<double, E> p({{"b", 1, 5}}), g({{"b", 1, 5}});
  delayopt::test::fill_random(space, p, 8);
  const FullEigenAdam full({.schedule = {.lr = 1e-2}});
  const SOAP kron({.basis = {.rank1 = basis::Rank1::full}, .schedule = {.lr = 1e-2}});
  auto pf = p.clone(space), pk = p.clone(space);
  auto sf = full.init(space, pf);
  auto sk = kron.init(space, pk);
  for (unsigned t = 0; t < 25; ++t) {
    delayopt::test::fill_random(space, g, 400 + t);
    full.update(space, pf, g, sf);
    kron.update(space, pk, g, sk);
  }
  space.fence();
  CHECK(bitwise_equal(host_values(pf), host_values(pk)));  // a vector's full basis is its Kronecker basis

  ParamSet<double, E> big({{"W", 2, 80, 60}});
  std::string msg;
  try {
    (void)full.init(space, big);
  } catch (const shape_mismatch& e) {
    msg = e.what();
  }
  CHECK(msg.find("block 'W' (80x60) has 4800 elements, above max_size = 4096") != std::string::npos);
}

TEST_CASE("basis hyperparameters are validated", "[basis][hyper]") {
  CHECK_THROWS_WITH(SOAP({.basis = {.refresh_every = 0}}), Catch::Contains("refresh_every = 0 is outside [1, inf)"));
  CHECK_THROWS_WITH(SOAP({.basis = {.beta = 1.0}}), Catch::Contains("beta = 1 is outside [0, 1)"));
  CHECK_THROWS_WITH(FullEigenAdam({.basis = {.max_size = 100000}}), Catch::Contains("max_size"));
}

TEST_CASE("SOAP ordering skips the update on the first call, the paper's ordering does not", "[basis]") {
  E space;
  ParamSet<double, E> p(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, p, 9);
  auto g = ParamSet<double, E>::zeros_like(p);
  delayopt::test::fill_random(space, g, 10);
  const auto before = host_values(p);
  const SOAP soap(soap_config(1e-2));
  auto st = soap.init(space, p);
  soap.update(space, p, g, st);
  space.fence();
  CHECK(bitwise_equal(host_values(p), before));
  CHECK(SOAP::applied_steps(st) == 0);
  const SOAP paper({.basis = {.ordering = basis::Ordering::paper}, .schedule = {.lr = 1e-2}});
  auto st2 = paper.init(space, p);
  paper.update(space, p, g, st2);
  space.fence();
  CHECK_FALSE(bitwise_equal(host_values(p), before));
  CHECK(SOAP::applied_steps(st2) == 1);
}
