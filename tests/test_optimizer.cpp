// Optimizer<Identity, Adam, None>: validation, bad input, non-finite policies, clipping, schedules.
#include "support/catch.hpp"
#include "support/helpers.hpp"
#include "support/spaces.hpp"

#include <cmath>
#include <limits>

using namespace delayopt;
using delayopt::test::bitwise_equal;
using delayopt::test::host_values;
using delayopt::test::state_values;

namespace {

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const delayopt::error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

// Optimizer::init and ParamSet assign Views into default-constructed ones. Kokkos' mdspan-based View
// (develop from 2025, 4.7, 5.x) compiled by g++ 12.2 - 12.5 leaves a default-constructed View's
// tracker uninitialized unless Kokkos carries kokkos/kokkos#8223 (and #9262 for 12.5), and this
// assignment then segfaults (kokkos/kokkos#8187). Seen with a develop snapshot of June 2025; this
// case puts the cause in its name so the crash of every other test is not a mystery.
TEST_CASE("Kokkos: assigning to a default-constructed View works (segfaults: g++ 12 + Kokkos without kokkos#8223)",
          "[kokkos]") {
  Kokkos::View<double*, Kokkos::HostSpace> v;
  v = Kokkos::View<double*, Kokkos::HostSpace>("v", 3);
  CHECK(v.extent(0) == 3);
  CHECK(v.use_count() == 1);
}

TEST_CASE("hyperparameters are validated on construction and errors name the field and range", "[hyper]") {
  using WD = moment::Adam::WeightDecay;
  CHECK(contains(error_of([] { Adam({.moment = {.beta1 = 1.0}}); }), "beta1 = 1 is outside [0, 1)"));
  CHECK(contains(error_of([] { Adam({.moment = {.beta2 = -0.1}}); }), "beta2"));
  CHECK(contains(error_of([] { Adam({.moment = {.eps = 0.0}}); }), "eps = 0 is outside (0, inf)"));
  CHECK(contains(error_of([] { Adam({.moment = {.eps = NAN}}); }), "eps"));
  CHECK(contains(error_of([] { Adam({.moment = {.weight_decay = -1, .weight_decay_mode = WD::decoupled}}); }),
                 "weight_decay"));
  CHECK(contains(error_of([] { Adam({.schedule = {.lr = -1e-3}}); }), "schedule::Constant: lr = -0.001"));
  CHECK(contains(error_of([] { Adam({.clip_global_norm = -1}); }), "clip_global_norm"));
  CHECK(contains(
      error_of([] { AdamWith<schedule::WarmupCosine>({.schedule = {.warmup_steps = 10, .total_steps = 10}}); }),
      "total_steps"));
  CHECK(error_of([] { Adam({.moment = {.beta1 = 0.0, .beta2 = 0.0}, .schedule = {.lr = 0.0}}); }).empty());
}

TEST_CASE("learning-rate schedules", "[schedule]") {
  const schedule::WarmupCosine s{.peak_lr = 1.0, .warmup_steps = 4, .total_steps = 14, .final_lr = 0.1};
  CHECK(s(0) == 0.25);
  CHECK(s(3) == 1.0);
  CHECK(s(4) == 1.0);
  CHECK(std::abs(s(9) - 0.55) < 1e-15);  // halfway through the cosine
  CHECK(s(14) == Approx(0.1));
  CHECK(s(1000) == Approx(0.1));
  CHECK(schedule::Constant{.lr = 0.3}(12345) == 0.3);
}

TEMPLATE_LIST_TEST_CASE("shape mismatches throw, name the block, and change nothing", "[errors]",
                        delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  ParamSet<T, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 1);
  const Adam opt({.schedule = {.lr = 1e-2}});
  auto state = opt.init(space, params);
  auto grads = ParamSet<T, E>::zeros_like(params);
  delayopt::test::fill_random(space, grads, 2);
  opt.update(space, params, grads, state);  // non-zero state
  space.fence();
  const auto p0 = host_values(params);
  const auto s0 = state_values(state);

  ParamSet<T, E> missing({{"W1", 2, 8, 6}, {"W2", 2, 16, 4}});
  CHECK(contains(error_of([&] { opt.update(space, params, missing, state); }),
                 "block 'b' (5) of params is missing from grads"));
  ParamSet<T, E> wrong_extent({{"W1", 2, 8, 6}, {"W2", 2, 4, 16}, {"b", 1, 5}});
  CHECK(contains(error_of([&] { opt.update(space, params, wrong_extent, state); }),
                 "block 'W2' (16x4) of params does not match 'W2' (4x16) of grads"));
  ParamSet<T, E> wrong_name({{"W1", 2, 8, 6}, {"b", 1, 5}, {"W2", 2, 16, 4}});
  CHECK(contains(error_of([&] { opt.update(space, params, wrong_name, state); }), "block 1 of grads is 'b'"));
  ParamSet<T, E> extra({{"W1", 2, 8, 6}, {"W2", 2, 16, 4}, {"b", 1, 5}, {"c", 1, 3}});
  CHECK(contains(error_of([&] { opt.update(space, params, extra, state); }), "extra block 'c'"));
  CHECK(contains(error_of([&] { opt.update(space, params, grads, state, {.lr_scale = -1}); }), "lr_scale"));
  space.fence();
  CHECK(bitwise_equal(host_values(params), p0));
  CHECK(bitwise_equal(state_values(state), s0));
  CHECK(state.calls == 1);
}

TEMPLATE_LIST_TEST_CASE("non-finite gradients: skip_step skips and counts, throw_error throws, nothing changes",
                        "[errors][nonfinite]", delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  ParamSet<T, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 3);
  auto grads = ParamSet<T, E>::zeros_like(params);
  delayopt::test::fill_random(space, grads, 4);
  auto bad = grads.clone(space);
  const T poison = GENERATE(std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity());
  delayopt::test::set_value(space, bad, 1, 7, poison);

  // Reference: the same run without the bad step.
  const Adam skip_opt({.schedule = {.lr = 1e-2}});
  auto ref_params = params.clone(space);
  auto ref_state = skip_opt.init(space, ref_params);
  skip_opt.update(space, ref_params, grads, ref_state);
  skip_opt.update(space, ref_params, grads, ref_state);

  SECTION("skip_step") {
    auto state = skip_opt.init(space, params);
    skip_opt.update(space, params, grads, state);
    space.fence();
    const auto p1 = host_values(params);
    const auto s1 = state_values(state);
    skip_opt.update(space, params, bad, state);
    space.fence();
    CHECK(bitwise_equal(host_values(params), p1));
    CHECK(bitwise_equal(state_values(state), s1));
    CHECK(Adam::skipped_steps(state) == 1);
    CHECK(Adam::applied_steps(state) == 1);
    skip_opt.update(space, params, grads, state);  // bias correction continues at t = 2
    space.fence();
    CHECK(bitwise_equal(host_values(params), host_values(ref_params)));
    CHECK(bitwise_equal(state_values(state), state_values(ref_state)));
  }
  SECTION("throw_error") {
    const Adam opt({.schedule = {.lr = 1e-2}, .nonfinite = NonFinitePolicy::throw_error});
    auto state = opt.init(space, params);
    opt.update(space, params, grads, state);
    space.fence();
    const auto p1 = host_values(params);
    const auto s1 = state_values(state);
    std::string msg;
    try {
      opt.update(space, params, bad, state);
    } catch (const nonfinite_gradient& e) {
      msg = e.what();
    }
    CHECK(contains(msg, "block 'W2' (16x4) has a non-finite value at element 7"));
    CHECK(bitwise_equal(host_values(params), p1));
    CHECK(bitwise_equal(state_values(state), s1));
    opt.update(space, params, grads, state);
    space.fence();
    CHECK(bitwise_equal(host_values(params), host_values(ref_params)));
  }
}

TEMPLATE_LIST_TEST_CASE("global-norm clipping equals scaling the gradient by max_norm / (norm + 1e-6)", "[clip]",
                        delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  ParamSet<T, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 5);
  auto grads = ParamSet<T, E>::zeros_like(params);
  delayopt::test::fill_random(space, grads, 6, 3.0);
  const auto g = host_values(grads);
  double n2 = 0;
  for (T x : g) n2 += double(x) * double(x);
  const double coef = 0.5 / (std::sqrt(n2) + 1e-6);
  REQUIRE(coef < 1.0);
  auto scaled = grads.clone(space);
  {
    for (std::size_t b = 0; b < scaled.num_blocks(); ++b) {
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), scaled.flat(b));
      for (std::size_t i = 0; i < h.extent(0); ++i) h(i) = h(i) * static_cast<T>(coef);
      Kokkos::deep_copy(space, scaled.flat(b), h);
    }
  }
  const Adam clipped({.schedule = {.lr = 1e-2}, .clip_global_norm = 0.5});
  const Adam plain({.schedule = {.lr = 1e-2}});
  auto p_clip = params.clone(space), p_plain = params.clone(space);
  auto s_clip = clipped.init(space, p_clip);
  auto s_plain = plain.init(space, p_plain);
  for (int i = 0; i < 3; ++i) {
    clipped.update(space, p_clip, grads, s_clip);
    plain.update(space, p_plain, scaled, s_plain);
  }
  space.fence();
  // The kernel's reduction order differs from the loop above, so coef may differ in its last bit.
  const auto a = host_values(p_clip), b = host_values(p_plain);
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(std::abs(a[i] - b[i]) <= 16 * std::numeric_limits<T>::epsilon());

  // Below the threshold clipping is a no-op, bit for bit.
  const Adam loose({.schedule = {.lr = 1e-2}, .clip_global_norm = 1e6});
  auto p_loose = params.clone(space), p_ref = params.clone(space);
  auto s_loose = loose.init(space, p_loose);
  auto s_ref = plain.init(space, p_ref);
  loose.update(space, p_loose, grads, s_loose);
  plain.update(space, p_ref, grads, s_ref);
  space.fence();
  CHECK(bitwise_equal(host_values(p_loose), host_values(p_ref)));
}

TEMPLATE_LIST_TEST_CASE("one launch over many blocks equals one block holding the same elements", "[blocks]",
                        delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  std::vector<BlockShape> many;
  std::size_t total = 0;
  for (int b = 0; b < 37; ++b) {  // odd sizes: chunks straddle nothing, padding is never touched
    const std::size_t n = 1 + 997 * b;
    many.push_back({"blk" + std::to_string(b), 1, n});
    total += n;
  }
  ParamSet<T, E> p_many(many), g_many(many);
  ParamSet<T, E> p_one({{"all", 1, total}}), g_one({{"all", 1, total}});
  delayopt::test::fill_random(space, p_one, 7);
  delayopt::test::fill_random(space, g_one, 8);
  {
    auto ph = host_values(p_one), gh = host_values(g_one);
    std::size_t off = 0;
    for (std::size_t b = 0; b < many.size(); ++b) {
      auto hp = Kokkos::create_mirror_view(p_many.flat(b));
      auto hg = Kokkos::create_mirror_view(g_many.flat(b));
      for (std::size_t i = 0; i < hp.extent(0); ++i, ++off) {
        hp(i) = ph[off];
        hg(i) = gh[off];
      }
      Kokkos::deep_copy(space, p_many.flat(b), hp);
      Kokkos::deep_copy(space, g_many.flat(b), hg);
    }
  }
  const Adam opt({.moment = {.weight_decay = 0.1, .weight_decay_mode = moment::Adam::WeightDecay::decoupled},
                  .schedule = {.lr = 1e-3}});
  auto s_many = opt.init(space, p_many);
  auto s_one = opt.init(space, p_one);
  for (int i = 0; i < 3; ++i) {
    opt.update(space, p_many, g_many, s_many);
    opt.update(space, p_one, g_one, s_one);
  }
  space.fence();
  CHECK(bitwise_equal(host_values(p_many), host_values(p_one)));
  CHECK(Adam::state_bytes(s_one) == 2 * total * sizeof(T) + 16);
}

TEMPLATE_LIST_TEST_CASE("Stepper, clone and the schedule step", "[stepper]", delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  ParamSet<T, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 9);
  using Opt = AdamWith<schedule::WarmupCosine>;
  const Opt opt({.schedule = {.peak_lr = 1e-2, .warmup_steps = 2, .total_steps = 10}});

  Stepper stepper(opt, space, params.clone(space));
  auto grads = stepper.make_grads();
  delayopt::test::fill_random(space, grads, 10);

  auto p = params.clone(space);
  auto st = opt.init(space, p);
  for (int i = 0; i < 4; ++i) {
    stepper.step(grads);
    opt.update(space, p, grads, st);
  }
  space.fence();
  CHECK(bitwise_equal(host_values(stepper.params()), host_values(p)));

  // A clone evolves independently; an explicit ctx.step replaces the call count for the schedule.
  auto st2 = Opt::clone(space, st);
  auto p2 = p.clone(space);
  opt.update(space, p, grads, st, {.step = 4});
  opt.update(space, p2, grads, st2);  // calls == 4 as well
  space.fence();
  CHECK(bitwise_equal(host_values(p), host_values(p2)));
  opt.update(space, p2, grads, st2, {.step = 0});  // different lr than the default step 5
  opt.update(space, p, grads, st);
  space.fence();
  CHECK_FALSE(bitwise_equal(host_values(p), host_values(p2)));
  CHECK(Opt::applied_steps(st) == 6);
}

TEST_CASE("ParamSet accepts user views, rejects duplicates and non-contiguous views, shapes() is a reference",
          "[param_set]") {
  using E = Kokkos::DefaultHostExecutionSpace;
  Kokkos::View<double**, Kokkos::LayoutLeft, E::memory_space> w("w", 4, 3);
  Kokkos::View<double*, E::memory_space> b("b", 4);
  ParamSet<double, E> set;
  set.add("w", w);
  set.add("b", b);
  CHECK(set.num_blocks() == 2);
  CHECK(set.shape(0).layout == Layout::left);
  CHECK(set.flat("w").data() == w.data());
  // shapes() refers to the set's own shapes: `const auto& s = set.shapes()[i]` must not dangle.
  CHECK(&set.shapes()[1] == &set.shape(1));
  CHECK(set.shapes()[1].name == "b");
  CHECK(contains(error_of([&] { set.add("b", b); }), "duplicate block name 'b'"));
  CHECK(set.shapes().size() == 2);  // the rejected add changed nothing
  auto col = Kokkos::subview(w, Kokkos::ALL(), 1);
  Kokkos::View<double*, Kokkos::LayoutStride, E::memory_space> strided = Kokkos::subview(w, 1, Kokkos::ALL());
  CHECK(contains(error_of([&] { set.add("row", strided); }), "not contiguous"));
  CHECK(col.span_is_contiguous());
  CHECK(contains(error_of([&] { (void)set.matrix(0); }), "not a LayoutRight rank-2 block"));
  CHECK(contains(error_of([&] { (void)set.index("nope"); }), "no block named 'nope'"));
}

TEST_CASE("ParamSet built from shapes checks them as add() does: unique names, rank 1 or 2, rank-1 cols 1",
          "[param_set]") {
  using PS = ParamSet<double, Kokkos::DefaultHostExecutionSpace>;
  CHECK_THROWS_AS(PS({{"w", 2, 3, 2}, {"w", 1, 4}}), shape_mismatch);
  CHECK(contains(error_of([] {
                   (void)PS({{"w", 2, 3, 2}, {"b", 1, 4}, {"w", 1, 4}});
                 }),
                 "delayopt::ParamSet: duplicate block name 'w'"));
  CHECK(contains(error_of([] { (void)PS({{"t", 3, 2, 2}}); }), "block 't' has rank 3 (expected 1 or 2)"));
  CHECK(contains(error_of([] { (void)PS({{"s", 0, 2}}); }), "block 's' has rank 0 (expected 1 or 2)"));
  CHECK(contains(error_of([] { (void)PS({{"b", 1, 4, 2}}); }), "rank-1 block 'b' has cols = 2 (expected 1)"));
  CHECK(contains(error_of([] { (void)PS({{"b", 1, 4, 1, Layout::left}}); }), "rank-1 block 'b' is LayoutLeft"));
  const PS ok({{"W", 2, 3, 2, Layout::left}, {"b", 1, 4}});
  CHECK(ok.num_blocks() == 2);
  CHECK(ok.total_size() == 10);
}
