// Delay-compensation policies: tau = 0 is the undelayed optimizer, and each formula on a
// hand-computed two-step case.
#include "support/catch.hpp"
#include "support/helpers.hpp"
#include "support/spaces.hpp"

#include <cmath>
#include <numbers>
#include <numeric>
#include <string>

using namespace delayopt;
using delayopt::test::bitwise_equal;
using delayopt::test::host_values;

namespace {

template <class D>
using AdamD = Optimizer<basis::Identity, moment::Adam, D>;

// Runs opt through the harness at tau = 0 and directly; returns both parameter trajectories' ends.
template <class Opt, class T, class E>
std::pair<std::vector<T>, std::vector<T>> harness_vs_direct(const Opt& opt, const E& space) {
  ParamSet<T, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 31);
  auto a = params.clone(space), b = params.clone(space);
  auto sa = opt.init(space, a), sb = opt.init(space, b);
  auto g = ParamSet<T, E>::zeros_like(params);
  sim::DelayedGradients<T, E> harness(params, 0);
  for (unsigned t = 0; t < 15; ++t) {
    delayopt::test::fill_random(space, g, 500 + t);
    auto stale_a = a.clone(space), stale_b = b.clone(space);  // tau = 0: the current weights
    opt.update(space, a, g, sa, {.tau = 0}, &stale_a);
    opt.update(space, b, harness.push(space, g), sb, {.tau = 0}, &stale_b);
  }
  space.fence();
  return {host_values(a), host_values(b)};
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("tau = 0 reproduces the undelayed optimizer for every delay policy", "[delay]",
                        delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  const schedule::Constant lr{.lr = 1e-2};
  {
    auto [a, b] = harness_vs_direct<AdamD<delay::Nesterov>, T>(AdamD<delay::Nesterov>({.schedule = lr}), space);
    CHECK(bitwise_equal(a, b));
  }
  {
    auto [a, b] =
        harness_vs_direct<AdamD<delay::WeightPrediction>, T>(AdamD<delay::WeightPrediction>({.schedule = lr}), space);
    CHECK(bitwise_equal(a, b));
  }
  // Policies that only act on staleness: at tau = 0 they are plain Adam, bit for bit.
  const Adam adam({.schedule = lr});
  const auto [plain, plain2] = harness_vs_direct<Adam, T>(adam, space);
  const auto [lr_a, lr_b] =
      harness_vs_direct<AdamD<delay::StageLRDiscount>, T>(AdamD<delay::StageLRDiscount>({.schedule = lr}), space);
  const auto [dc_a, dc_b] = harness_vs_direct<AdamD<delay::DCASGD>, T>(AdamD<delay::DCASGD>({.schedule = lr}), space);
  CHECK(bitwise_equal(plain, plain2));
  CHECK(bitwise_equal(lr_a, plain));
  CHECK(bitwise_equal(lr_b, plain));
  CHECK(bitwise_equal(dc_a, plain));
  CHECK(bitwise_equal(dc_b, plain));
}

TEST_CASE("StageLRDiscount: lr / tau^(1 - min(t / T_c, 1))", "[delay]") {
  const delay::StageLRDiscount::Hyper h{.anneal_steps = 10};
  CHECK(delay::StageLRDiscount::lr_factor(h, {.tau = 4}, 0) == 0.25);
  CHECK(delay::StageLRDiscount::lr_factor(h, {.tau = 4}, 5) == 0.5);
  CHECK(delay::StageLRDiscount::lr_factor(h, {.tau = 4}, 10) == 1.0);
  CHECK(delay::StageLRDiscount::lr_factor(h, {.tau = 4}, 50) == 1.0);
  CHECK(delay::StageLRDiscount::lr_factor(h, {.tau = 0}, 0) == 1.0);
  // Through the optimizer: a tau = 4 step at step 0 equals plain Adam with lr / 4.
  using E = Kokkos::DefaultHostExecutionSpace;
  E space;
  ParamSet<double, E> p({{"w", 1, 3}}), g({{"w", 1, 3}});
  delayopt::test::fill_random(space, g, 1);
  auto q = p.clone(space);
  const AdamD<delay::StageLRDiscount> opt({.delay = h, .schedule = {.lr = 0.4}});
  const Adam ref({.schedule = {.lr = 0.1}});
  auto s1 = opt.init(space, p);
  auto s2 = ref.init(space, q);
  opt.update(space, p, g, s1, {.tau = 4});
  ref.update(space, q, g, s2);
  space.fence();
  CHECK(bitwise_equal(host_values(p), host_values(q)));
}

TEST_CASE("DCASGD, Nesterov and weight prediction on a hand-computed two-step case", "[delay]") {
  using E = Kokkos::DefaultHostExecutionSpace;
  E space;
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  // Adam's increment for gradient g at step t from moments (m, v), updated in place.
  auto adam_delta = [&](double g, double& m, double& v, int t) {
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    return -(lr / (1 - std::pow(b1, t))) * m / (std::sqrt(v) / std::sqrt(1 - std::pow(b2, t)) + eps);
  };
  const double p0 = 0.5, g1 = 0.3, g2 = -0.2, stale1 = 0.4, stale2 = 0.45;

  SECTION("DCASGD: g + lambda g^2 (w_now - w_stale)") {
    const double lambda = 2.0;
    ParamSet<double, E> p({{"w", 1, 1}}), g({{"w", 1, 1}}), st({{"w", 1, 1}});
    const AdamD<delay::DCASGD> opt({.delay = {.lambda = lambda}, .schedule = {.lr = lr}});
    auto s = opt.init(space, p);
    p.flat(0)(0) = p0;
    g.flat(0)(0) = g1;
    st.flat(0)(0) = stale1;
    opt.update(space, p, g, s, {.tau = 2}, &st);
    g.flat(0)(0) = g2;
    st.flat(0)(0) = stale2;
    opt.update(space, p, g, s, {.tau = 2}, &st);
    space.fence();
    double m = 0, v = 0, x = p0;
    x += adam_delta(g1 + lambda * g1 * g1 * (x - stale1), m, v, 1);
    x += adam_delta(g2 + lambda * g2 * g2 * (x - stale2), m, v, 2);
    CHECK(std::abs(p.flat(0)(0) - x) <= 1e-15);
    // Without stale parameters the policy refuses to run.
    CHECK_THROWS_WITH(opt.update(space, p, g, s), Catch::Contains("delay::DCASGD needs the parameters"));
  }
  SECTION("Nesterov: w + gamma (w - w_prev) + (1 - gamma) Delta") {
    const double gamma = 0.6;
    ParamSet<double, E> p({{"w", 1, 1}}), g({{"w", 1, 1}});
    const AdamD<delay::Nesterov> opt({.delay = {.gamma = gamma}, .schedule = {.lr = lr}});
    auto s = opt.init(space, p);
    p.flat(0)(0) = p0;
    g.flat(0)(0) = g1;
    opt.update(space, p, g, s);
    g.flat(0)(0) = g2;
    opt.update(space, p, g, s);
    space.fence();
    double m = 0, v = 0;
    const double x1 = p0 + (1 - gamma) * adam_delta(g1, m, v, 1);  // no previous step yet
    const double x2 = x1 + gamma * (x1 - p0) + (1 - gamma) * adam_delta(g2, m, v, 2);
    CHECK(std::abs(p.flat(0)(0) - x2) <= 1e-15);
    // Per-stage momentum: gamma_i = gamma + tau (gamma_max - gamma) / stages.
    const auto c = delay::Nesterov::coeffs<double>({.gamma = 0.9, .stages = 8, .gamma_max = 0.99}, {.tau = 4});
    CHECK(std::abs(c.gamma - 0.945) < 1e-15);
  }
  SECTION("WeightPrediction: velocity EMA and w + tau u") {
    const double gamma = 0.5;
    ParamSet<double, E> p({{"w", 1, 1}}), g({{"w", 1, 1}}), pred({{"w", 1, 1}});
    const AdamD<delay::WeightPrediction> opt({.delay = {.gamma = gamma}, .schedule = {.lr = lr}});
    auto s = opt.init(space, p);
    p.flat(0)(0) = p0;
    g.flat(0)(0) = g1;
    opt.update(space, p, g, s);
    g.flat(0)(0) = g2;
    opt.update(space, p, g, s);
    delay::WeightPrediction::predict(space, p, s.delay[0], 3, pred);
    space.fence();
    double m = 0, v = 0;
    const double d1 = adam_delta(g1, m, v, 1), d2 = adam_delta(g2, m, v, 2);
    const double u = gamma * ((1 - gamma) * d1) + (1 - gamma) * d2;
    CHECK(std::abs(s.delay[0].flat(0)(0) - u) <= 1e-15);
    CHECK(std::abs(pred.flat(0)(0) - (p0 + d1 + d2 + 3 * u)) <= 1e-14);
  }
}

TEST_CASE("Nesterov per-stage momentum: a delay of `stages` or more and gamma_max < gamma are rejected", "[delay]") {
  using E = Kokkos::DefaultHostExecutionSpace;
  using Opt = AdamD<delay::Nesterov>;
  // gamma rises with the delay up to gamma_max, so gamma_max < gamma is a misconfiguration; without
  // per-stage momentum gamma_max is unused and any gamma in [0, 1) stays valid.
  CHECK_THROWS_AS(Opt({.delay = {.gamma = 0.9, .stages = 4, .gamma_max = 0.5}}), invalid_hyperparameter);
  CHECK_THROWS_WITH(Opt({.delay = {.gamma = 0.9, .stages = 4, .gamma_max = 0.5}}),
                    Catch::Contains("delay::Nesterov: gamma_max = 0.5 is outside [0.9, 1)"));
  CHECK_NOTHROW(Opt({.delay = {.gamma = 0.995}}));
  // Delays 0 .. stages - 1 keep gamma_i in [gamma, gamma_max).
  const delay::Nesterov::Hyper h{.gamma = 0.9, .stages = 4, .gamma_max = 0.99};
  CHECK(delay::Nesterov::coeffs<double>(h, {.tau = 0}).gamma == 0.9);
  CHECK(delay::Nesterov::coeffs<double>(h, {.tau = 3}).gamma < 0.99);
  // tau = 50 would give gamma_i = 2.025 and a negative (1 - gamma_i): an ascent step. Refused before
  // anything changes, as is tau = stages.
  E space;
  ParamSet<double, E> p({{"w", 1, 3}}), g({{"w", 1, 3}});
  delayopt::test::fill_random(space, p, 5);
  delayopt::test::fill_random(space, g, 6);
  const Opt opt({.delay = h, .schedule = {.lr = 0.1}});
  auto s = opt.init(space, p);
  const auto before = host_values(p);
  CHECK_THROWS_AS(opt.update(space, p, g, s, {.tau = 50}), invalid_hyperparameter);
  CHECK_THROWS_WITH(opt.update(space, p, g, s, {.tau = 50}),
                    Catch::Contains("delay::Nesterov: tau = 50 is outside [0, 4)") && Catch::Contains("stages = 4"));
  CHECK_THROWS_AS(opt.update(space, p, g, s, {.tau = 4}), invalid_hyperparameter);
  CHECK_THROWS_AS(delay::Nesterov::coeffs<double>(h, {.tau = 4}), invalid_hyperparameter);
  space.fence();
  CHECK(bitwise_equal(host_values(p), before));
  CHECK(s.calls == 0);
  CHECK_NOTHROW(opt.update(space, p, g, s, {.tau = 3}));
}

TEST_CASE("WeightPrediction::predict rejects a negative delay, as StepContext and the harness do", "[delay]") {
  using E = Kokkos::DefaultHostExecutionSpace;
  E space;
  ParamSet<double, E> p({{"w", 1, 3}});
  auto u = ParamSet<double, E>::zeros_like(p), out = ParamSet<double, E>::zeros_like(p);
  CHECK_THROWS_AS(delay::WeightPrediction::predict(space, p, u, -1, out), invalid_input);
  CHECK_THROWS_WITH(delay::WeightPrediction::predict(space, p, u, -3, out),
                    Catch::Contains("delay::WeightPrediction::predict: negative delay tau = -3"));
  CHECK_NOTHROW(delay::WeightPrediction::predict(space, p, u, 0, out));
  space.fence();
}

TEST_CASE("DC-ASGD in the rotated basis differs from the coordinate-basis correction and stays finite", "[delay]") {
  using E = Kokkos::DefaultHostExecutionSpace;
  using Opt = Optimizer<basis::KroneckerEigen, moment::Adam, delay::DCASGD>;
  E space;
  ParamSet<double, E> p(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, p, 41);
  auto g = ParamSet<double, E>::zeros_like(p);
  const Opt rot({.basis = {.ordering = basis::Ordering::paper}, .delay = {.lambda = 1.0}, .schedule = {.lr = 1e-2}});
  const Opt coord({.basis = {.ordering = basis::Ordering::paper},
                   .delay = {.lambda = 1.0, .in_rotated_basis = false},
                   .schedule = {.lr = 1e-2}});
  auto pr = p.clone(space), pc = p.clone(space);
  auto sr = rot.init(space, pr);
  auto sc = coord.init(space, pc);
  for (unsigned t = 0; t < 12; ++t) {
    delayopt::test::fill_random(space, g, 600 + t);
    auto stale_r = pr.clone(space), stale_c = pc.clone(space);
    delayopt::test::fill_random(space, stale_r, 700 + t, 0.1);
    delayopt::test::fill_random(space, stale_c, 700 + t, 0.1);
    rot.update(space, pr, g, sr, {.tau = 3}, &stale_r);
    coord.update(space, pc, g, sc, {.tau = 3}, &stale_c);
  }
  space.fence();
  const auto a = host_values(pr), b = host_values(pc);
  CHECK_FALSE(bitwise_equal(a, b));
  for (double x : a) REQUIRE(std::isfinite(x));
}

TEST_CASE("misalignment probe: 1 for a diagonal Hessian, 1 + |a-b| |sin 2t| / (a+b) for a rotated 2x2", "[probe]") {
  // Diagonal: Hutchinson's trace is exact and every row's Cauchy median estimates |h_ii|.
  const std::size_t n = 50;
  probe::Vector d(n);
  for (std::size_t i = 0; i < n; ++i) d[i] = std::pow(10.0, -2.0 * i / (n - 1));
  const probe::Hvp diag = [&](const probe::Vector& v, probe::Vector& out) {
    out.resize(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = d[i] * v[i];
  };
  const auto m = probe::misalignment(n, diag, 4000, 1);
  CHECK(m.ratio == Approx(1.0).epsilon(0.02));

  // Rotated 2x2: H = R diag(3, 1) R^T with R a rotation by pi/4: ratio 1 + 2 * 1 / 4 = 1.5.
  const double c = std::cos(std::numbers::pi / 4), s = std::sin(std::numbers::pi / 4);
  const double h11 = 3 * c * c + s * s, h22 = 3 * s * s + c * c, h12 = 2 * c * s;
  const probe::Hvp rot = [&](const probe::Vector& v, probe::Vector& out) {
    out = {h11 * v[0] + h12 * v[1], h12 * v[0] + h22 * v[1]};
  };
  const auto r = probe::misalignment(2, rot, 20000, 2);
  CHECK(r.ratio == Approx(1.5).epsilon(0.04));
  // In its eigenbasis the same Hessian is diagonal again: the probe after rotation.
  const probe::Vector Q{c, -s, s, c};  // columns: eigenvectors of H
  const auto after = probe::misalignment(2, probe::rotated(rot, Q, 2), 20000, 3);
  CHECK(after.ratio == Approx(1.0).epsilon(0.02));
  // Finite differences of a gradient give the same Hessian-vector products.
  const auto grad = [&](const probe::Vector& w, probe::Vector& g) { rot(w, g); };
  const auto fd = probe::misalignment(2, probe::hvp_from_gradients(grad, {0.3, -0.2}), 20000, 2);
  CHECK(fd.ratio == Approx(r.ratio).epsilon(1e-6));
}

TEST_CASE("misalignment probe: an HVP or gradient of the wrong length is a shape_mismatch", "[probe]") {
  const std::size_t n = 4;
  for (const std::size_t len : {std::size_t{0}, n - 1, n + 1}) {
    CAPTURE(len);
    const probe::Hvp bad = [&](const probe::Vector&, probe::Vector& out) { out.assign(len, 1.0); };
    CHECK_THROWS_AS(probe::misalignment(n, bad, 8), shape_mismatch);
    CHECK_THROWS_WITH(probe::misalignment(n, bad, 8), Catch::Contains("probe::misalignment: the HVP's output has " +
                                                                      std::to_string(len) + " values, expected 4"));
    // rotated() reads the inner HVP's output too.
    const probe::Vector I{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    probe::Vector out;
    CHECK_THROWS_WITH(
        probe::rotated(bad, I, n)(probe::Vector(n, 1.0), out),
        Catch::Contains("probe::rotated: the HVP's output has " + std::to_string(len) + " values, expected 4"));
    // hvp_from_gradients reads the gradient's output.
    const auto grad = [&](const probe::Vector&, probe::Vector& g) { g.assign(len, 1.0); };
    CHECK_THROWS_WITH(
        probe::hvp_from_gradients(grad, probe::Vector(n, 0.5))(probe::Vector(n, 1.0), out),
        Catch::Contains("probe::hvp_from_gradients: the gradient has " + std::to_string(len) + " values, expected 4"));
  }
  // A direction of the wrong length is refused before it is read.
  const probe::Hvp id = [&](const probe::Vector& v, probe::Vector& out) { out = v; };
  const auto grad = [&](const probe::Vector& w, probe::Vector& g) { g = w; };
  probe::Vector out;
  CHECK_THROWS_AS(probe::rotated(id, probe::Vector(n * n, 0.0), n)(probe::Vector(n - 1, 1.0), out), shape_mismatch);
  CHECK_THROWS_WITH(probe::hvp_from_gradients(grad, probe::Vector(n, 0.5))(probe::Vector(n - 1, 1.0), out),
                    Catch::Contains("probe::hvp_from_gradients: the direction has 3 values, expected 4"));
}

TEST_CASE("stage-aware refresh: the split spends exactly the budget, and a basis spends its share", "[refresh]") {
  using schedule::RefreshSplit;
  for (int P : {1, 2, 3, 8, 16, 32})
    for (std::int64_t total : {0, 1, 7, 100, 333})
      for (auto split : {RefreshSplit::uniform, RefreshSplit::proportional, RefreshSplit::inverse}) {
        const auto n = schedule::split_refresh_budget(P, total, split);
        REQUIRE(std::accumulate(n.begin(), n.end(), std::int64_t{0}) == total);
      }
  // Proportional to tau_i + 1 = P - i: the stalest stage refreshes most.
  CHECK(schedule::split_refresh_budget(4, 100, RefreshSplit::proportional) ==
        std::vector<std::int64_t>{40, 30, 20, 10});
  CHECK(schedule::split_refresh_budget(4, 100, RefreshSplit::inverse) == std::vector<std::int64_t>{10, 20, 30, 40});
  CHECK(schedule::split_refresh_budget(3, 10, RefreshSplit::uniform) == std::vector<std::int64_t>{4, 3, 3});
  CHECK_THROWS_AS(schedule::split_refresh_budget(0, 10, RefreshSplit::uniform), invalid_input);

  // A stage given 7 refreshes per 40-step window refreshes exactly 7 times in each of 3 windows.
  using E = Kokkos::DefaultHostExecutionSpace;
  E space;
  ParamSet<double, E> p({{"W", 2, 6, 4}}), g({{"W", 2, 6, 4}});
  delayopt::test::fill_random(space, p, 3);
  // Refreshes over 120 steps (3 windows) of `opt` from p, gradients drawn from `seed` on.
  const auto refreshes = [&](const auto& opt, unsigned seed) {
    auto w = p.clone(space);
    auto st = opt.init(space, w);
    for (unsigned t = 0; t < 120; ++t) {
      delayopt::test::fill_random(space, g, seed + t);
      opt.update(space, w, g, st);
    }
    space.fence();
    return st.basis.refreshes;
  };
  using FullAdam = Optimizer<basis::FullEigen, moment::Adam, delay::None>;
  CHECK(refreshes(SOAP({.basis = {.ordering = basis::Ordering::paper, .refresh_window = 40, .refreshes_per_window = 7},
                        .schedule = {.lr = 1e-3}}),
                  800) == 21);
  // The full eigenbasis takes the same schedule.
  CHECK(refreshes(
            FullAdam({.basis = {.ordering = basis::Ordering::paper, .refresh_window = 40, .refreshes_per_window = 7},
                      .schedule = {.lr = 1e-3}}),
            900) == 21);
  CHECK_THROWS_WITH(FullAdam({.basis = {.refresh_window = 5, .refreshes_per_window = 6}}),
                    Catch::Contains("refreshes_per_window = 6 is outside [0, 5]"));
  CHECK_THROWS_WITH(SOAP({.basis = {.refresh_window = 10, .refreshes_per_window = 11}}),
                    Catch::Contains("refreshes_per_window = 11 is outside [0, 10]"));
}
