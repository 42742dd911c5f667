// Delay-compensation policies: tau = 0 is the undelayed optimizer, and each formula on a
// hand-computed two-step case.
#include "support/catch.hpp"
#include "support/helpers.hpp"
#include "support/spaces.hpp"

#include <cmath>

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
    auto [a, b] = harness_vs_direct<AdamD<delay::WeightPrediction>, T>(AdamD<delay::WeightPrediction>({.schedule = lr}),
                                                                         space);
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
