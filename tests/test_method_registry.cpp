// tools/method_registry.hpp: each name builds the composition it documents (checked bit for bit
// against the optimizer written out by hand), unknown names fail with the list of known ones.
#include "support/catch.hpp"
#include "support/helpers.hpp"

#include <method_registry.hpp>

#include <string>

using namespace delayopt;
using delayopt::test::host_values;

namespace {

using E = Kokkos::DefaultHostExecutionSpace;
using Set = ParamSet<double, E>;

// Five delayed steps through the registry's method and through `opt` written out; both ends.
template <class Opt>
std::pair<std::vector<double>, std::vector<double>> registry_vs_direct(const std::string& name,
                                                                       const tools::MethodOptions& o, const Opt& opt) {
  const E space;
  Set params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 7);
  auto a = params.clone(space), b = params.clone(space), stale = params.clone(space);
  auto method = tools::make_method(name, o, space, a);
  auto state = opt.init(space, b);
  auto g = Set::zeros_like(params);
  for (unsigned t = 0; t < 5; ++t) {
    delayopt::test::fill_random(space, g, 100 + t);
    method.step(space, a, g, {.tau = 2}, &stale);
    opt.update(space, b, g, state, {.tau = 2}, &stale);
  }
  space.fence();
  return {host_values(a), host_values(b)};
}

}  // namespace

TEST_CASE("method registry: names build the documented compositions", "[registry]") {
  const tools::MethodOptions o{.lr = 3e-3, .anneal_steps = 50, .refresh_every = 2, .dcasgd_lambda = 0.5};
  SECTION("adam") {
    const auto [a, b] = registry_vs_direct("adam", o, Adam({.schedule = {.lr = 3e-3}}));
    CHECK(a == b);
  }
  SECTION("pipedream-lr is Adam with the stage discount") {
    using Opt = Optimizer<basis::Identity, moment::Adam, delay::StageLRDiscount>;
    const auto [a, b] =
        registry_vs_direct("pipedream-lr", o, Opt({.delay = {.anneal_steps = 50}, .schedule = {.lr = 3e-3}}));
    CHECK(a == b);
    const auto [c, d] = registry_vs_direct("adam", o, Opt({.delay = {.anneal_steps = 50}, .schedule = {.lr = 3e-3}}));
    CHECK(c != d);  // the discount is active at tau = 2
  }
  SECTION("nesterov is NAdam with beta1 = 0.99") {
    const auto [a, b] = registry_vs_direct("nesterov", o, NAdam({.schedule = {.lr = 3e-3}}));
    CHECK(a == b);
  }
  SECTION("rot-cov-bi+dcasgd: paper ordering, covariance, both sides, DC-ASGD in the basis") {
    using Opt = Optimizer<basis::KroneckerEigen, moment::Adam, delay::DCASGD>;
    typename Opt::Config c;
    c.basis = {.ordering = basis::Ordering::paper, .refresh_every = 2};
    c.moment.eps_mode = moment::Adam::Eps::before_bias_correction;
    c.delay.lambda = 0.5;
    c.schedule.lr = 3e-3;
    const auto [a, b] = registry_vs_direct("rot-cov-bi+dcasgd", o, Opt(c));
    CHECK(a == b);
  }
  SECTION("rot-mom-uni+nesterov: momentum source, one side, NAdam in the basis") {
    typename RotatedNAdam::Config c;
    c.basis = {.source = basis::Source::momentum,
               .geometry = basis::Geometry::one_sided,
               .ordering = basis::Ordering::paper,
               .refresh_every = 2};
    c.schedule.lr = 3e-3;
    const auto [a, b] = registry_vs_direct("rot-mom-uni+nesterov", o, RotatedNAdam(c));
    CHECK(a == b);
  }
  SECTION("soap keeps SOAP's published defaults") {
    auto c = soap_config(3e-3);
    c.basis.refresh_every = 2;
    const auto [a, b] = registry_vs_direct("soap", o, SOAP(c));
    CHECK(a == b);
  }
}

TEST_CASE("method registry: predict() for weight prediction, needs_stale() for DC-ASGD", "[registry]") {
  const E space;
  Set params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 3);
  auto wp = tools::make_method("rot-cov-bi+weight-pred", {}, space, params);
  auto adam = tools::make_method("adam", {}, space, params);
  CHECK(wp.predicts());
  CHECK_FALSE(adam.predicts());
  CHECK_FALSE(wp.needs_stale());
  CHECK(tools::make_method("rot-mom-bi+dcasgd", {}, space, params).needs_stale());
  auto out = Set::zeros_like(params);
  CHECK_NOTHROW(wp.predict(space, params, 3, out));
  CHECK_THROWS_AS(adam.predict(space, params, 3, out), std::logic_error);
  CHECK(wp.state_bytes() > adam.state_bytes());
}

TEST_CASE("method registry: unknown names list the known ones", "[registry]") {
  const E space;
  Set params(delayopt::test::small_shapes());
  for (const char* bad : {"adamm", "adam+nesterov", "rot-cov-bi+foo", "rot-cov-bi+dcasgd+nesterov", ""}) {
    INFO(bad);
    try {
      tools::make_method(bad, {}, space, params);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      CHECK(what.find("rot-mom-uni") != std::string::npos);
      CHECK(what.find("weight-pred") != std::string::npos);
    }
  }
}
