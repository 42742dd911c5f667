// The batched kernels of the device refresh (linalg/batched.hpp), run on the host space against
// Eigen's HouseholderQR and std::stable_sort.
#include "support/catch.hpp"

#include <delayopt/linalg/batched.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace {

using E = Kokkos::DefaultHostExecutionSpace;
using ColMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

}  // namespace

TEST_CASE("batched form_q rebuilds Eigen's Householder Q from packed reflectors", "[linalg][batched]") {
  std::mt19937 gen(11);
  std::normal_distribution<double> normal;
  for (int n : {1, 2, 5, 17, 40}) {
    const int batch = 3;
    std::vector<ColMat> a(batch), expected(batch), packed(batch), q(batch, ColMat(n, n));
    std::vector<Eigen::VectorXd> tau(batch);
    for (int b = 0; b < batch; ++b) {
      a[b] = ColMat::NullaryExpr(n, n, [&] { return normal(gen); });
      if (b == 1 && n > 2) a[b].col(1).setZero();          // rank-deficient: a zero reflector (tau = 0)
      if (b == 2 && n > 2) a[b].col(2) = a[b].col(0) * 3;  // dependent columns
      Eigen::HouseholderQR<ColMat> qr(a[b]);
      packed[b] = qr.matrixQR();
      tau[b] = qr.hCoeffs();
      expected[b] = qr.householderQ();
    }
    std::vector<const double*> pa, pt;
    std::vector<double*> pq;
    for (int b = 0; b < batch; ++b)
      pa.push_back(packed[b].data()), pt.push_back(tau[b].data()), pq.push_back(q[b].data());
    delayopt::linalg::batched::form_q(E(), batch, n, pa.data(), pt.data(), pq.data());
    E().fence();
    for (int b = 0; b < batch; ++b) {
      INFO("n = " << n << ", matrix " << b);
      CHECK((q[b] - expected[b]).cwiseAbs().maxCoeff() <= 1e-13);
      CHECK((q[b].transpose() * q[b] - ColMat::Identity(n, n)).cwiseAbs().maxCoeff() <= 1e-13);
      // Q R reproduces A.
      const ColMat R = packed[b].triangularView<Eigen::Upper>();
      CHECK((q[b] * R - a[b]).cwiseAbs().maxCoeff() <= 1e-12 * (1 + a[b].cwiseAbs().maxCoeff()));
    }
  }
}

TEST_CASE("batched argsort_descending orders like std::stable_sort, NaN last", "[linalg][batched]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> keys{
      {3, 1, 2, 5, 4},
      {2, 2, 1, 2, 3},         // ties keep index order
      {nan, 1, -inf, nan, 0},  // NaN after -inf, in index order
      {-1, -1, -1, -1, -1},
  };
  std::mt19937 gen(5);
  std::vector<double> random(5);
  for (auto& x : random) x = std::uniform_real_distribution<double>(-1, 1)(gen);
  keys.push_back(random);
  const int batch = static_cast<int>(keys.size()), n = 5;
  std::vector<const double*> pk;
  for (const auto& k : keys) pk.push_back(k.data());
  std::vector<int> order(batch * n, -1);
  delayopt::linalg::batched::argsort_descending(E(), batch, n, pk.data(), order.data());
  E().fence();
  for (int b = 0; b < batch; ++b) {
    std::vector<int> expected(n);
    std::iota(expected.begin(), expected.end(), 0);
    const auto& k = keys[b];
    const auto nan_last = [&](int i, int j) {
      if (k[i] != k[i] || k[j] != k[j]) return k[j] != k[j] && k[i] == k[i];
      return k[i] > k[j];
    };
    std::stable_sort(expected.begin(), expected.end(), nan_last);
    INFO("keys " << b);
    CHECK(std::vector<int>(order.begin() + b * n, order.begin() + (b + 1) * n) == expected);
  }
  CHECK(std::vector<int>(order.begin() + 2 * n, order.begin() + 3 * n) == std::vector<int>{1, 4, 2, 0, 3});
}
