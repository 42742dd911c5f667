// delayopt_demo: how gradient delay slows Adam on a rotated, ill-conditioned quadratic.
//
// f(x) = 1/2 x^T H x with H = Q diag(lambda) Q^T, Q a random rotation and lambda log-spaced over
// [1/kappa, 1]. Each step applies the gradient taken tau steps earlier (delay::None, the
// PipeDream-with-stashing model of the first stage of a tau+1 stage pipeline). For every tau the
// learning rate is tuned on a small log grid; the table reports the best iterations-to-target.
#include <delayopt/delayopt.hpp>

#include <Eigen/Dense>
#include <cli_checks.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <vector>

namespace {

using Space = Kokkos::DefaultHostExecutionSpace;  // the gradient is computed with Eigen on host data

struct Quadratic {
  Eigen::MatrixXd H;
  Eigen::VectorXd x0;

  Quadratic(int dim, double kappa, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal;
    Eigen::MatrixXd A(dim, dim);
    for (int i = 0; i < A.size(); ++i) A.data()[i] = normal(gen);
    const Eigen::MatrixXd Q = Eigen::HouseholderQR<Eigen::MatrixXd>(A).householderQ();
    Eigen::VectorXd lambda(dim);
    for (int i = 0; i < dim; ++i) lambda(i) = std::pow(kappa, -double(i) / std::max(dim - 1, 1));
    H = Q * lambda.asDiagonal() * Q.transpose();
    x0.resize(dim);
    for (int i = 0; i < dim; ++i) x0(i) = normal(gen);
  }
  double loss(const Eigen::Ref<const Eigen::VectorXd>& x) const { return 0.5 * x.dot(H * x); }
};

/// Iterations until f(x)/f(x0) <= target, or nullopt within max_iters (or on divergence).
std::optional<int> iterations_to_target(const Quadratic& q, int tau, double lr, double target, int max_iters) {
  Space space;
  const auto dim = static_cast<std::size_t>(q.x0.size());
  delayopt::ParamSet<double, Space> x({{"x", 1, dim}});
  auto g = delayopt::ParamSet<double, Space>::zeros_like(x);
  Eigen::Map<Eigen::VectorXd> xv(x.flat(0).data(), dim), gv(g.flat(0).data(), dim);
  xv = q.x0;
  const delayopt::Adam opt({.schedule = {.lr = lr}});
  auto state = opt.init(space, x);
  delayopt::sim::DelayedGradients<double, Space> delayed(x, tau);
  const double f0 = q.loss(q.x0);
  for (int it = 1; it <= max_iters; ++it) {
    gv = q.H * xv;
    opt.update(space, x, delayed.push(space, g), state, {.tau = tau});
    space.fence();  // the next gradient reads x on the host
    const double rel = q.loss(xv) / f0;
    if (rel <= target) return it;
    if (!std::isfinite(rel) || rel > 1e6) return std::nullopt;
  }
  return std::nullopt;
}

void run(int dim, double kappa, double target, int max_iters, const std::vector<int>& taus,
         const std::vector<double>& lrs, unsigned seed) {
  const Quadratic q(dim, kappa, seed);
  std::printf("Adam on a rotated quadratic: dim %d, kappa %.0f, target f/f0 <= %.0e, lr tuned over %zu values\n\n", dim,
              kappa, target, lrs.size());
  std::printf("%5s  %10s  %8s  %9s\n", "tau", "iterations", "best lr", "slowdown");
  std::optional<int> base;
  const auto t0 = std::chrono::steady_clock::now();
  for (int tau : taus) {
    std::optional<int> best;
    double best_lr = 0;
    for (double lr : lrs) {
      const auto it = iterations_to_target(q, tau, lr, target, max_iters);
      if (it && (!best || *it < *best)) best = it, best_lr = lr;
    }
    if (tau == taus.front()) base = best;
    if (best) {
      std::printf("%5d  %10d  %8.1e  ", tau, *best, best_lr);
      if (base)
        std::printf("%8.2fx\n", double(*best) / *base);
      else
        std::printf("%9s\n", "-");
    } else {
      std::printf("%5d  %10s  %8s  %9s\n", tau, "> max", "-", "-");
    }
    std::fflush(stdout);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "\n(%.1f s) On one delayed block every first-order method pays O(tau): the stable step size\n"
      "shrinks with the delay. docs/design.md explains the delay model.\n",
      sec);
}

}  // namespace

int main(int argc, char* argv[]) {
  CLI::App app{"delayopt demo: iterations to reach a target loss with Adam under gradient delay tau"};
  int dim = 64, max_iters = 20000;
  double kappa = 100, target = 1e-3;
  unsigned seed = 0;
  std::vector<int> taus{0, 1, 4, 16, 31};
  std::vector<double> lrs;  // quarter-decade grid 1e-4 .. 1e-1
  for (int k = 0; k <= 12; ++k) lrs.push_back(1e-4 * std::pow(10.0, k / 4.0));
  app.add_option("--dim", dim, "problem dimension")->capture_default_str()->check(delayopt::cli::positive);
  app.add_option("--kappa", kappa, "condition number of H")
      ->capture_default_str()
      ->check(delayopt::cli::number_in(1, true, 1e12, true));
  app.add_option("--target", target, "relative loss f/f0 to reach")
      ->capture_default_str()
      ->check(delayopt::cli::number_in(0, false, 1, false));
  app.add_option("--max-iters", max_iters, "give up after this many steps")
      ->capture_default_str()
      ->check(delayopt::cli::positive);
  app.add_option("--taus", taus, "gradient delays to run")
      ->capture_default_str()
      ->delimiter(',')
      ->check(delayopt::cli::non_negative);
  app.add_option("--lr-grid", lrs, "learning rates tried per delay")
      ->capture_default_str()
      ->delimiter(',')
      ->check(delayopt::cli::positive);
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  // Kokkos first: it takes its own --kokkos-* flags out of argv, which CLI11 would reject.
  Kokkos::ScopeGuard guard(argc, argv);
  CLI11_PARSE(app, argc, argv);
  // A delay keeps tau + 1 copies of the weights; one at or past --max-iters never sees a fresh gradient.
  for (int tau : taus)
    if (tau >= max_iters) {
      std::fprintf(stderr, "delayopt_demo: --taus %d must be below --max-iters %d\n", tau, max_iters);
      return 2;
    }
  try {
    run(dim, kappa, target, max_iters, taus, lrs, seed);
  } catch (const std::exception& e) {  // e.g. a Kokkos allocation failure for a large --dim
    std::fprintf(stderr, "delayopt_demo: %s\n", e.what());
    return 1;
  }
}
