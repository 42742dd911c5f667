// delayopt_convergence: iterations to a target loss under gradient delay, per method, delay and seed.
//
//   delayopt_convergence --problem quadratic --dim 64 --kappa 100 --tau 0,4,16
//       --methods adam,nesterov,rot-cov-bi,rot-cov-bi+nesterov --seeds 1,2,3 --json out.json
//
// Single-block problems with a delay tau: the gradient applied at step t is taken at the weights of
// step t - tau (weight stashing; before step 0 the weights were w_0). The learning rate is tuned per
// (method, tau, seed) on --lr-grid; each record keeps the best. The MLP pipeline runs in
// examples/async_pipeline (delayopt_pipeline), where the delays come from real asynchronous execution.
#include <delayopt/delayopt.hpp>

#include <CLI/CLI.hpp>
#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

using E = Kokkos::DefaultHostExecutionSpace;
using Set = delayopt::ParamSet<double, E>;
using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Mat random_orthogonal(int n, std::mt19937& gen) {
  std::normal_distribution<double> normal;
  Mat a(n, n);
  for (int i = 0; i < a.size(); ++i) a.data()[i] = normal(gen);
  return Mat(Eigen::HouseholderQR<Mat>(a).householderQ());
}

/// f(W) = 1/2 tr((W - W*)^T A (W - W*) B) (Hessian B (x) A, rotated and ill-conditioned), with
/// gradient noise A^{1/2} Z B^{1/2} * noise. `quadratic` is the cols = 1 case (B = 1).
struct Problem {
  int rows, cols;
  double noise;
  Mat A, B, A_half, B_half, W_star, W0;
  std::mt19937 gen;

  Problem(int r, int c, double kappa, double noise_, unsigned seed) : rows(r), cols(c), noise(noise_), gen(seed) {
    auto spectrum = [&](int n, double k) {
      Eigen::VectorXd d(n);
      for (int i = 0; i < n; ++i) d(i) = std::pow(k, -double(i) / std::max(n - 1, 1));
      return d;
    };
    const Mat U = random_orthogonal(r, gen), V = random_orthogonal(c, gen);
    const Eigen::VectorXd a = spectrum(r, kappa), b = spectrum(c, c > 1 ? std::sqrt(kappa) : 1.0);
    A = U * a.asDiagonal() * U.transpose();
    B = V * b.asDiagonal() * V.transpose();
    A_half = U * a.cwiseSqrt().asDiagonal() * U.transpose();
    B_half = V * b.cwiseSqrt().asDiagonal() * V.transpose();
    std::normal_distribution<double> normal;
    W_star.resize(r, c);
    W0.resize(r, c);
    for (int i = 0; i < r * c; ++i) W_star.data()[i] = normal(gen), W0.data()[i] = normal(gen);
  }
  double loss(const Mat& W) const {
    const Mat D = W - W_star;
    return 0.5 * (D.transpose() * A * D * B).trace();
  }
  Mat gradient(const Mat& W) {
    Mat G = A * (W - W_star) * B;
    if (noise > 0) {
      std::normal_distribution<double> normal;
      Mat Z(rows, cols);
      for (int i = 0; i < Z.size(); ++i) Z.data()[i] = normal(gen);
      G += noise * A_half * Z * B_half;
    }
    return G;
  }
};

/// One optimizer step: params, grads, the weights the gradient was taken at, tau. Also exposes the
/// weight-prediction velocity for methods that have it.
struct Method {
  std::function<void(Set&, const Set&, const Set&, int)> step;
  std::function<void(const Set&, int, Set&)> predict;  // empty unless weight prediction
};

template <class Opt>
Method make(const Opt& opt, const Set& params) {
  auto st = std::make_shared<typename Opt::template State<double, E>>(opt.init(E(), params));
  Method m;
  m.step = [opt, st](Set& p, const Set& g, const Set& stale, int tau) {
    opt.update(E(), p, g, *st, {.tau = tau}, &stale);
  };
  if constexpr (std::is_same_v<typename Opt::delay_type, delayopt::delay::WeightPrediction>)
    m.predict = [st](const Set& p, int tau, Set& out) {
      delayopt::delay::WeightPrediction::predict(E(), p, st->delay[0], tau, out);
    };
  return m;
}

const char* kMethods =
    "adam, pipedream-lr, nesterov (NAdam beta1 0.99), dcasgd, weight-pred, rot-cov-bi, rot-cov-uni, rot-mom-bi, "
    "rot-mom-uni, full-eigen, and <rotation or full-eigen>+<pipedream-lr|nesterov|dcasgd|weight-pred>";

template <class Moment, class Delay, class Basis>
Method compose(const typename Basis::Hyper& basis, double lr, std::int64_t horizon, const Set& params) {
  using Opt = delayopt::Optimizer<Basis, Moment, Delay>;
  typename Opt::Config c;
  c.basis = basis;
  c.schedule.lr = lr;
  if constexpr (std::is_same_v<Delay, delayopt::delay::StageLRDiscount>) c.delay.anneal_steps = horizon;
  if constexpr (std::is_same_v<Moment, delayopt::moment::Adam>)
    if constexpr (!Basis::is_identity) c.moment.eps_mode = delayopt::moment::Adam::Eps::before_bias_correction;
  return make(Opt(c), params);
}

template <class Basis>
Method with_delay(const std::string& mod, const typename Basis::Hyper& basis, double lr, std::int64_t horizon,
                  const Set& params) {
  using namespace delayopt;
  if (mod.empty()) return compose<moment::Adam, delay::None, Basis>(basis, lr, horizon, params);
  if (mod == "pipedream-lr") return compose<moment::Adam, delay::StageLRDiscount, Basis>(basis, lr, horizon, params);
  if (mod == "nesterov") return compose<moment::NAdam, delay::None, Basis>(basis, lr, horizon, params);
  if (mod == "dcasgd") return compose<moment::Adam, delay::DCASGD, Basis>(basis, lr, horizon, params);
  if (mod == "weight-pred") return compose<moment::Adam, delay::WeightPrediction, Basis>(basis, lr, horizon, params);
  throw std::invalid_argument("unknown delay compensation '" + mod + "'");
}

Method make_method(const std::string& name, double lr, std::int64_t horizon, const Set& params) {
  using namespace delayopt;
  const auto plus = name.find('+');
  const std::string base = name.substr(0, plus), mod = plus == std::string::npos ? "" : name.substr(plus + 1);
  const basis::Identity::Hyper id{};
  if (base == "adam" && mod.empty()) return with_delay<basis::Identity>("", id, lr, horizon, params);
  if (mod.empty() && (base == "pipedream-lr" || base == "nesterov" || base == "dcasgd" || base == "weight-pred"))
    return with_delay<basis::Identity>(base, id, lr, horizon, params);
  if (base == "full-eigen")
    return with_delay<basis::FullEigen>(mod, {.ordering = basis::Ordering::paper}, lr, horizon, params);
  basis::KroneckerEigen::Hyper h{.ordering = basis::Ordering::paper};
  if (base == "rot-cov-bi") {
  } else if (base == "rot-cov-uni") {
    h.geometry = basis::Geometry::one_sided;
  } else if (base == "rot-mom-bi") {
    h.source = basis::Source::momentum;
  } else if (base == "rot-mom-uni") {
    h.source = basis::Source::momentum;
    h.geometry = basis::Geometry::one_sided;
  } else {
    throw std::invalid_argument("unknown method '" + name + "' (known: " + kMethods + ")");
  }
  h.rank1 = basis::Rank1::full;  // the quadratic problem is one vector block
  return with_delay<basis::KroneckerEigen>(mod, h, lr, horizon, params);
}

struct Outcome {
  std::optional<int> iters;
  double final_loss;
  double sec_per_step;
};

Outcome run(Problem prob, const std::string& method, double lr, int tau, double target, int max_iters) {
  Set params({{"W", prob.cols > 1 ? 2 : 1, static_cast<std::size_t>(prob.rows), static_cast<std::size_t>(prob.cols)}});
  Eigen::Map<Mat>(params.flat(0).data(), prob.rows, prob.cols) = prob.W0;
  auto grads = Set::zeros_like(params), probe = Set::zeros_like(params);
  Method m = make_method(method, lr, max_iters, params);
  std::vector<Set> ring;  // the last tau + 1 weight versions (stashing)
  for (int k = 0; k <= tau; ++k) ring.push_back(params.clone(E()));
  const double f0 = prob.loss(prob.W0);
  const auto t0 = std::chrono::steady_clock::now();
  int it = 1;
  double rel = 1;
  for (; it <= max_iters; ++it) {
    // Slot k % (tau + 1) holds the latest w_k; step `it` needs w_{it-1-tau} (w_0 before training
    // started), whose slot is it % (tau + 1), and then stores w_it there.
    const Set& stale = ring[it % (tau + 1)];
    const Set* at = &stale;
    if (m.predict) {  // PipeMare: take the gradient at the weights predicted tau steps ahead
      m.predict(stale, tau, probe);
      at = &probe;
    }
    Eigen::Map<Mat>(grads.flat(0).data(), prob.rows, prob.cols) =
        prob.gradient(Eigen::Map<const Mat>(at->flat(0).data(), prob.rows, prob.cols));
    m.step(params, grads, stale, tau);
    E().fence();
    ring[it % (tau + 1)].assign(E(), params);
    rel = prob.loss(Eigen::Map<const Mat>(params.flat(0).data(), prob.rows, prob.cols)) / f0;
    if (rel <= target) break;
    if (!std::isfinite(rel) || rel > 1e6) break;
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int done = std::min(it, max_iters);
  return {rel <= target ? std::optional<int>(it) : std::nullopt, rel, sec / done};
}

}  // namespace

int main(int argc, char* argv[]) {
  CLI::App app{"delayopt convergence study: iterations to a target relative loss under gradient delay"};
  std::string problem = "quadratic", json_file;
  int dim = 64, rows = 16, cols = 8, max_iters = 20000;
  double kappa = 100, noise = 0, target = 1e-3;
  std::vector<int> taus{0, 4, 16}, seeds{1};
  std::vector<std::string> methods{"adam", "pipedream-lr", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov"};
  std::vector<double> lrs;
  for (int k = 0; k <= 12; ++k) lrs.push_back(1e-4 * std::pow(10.0, k / 4.0));  // quarter decades
  app.add_option("--problem", problem, "quadratic or kron-lstsq (the MLP pipeline is delayopt_pipeline)")
      ->check(CLI::IsMember({"quadratic", "kron-lstsq"}))
      ->capture_default_str();
  app.add_option("--dim", dim, "quadratic: dimension")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--rows", rows, "kron-lstsq: rows of W")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--cols", cols, "kron-lstsq: columns of W")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--kappa", kappa, "condition number")->capture_default_str()->check(CLI::Range(1.0, 1e12));
  app.add_option("--noise", noise, "gradient noise scale")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--tau", taus, "gradient delays")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seeds", seeds, "seeds")->delimiter(',')->capture_default_str();
  app.add_option("--methods", methods, kMethods)->delimiter(',')->capture_default_str();
  app.add_option("--target", target, "relative loss to reach")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  app.add_option("--max-iters", max_iters, "give up after this many steps")->capture_default_str();
  app.add_option("--lr-grid", lrs, "learning rates tried per (method, tau, seed)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  app.add_option("--json", json_file, "write {\"records\": [...]} here");
  CLI11_PARSE(app, argc, argv);

  Kokkos::ScopeGuard guard(argc, argv);
  nlohmann::json records = nlohmann::json::array();
  std::printf("%-24s %5s %5s %12s %9s %12s\n", "method", "tau", "seed", "iters", "best lr", "final f/f0");
  for (const auto& method : methods)
    for (int tau : taus)
      for (int seed : seeds) {
        const Problem prob =
            problem == "quadratic" ? Problem(dim, 1, kappa, noise, seed) : Problem(rows, cols, kappa, noise, seed);
        std::optional<Outcome> best;
        double best_lr = 0;
        for (double lr : lrs) {
          Outcome o;
          try {
            o = run(prob, method, lr, tau, target, max_iters);
          } catch (const std::invalid_argument& e) {
            std::fprintf(stderr, "delayopt_convergence: %s\n", e.what());
            return 2;
          }
          const bool better = !best || (o.iters && (!best->iters || *o.iters < *best->iters)) ||
                              (!o.iters && !best->iters && o.final_loss < best->final_loss);
          if (better) best = o, best_lr = lr;
        }
        nlohmann::json r{{"method", method},
                         {"tau", tau},
                         {"seed", seed},
                         {"lr", best_lr},
                         {"final_loss", best->final_loss},
                         {"sec_per_step", best->sec_per_step}};
        r["iters_to_target"] = best->iters ? nlohmann::json(*best->iters) : nlohmann::json(nullptr);
        records.push_back(r);
        std::printf("%-24s %5d %5d %12s %9.1e %12.2e\n", method.c_str(), tau, seed,
                    best->iters ? std::to_string(*best->iters).c_str() : "-", best_lr, best->final_loss);
        std::fflush(stdout);
      }
  if (!json_file.empty()) {
    std::ofstream(json_file) << nlohmann::json{{"problem", problem}, {"records", records}}.dump(1) << "\n";
    std::printf("wrote %s\n", json_file.c_str());
  }
}
