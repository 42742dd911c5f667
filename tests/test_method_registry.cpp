// tools/method_registry.hpp: each name builds the composition it documents (checked bit for bit
// against the optimizer written out by hand), unknown names fail with the list of known ones.
#include "support/catch.hpp"
#include "support/helpers.hpp"

#include <method_registry.hpp>

#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

using namespace delayopt;
using delayopt::test::host_values;

namespace {

using E = Kokkos::DefaultHostExecutionSpace;
using Set = ParamSet<double, E>;

// Five delayed steps through the registry's method and through `opt` written out; both ends, and for
// weight prediction also both predictions two steps ahead.
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
  if constexpr (std::is_same_v<typename Opt::delay_type, delay::WeightPrediction>) {
    auto pa = Set::zeros_like(params), pb = Set::zeros_like(params);
    method.predict(space, a, 2, pa);
    delay::WeightPrediction::predict(space, b, state.delay[0], 2, pb);
    space.fence();
    auto va = host_values(a), vb = host_values(b), wa = host_values(pa), wb = host_values(pb);
    va.insert(va.end(), wa.begin(), wa.end());
    vb.insert(vb.end(), wb.begin(), wb.end());
    return {va, vb};
  }
  space.fence();
  return {host_values(a), host_values(b)};
}

// The registry's rotated bases: the paper's ordering, refreshed every 2 steps in these tests.
basis::KroneckerEigen::Hyper paper_basis() { return {.ordering = basis::Ordering::paper, .refresh_every = 2}; }

// The registry's rotated Adam with delay policy Delay at the tests' rate: the paper's basis, eps
// added before bias correction.
template <class Delay>
typename Optimizer<basis::KroneckerEigen, moment::Adam, Delay>::Config rotated_adam_config() {
  typename Optimizer<basis::KroneckerEigen, moment::Adam, Delay>::Config c;
  c.basis = paper_basis();
  c.moment.eps_mode = moment::Adam::Eps::before_bias_correction;
  c.schedule.lr = 3e-3;
  return c;
}

// The registry's rotated NAdam with delay policy Delay at the tests' rate, in the paper's basis.
template <class Delay>
typename Optimizer<basis::KroneckerEigen, moment::NAdam, Delay>::Config rotated_nadam_config() {
  typename Optimizer<basis::KroneckerEigen, moment::NAdam, Delay>::Config c;
  c.basis = paper_basis();
  c.schedule.lr = 3e-3;
  return c;
}

}  // namespace

TEST_CASE("method registry: names build the documented compositions", "[registry]") {
  const tools::MethodOptions o{
      .lr = 3e-3, .anneal_steps = 50, .refresh_every = 2, .dcasgd_lambda = 0.5, .wp_gamma = 0.5};
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
  SECTION("the moments' own options reach them: NAdam's beta1 and psi, Adam's beta1, both moments' beta2") {
    const tools::MethodOptions m{
        .lr = 3e-3, .nadam_beta1 = 0.95, .nadam_momentum_decay = 0.05, .adam_beta1 = 0.8, .beta2 = 0.99};
    const auto nadam =
        NAdam({.moment = {.beta1 = 0.95, .beta2 = 0.99, .momentum_decay = 0.05}, .schedule = {.lr = 3e-3}});
    const auto [a, b] = registry_vs_direct("nesterov", m, nadam);
    CHECK(a == b);
    const auto [c, d] = registry_vs_direct("nesterov", o, nadam);
    CHECK(c != d);  // and the defaults differ from them
    const auto adam = Adam({.moment = {.beta1 = 0.8, .beta2 = 0.99}, .schedule = {.lr = 3e-3}});
    const auto [e, f] = registry_vs_direct("adam", m, adam);
    CHECK(e == f);
    const auto [g, h] = registry_vs_direct("adam", o, adam);
    CHECK(g != h);
  }
  SECTION("sgd is heavy-ball momentum 0.9; sgd+<delay policy> adds the policy; sgd has no rotated form") {
    const auto [a, b] = registry_vs_direct("sgd", o, SGD({.schedule = {.lr = 3e-3}}));
    CHECK(a == b);
    const auto [c, d] = registry_vs_direct("sgd", o, Adam({.schedule = {.lr = 3e-3}}));
    CHECK(c != d);
    using Opt = Optimizer<basis::Identity, moment::Momentum, delay::DCASGD>;
    const auto [e, f] = registry_vs_direct("sgd+dcasgd", o, Opt({.delay = {.lambda = 0.5}, .schedule = {.lr = 3e-3}}));
    CHECK(e == f);
    Set w({{"w", 2, 2, 2}});
    CHECK_THROWS_WITH(tools::make_method("sgd+nesterov", o, E(), w), Catch::Contains("unknown method 'sgd+nesterov'"));
  }
  SECTION("clip is the optimizer's global-norm clipping, in the coordinates and in the rotated basis") {
    const tools::MethodOptions m{.lr = 3e-3, .refresh_every = 2, .clip = 0.1};  // below every gradient's norm
    const auto adam = Adam({.schedule = {.lr = 3e-3}, .clip_global_norm = 0.1});
    const auto [a, b] = registry_vs_direct("adam", m, adam);
    CHECK(a == b);
    const auto [c, d] = registry_vs_direct("adam", o, adam);
    CHECK(c != d);  // the clip binds
    using Opt = Optimizer<basis::KroneckerEigen, moment::Adam, delay::None>;
    auto rc = rotated_adam_config<delay::None>();
    rc.clip_global_norm = 0.1;
    const auto [e, f] = registry_vs_direct("rot-cov-bi", m, Opt(rc));
    CHECK(e == f);
    const auto [g, h] = registry_vs_direct("rot-cov-bi", {.lr = 3e-3, .refresh_every = 2}, Opt(rc));
    CHECK(g != h);
  }
  SECTION("rot-cov-bi+dcasgd: paper ordering, covariance, both sides, DC-ASGD in the basis") {
    using Opt = Optimizer<basis::KroneckerEigen, moment::Adam, delay::DCASGD>;
    auto c = rotated_adam_config<delay::DCASGD>();
    c.delay.lambda = 0.5;
    const auto [a, b] = registry_vs_direct("rot-cov-bi+dcasgd", o, Opt(c));
    CHECK(a == b);
  }
  SECTION("rot-cov-bi+weight-pred: the velocity EMA takes wp_gamma") {
    using Opt = Optimizer<basis::KroneckerEigen, moment::Adam, delay::WeightPrediction>;
    auto c = rotated_adam_config<delay::WeightPrediction>();
    c.delay.gamma = 0.5;
    const auto [a, b] = registry_vs_direct("rot-cov-bi+weight-pred", o, Opt(c));
    CHECK(a == b);
    // The default gamma (0.9) leaves the update alone but predicts other weights.
    const auto [d, e] = registry_vs_direct("rot-cov-bi+weight-pred", {.lr = 3e-3, .refresh_every = 2}, Opt(c));
    CHECK(d != e);
  }
  SECTION("nag, rot-cov-bi+nag, rot-cov-bi+nesterov+nag: delay::Nesterov with nag_gamma") {
    const tools::MethodOptions m{.lr = 3e-3, .refresh_every = 2, .nag_gamma = 0.5};
    using Coord = Optimizer<basis::Identity, moment::Adam, delay::Nesterov>;
    const auto coord = Coord({.delay = {.gamma = 0.5}, .schedule = {.lr = 3e-3}});
    const auto [a, b] = registry_vs_direct("nag", m, coord);
    CHECK(a == b);
    const auto [c, d] = registry_vs_direct("nag", o, coord);
    CHECK(c != d);  // the default gamma (0.9) differs
    using Rot = Optimizer<basis::KroneckerEigen, moment::Adam, delay::Nesterov>;
    auto rc = rotated_adam_config<delay::Nesterov>();
    rc.delay.gamma = 0.5;
    const auto [e, f] = registry_vs_direct("rot-cov-bi+nag", m, Rot(rc));
    CHECK(e == f);
    using RotNAdam = Optimizer<basis::KroneckerEigen, moment::NAdam, delay::Nesterov>;
    auto nc = rotated_nadam_config<delay::Nesterov>();
    nc.delay.gamma = 0.5;
    const auto [g, h] = registry_vs_direct("rot-cov-bi+nesterov+nag", m, RotNAdam(nc));
    CHECK(g == h);
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
  SECTION("rot-cov-bi+nesterov+dcasgd: NAdam and DC-ASGD in the basis") {
    using Opt = Optimizer<basis::KroneckerEigen, moment::NAdam, delay::DCASGD>;
    auto c = rotated_nadam_config<delay::DCASGD>();
    c.delay.lambda = 0.5;
    const auto [a, b] = registry_vs_direct("rot-cov-bi+nesterov+dcasgd", o, Opt(c));
    CHECK(a == b);
    const auto [d, e] = registry_vs_direct("rot-cov-bi+nesterov", o, Opt(c));
    CHECK(d != e);  // the correction is active (stale weights differ from the current ones)
  }
  SECTION("nesterov+pipedream-lr: NAdam with the stage discount, coordinate basis") {
    using Opt = Optimizer<basis::Identity, moment::NAdam, delay::StageLRDiscount>;
    const auto [a, b] =
        registry_vs_direct("nesterov+pipedream-lr", o, Opt({.delay = {.anneal_steps = 50}, .schedule = {.lr = 3e-3}}));
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
  for (const char* bad : {"adamm", "adam+nesterov", "rot-cov-bi+foo", "rot-cov-bi+dcasgd+nesterov", "nesterov+nesterov",
                          "rot-cov-bi+nesterov+nesterov", "rot-cov-bi+nesterov+", "dcasgd+weight-pred", "nag+dcasgd",
                          "", "adam+", "rot-cov-bi+", "nesterov+", "sgd+", "full-eigen+", "+"}) {
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

// reads() is what the tools use to reject an option that no named method acts on, so it is checked
// against behaviour: a knob changes a method's steps (or predictions) exactly when reads() says the
// method reads it.
TEST_CASE("method registry: reads() names exactly the options that change a method", "[registry]") {
  const E space;
  Set initial(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, initial, 11);
  const auto run = [&](const std::string& name, const tools::MethodOptions& o) {
    auto p = initial.clone(space), stale = initial.clone(space), g = Set::zeros_like(initial);
    auto method = tools::make_method(name, o, space, p);
    // 8 steps: SOAP's ordering refreshes after its step, so a refresh at step 4 shows from step 5 on.
    for (unsigned t = 0; t < 8; ++t) {
      delayopt::test::fill_random(space, g, 200 + t);
      method.step(space, p, g, {.tau = 2}, &stale);
    }
    auto out = host_values(p);
    if (method.predicts()) {
      auto ahead = Set::zeros_like(initial);
      method.predict(space, p, 2, ahead);
      space.fence();
      const auto v = host_values(ahead);
      out.insert(out.end(), v.begin(), v.end());
    }
    return std::pair{out, method.reads()};
  };
  using K = tools::Knob;
  using O = tools::MethodOptions;
  const std::vector<std::tuple<const char*, K, void (*)(O&)>> knobs{
      {"anneal_steps", K::anneal_steps, [](O& o) { o.anneal_steps = 2; }},
      {"refresh_every", K::refresh, [](O& o) { o.refresh_every = 1; }},
      {"basis_beta", K::basis_beta, [](O& o) { o.basis_beta = 0.5; }},
      {"refreshes_per_window", K::refresh,
       [](O& o) {
         o.refresh_window = 4;
         o.refreshes_per_window = 1;
       }},
      {"nadam_beta1", K::nadam, [](O& o) { o.nadam_beta1 = 0.5; }},
      {"nadam_momentum_decay", K::nadam, [](O& o) { o.nadam_momentum_decay = 0.5; }},
      {"adam_beta1", K::adam_beta1, [](O& o) { o.adam_beta1 = 0.5; }},
      {"beta2", K::beta2, [](O& o) { o.beta2 = 0.5; }},
      {"dcasgd_lambda", K::dcasgd_lambda, [](O& o) { o.dcasgd_lambda = 50; }},
      {"wp_gamma", K::wp_gamma, [](O& o) { o.wp_gamma = 0.1; }},
      {"nag_gamma", K::nag_gamma, [](O& o) { o.nag_gamma = 0.3; }}};
  int read = 0, unread = 0;
  for (const char* name : {"adam", "pipedream-lr", "nesterov", "dcasgd", "weight-pred", "nag", "sgd", "sgd+dcasgd",
                           "rot-cov-bi", "rot-mom-uni", "full-eigen", "soap", "rot-cov-bi+nesterov+weight-pred",
                           "nesterov+pipedream-lr", "rot-cov-uni+nag"}) {
    const O base{.lr = 3e-3};
    const auto [reference, reads] = run(name, base);
    for (const auto& [field, knob, change] : knobs) {
      INFO(name << ", " << field);
      O o = base;
      change(o);
      const bool changed = run(name, o).first != reference;
      CHECK(changed == reads.has(knob));
      ++(changed ? read : unread);
    }
  }
  // Both outcomes occur, so neither half of the check is vacuous.
  CHECK(read > 10);
  CHECK(unread > 10);
}
