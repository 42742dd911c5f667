// moment::Momentum (SGD with heavy-ball or Nesterov momentum): validation, a hand-computed two-step
// case of every form, the first-step rule after a skipped step, rotation equivariance, and the delay
// policies at tau = 0. torch's trajectories are in test_reference.cpp.
#include "support/catch.hpp"
#include "support/helpers.hpp"
#include "support/spaces.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

using namespace delayopt;
using delayopt::test::bitwise_equal;
using delayopt::test::host_values;

namespace {

using WD = moment::Momentum::WeightDecay;
static_assert(MomentPolicy<moment::Momentum>);

std::string error_of(const moment::Momentum::Hyper& h) {
  try {
    SGD({.moment = h});
  } catch (const delayopt::error& e) {
    return e.what();
  }
  return "";
}

// Two steps of `opt` on one scalar p0 = 1 with gradients g1 then g2: the parameter after each;
// `skipped` receives the state's count of skipped steps.
template <class Opt>
std::pair<double, double> two_steps(const Opt& opt, double g2 = -1.0, double g1 = 2.0,
                                    std::int64_t* skipped = nullptr) {
  using E = Kokkos::Serial;
  const E space;
  ParamSet<double, E> p({{"w", 1, 1}});
  ParamSet<double, E> g = ParamSet<double, E>::zeros_like(p);
  delayopt::test::set_value(space, p, 0, 0, 1.0);
  auto state = opt.init(space, p);
  delayopt::test::set_value(space, g, 0, 0, g1);
  opt.update(space, p, g, state);
  const double p1 = host_values(p)[0];
  delayopt::test::set_value(space, g, 0, 0, g2);
  opt.update(space, p, g, state);
  if (skipped) *skipped = Opt::skipped_steps(state);
  return {p1, host_values(p)[0]};
}

}  // namespace

TEST_CASE("Momentum: hyperparameters are validated, with torch's rule for nesterov", "[momentum][hyper]") {
  CHECK_THAT(error_of({.momentum = 1.0}), Catch::Contains("momentum = 1 is outside [0, 1)"));
  CHECK_THAT(error_of({.dampening = 1.5}), Catch::Contains("dampening = 1.5 is outside [0, 1]"));
  CHECK_THAT(error_of({.weight_decay = -1}), Catch::Contains("weight_decay"));
  CHECK_THAT(
      error_of({.momentum = 0.9, .dampening = 0.1, .nesterov = true}),
      Catch::Contains("nesterov = true needs momentum > 0 and dampening = 0") && Catch::Contains("dampening = 0.1"));
  CHECK_THAT(error_of({.momentum = 0.0, .nesterov = true}), Catch::Contains("momentum = 0,"));
  CHECK(error_of({.momentum = 0.0, .dampening = 1.0}).empty());
  CHECK(error_of({.nesterov = true}).empty());
}

TEST_CASE("Momentum: every form on a hand-computed two-step case", "[momentum]") {
  // p0 = 1, g = 2 then -1, lr 0.1. torch starts the buffer at the first gradient, undamped.
  SECTION("heavy ball, dampening 0.25, coupled L2 0.1") {
    // g1' = 2.1, b = 2.1, p1 = 0.79; g2' = -1 + 0.079 = -0.921, b = 1.05 - 0.69075 = 0.35925.
    const auto [p1, p2] =
        two_steps(SGD({.moment = {.momentum = 0.5, .dampening = 0.25, .weight_decay = 0.1}, .schedule = {.lr = 0.1}}));
    CHECK(p1 == Approx(0.79).epsilon(1e-15));
    CHECK(p2 == Approx(0.754075).epsilon(1e-15));
  }
  SECTION("Nesterov, coupled L2 0.1") {
    // u1 = 2.1 + 0.5 * 2.1 = 3.15, p1 = 0.685; g2' = -0.9315, b = 0.1185, u2 = -0.87225.
    const auto [p1, p2] =
        two_steps(SGD({.moment = {.momentum = 0.5, .nesterov = true, .weight_decay = 0.1}, .schedule = {.lr = 0.1}}));
    CHECK(p1 == Approx(0.685).epsilon(1e-15));
    CHECK(p2 == Approx(0.772225).epsilon(1e-15));
  }
  SECTION("heavy ball, decoupled weight decay 0.1 (p shrinks by 1 - lr wd before the step)") {
    // p1 = 0.99 - 0.2 = 0.79; b = 0.5 * 2 - 1 = 0, p2 = 0.79 * 0.99.
    const auto [p1, p2] =
        two_steps(SGD({.moment = {.momentum = 0.5, .weight_decay = 0.1, .weight_decay_mode = WD::decoupled},
                       .schedule = {.lr = 0.1}}));
    CHECK(p1 == Approx(0.79).epsilon(1e-15));
    CHECK(p2 == Approx(0.7821).epsilon(1e-15));
  }
  SECTION("momentum 0 is plain SGD, whatever the dampening") {
    const auto [p1, p2] = two_steps(SGD({.moment = {.momentum = 0.0, .dampening = 0.5}, .schedule = {.lr = 0.1}}));
    CHECK(p1 == Approx(0.8).epsilon(1e-15));
    CHECK(p2 == Approx(0.9).epsilon(1e-15));
  }
  SECTION("a skipped first step (non-finite gradient) leaves the buffer to start at the next gradient") {
    // Step 1 skipped; step 2 is the first applied: b = 2, not 0.75 * 2 (dampened).
    const SGD opt({.moment = {.momentum = 0.5, .dampening = 0.25}, .schedule = {.lr = 0.1}});
    const auto [p1, p2] = two_steps(opt, 2.0);
    CHECK(p1 == Approx(0.8).epsilon(1e-15));  // unskipped reference for the same first step
    std::int64_t skipped = 0;
    const auto [q1, q2] = two_steps(opt, 2.0, std::nan(""), &skipped);
    CHECK(skipped == 1);
    CHECK(q1 == 1.0);
    CHECK(q2 == Approx(0.8).epsilon(1e-15));
    CHECK(p2 == Approx(0.8 - 0.1 * (0.5 * 2 + 0.75 * 2)).epsilon(1e-15));  // the unskipped second step
  }
}

TEMPLATE_LIST_TEST_CASE("Momentum: SGD is rotation-equivariant, so every eigenbasis takes the coordinate steps",
                        "[momentum][basis]", delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  const moment::Momentum::Hyper mh{.momentum = 0.9, .nesterov = true, .weight_decay = 1e-2};
  const schedule::Constant lr{.lr = 1e-2};
  ParamSet<T, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 11);
  // 20 calls with refreshes every 2: the buffer (a linear slot) must follow every change of basis.
  // `first`: the first gradient the run applies; SOAP's ordering spends call 1 on the basis alone.
  auto run = [&](const auto& opt, unsigned first = 0) {
    auto p = params.clone(space);
    auto state = opt.init(space, p);
    auto g = ParamSet<T, E>::zeros_like(p);
    for (unsigned t = first; t < 20; ++t) {
      delayopt::test::fill_random(space, g, 900 + t);
      opt.update(space, p, g, state);
    }
    space.fence();
    return host_values(p);
  };
  const SGD sgd({.moment = mh, .schedule = lr});
  const auto coord = run(sgd), coord_from_2 = run(sgd, 1);
  const double tol = std::is_same_v<T, double> ? 1e-12 : 2e-5;
  double worst = 0;  // over every rotated run below, printed at the end
  auto max_diff = [&](const std::vector<T>& x, const std::vector<T>& ref) {
    double m = 0;
    for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(double(x[i]) - double(ref[i])));
    worst = std::max(worst, m);
    return m;
  };
  using Kron = Optimizer<basis::KroneckerEigen, moment::Momentum, delay::None>;
  for (const auto ordering : {basis::Ordering::paper, basis::Ordering::soap})
    for (const auto source : {basis::Source::covariance, basis::Source::momentum})
      for (const auto geometry : {basis::Geometry::two_sided, basis::Geometry::one_sided}) {
        CAPTURE(int(ordering), int(source), int(geometry));
        const Kron opt({.basis = {.source = source,
                                  .geometry = geometry,
                                  .ordering = ordering,
                                  .refresh_every = 2,
                                  .rank1 = basis::Rank1::full},
                        .moment = mh,
                        .schedule = lr});
        CHECK(max_diff(run(opt), ordering == basis::Ordering::paper ? coord : coord_from_2) <= tol);
      }
  using Full = Optimizer<basis::FullEigen, moment::Momentum, delay::None>;
  CHECK(
      max_diff(
          run(Full({.basis = {.ordering = basis::Ordering::paper, .refresh_every = 2}, .moment = mh, .schedule = lr})),
          coord) <= tol);
  CHECK(max_diff(run(Full({.basis = {.refresh_every = 2}, .moment = mh, .schedule = lr})), coord_from_2) <= tol);
  std::printf("Momentum in an eigenbasis vs SGD  %-7s %-6s  max abs deviation %.2e (tol %.0e)\n", E::name(),
              std::is_same_v<T, double> ? "double" : "float", worst, tol);
  // And the moment that is not equivariant moves off the coordinate steps (the check can fail).
  using KronAdam = Optimizer<basis::KroneckerEigen, moment::Adam, delay::None>;
  const auto adam_coord = run(Adam({.schedule = lr}));
  const auto adam_rot =
      run(KronAdam({.basis = {.ordering = basis::Ordering::paper, .refresh_every = 2}, .schedule = lr}));
  CHECK(max_diff(adam_rot, adam_coord) > 100 * tol);
}

TEMPLATE_LIST_TEST_CASE("Momentum: tau = 0 reproduces plain SGD under the staleness-driven delay policies",
                        "[momentum][delay]", delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  const moment::Momentum::Hyper mh{.momentum = 0.9, .dampening = 0.1};
  const schedule::Constant lr{.lr = 1e-2};
  ParamSet<T, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 5);
  auto run = [&](const auto& opt) {
    auto p = params.clone(space);
    auto state = opt.init(space, p);
    auto g = ParamSet<T, E>::zeros_like(p);
    for (unsigned t = 0; t < 10; ++t) {
      delayopt::test::fill_random(space, g, 700 + t);
      auto stale = p.clone(space);  // tau = 0: the current weights
      opt.update(space, p, g, state, {.step = t, .tau = 0}, &stale);
    }
    space.fence();
    return host_values(p);
  };
  const auto plain = run(SGD({.moment = mh, .schedule = lr}));
  CHECK(bitwise_equal(
      run(Optimizer<basis::Identity, moment::Momentum, delay::StageLRDiscount>({.moment = mh, .schedule = lr})),
      plain));
  CHECK(bitwise_equal(run(Optimizer<basis::Identity, moment::Momentum, delay::DCASGD>({.moment = mh, .schedule = lr})),
                      plain));
  CHECK(bitwise_equal(
      run(Optimizer<basis::Identity, moment::Momentum, delay::WeightPrediction>({.moment = mh, .schedule = lr})),
      plain));
  // delay::Nesterov's weight-space look-ahead acts at every tau: it composes, and moves off plain SGD.
  const auto nag = run(Optimizer<basis::Identity, moment::Momentum, delay::Nesterov>({.moment = mh, .schedule = lr}));
  CHECK_FALSE(bitwise_equal(nag, plain));
  CHECK(std::all_of(nag.begin(), nag.end(), [](T x) { return std::isfinite(x); }));
}
