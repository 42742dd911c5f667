// The delay-injection harness.
#include "support/catch.hpp"
#include "support/helpers.hpp"
#include "support/spaces.hpp"

#include <limits>

using namespace delayopt;
using delayopt::test::bitwise_equal;
using delayopt::test::host_values;

TEMPLATE_LIST_TEST_CASE("tau = 0 reproduces the undelayed optimizer bit for bit", "[sim]", delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  ParamSet<T, E> params(delayopt::test::small_shapes());
  delayopt::test::fill_random(space, params, 11);
  const Adam opt({.schedule = {.lr = 1e-2}});
  auto p_plain = params.clone(space), p_delayed = params.clone(space);
  auto s_plain = opt.init(space, p_plain), s_delayed = opt.init(space, p_delayed);
  sim::DelayedGradients<T, E> harness(params, 0);
  auto grads = ParamSet<T, E>::zeros_like(params);
  for (unsigned step = 0; step < 20; ++step) {
    delayopt::test::fill_random(space, grads, 100 + step);
    opt.update(space, p_plain, grads, s_plain);
    opt.update(space, p_delayed, harness.push(space, grads), s_delayed, {.tau = 0});
  }
  space.fence();
  CHECK(bitwise_equal(host_values(p_plain), host_values(p_delayed)));
}

TEMPLATE_LIST_TEST_CASE("block b receives g_{max(0, t - tau_b)}", "[sim]", delayopt::test::all_cases) {
  using T = typename TestType::value;
  using E = typename TestType::space;
  E space;
  ParamSet<T, E> grads(delayopt::test::small_shapes());
  const std::vector<int> taus{3, 1, 0};
  sim::DelayedGradients<T, E> harness(grads, taus);
  std::vector<std::vector<T>> pushed;
  for (unsigned t = 0; t < 9; ++t) {
    delayopt::test::fill_random(space, grads, 200 + t);
    pushed.push_back(host_values(grads));
    const auto& out = harness.push(space, grads);
    space.fence();
    std::size_t off = 0;
    for (std::size_t b = 0; b < 3; ++b) {
      const auto got = host_values(out);
      const std::size_t src = t >= static_cast<unsigned>(taus[b]) ? t - taus[b] : 0;
      const std::size_t n = grads.shape(b).size();
      for (std::size_t i = 0; i < n; ++i) REQUIRE(got[off + i] == pushed[src][off + i]);
      off += n;
    }
  }
  CHECK(harness.pushes() == 9);
}

TEST_CASE("harness rejects bad delays and mismatched gradients", "[sim]") {
  using E = Kokkos::DefaultHostExecutionSpace;
  ParamSet<double, E> grads(delayopt::test::small_shapes());
  CHECK_THROWS_AS((sim::DelayedGradients<double, E>(grads, std::vector<int>{1, 2})), shape_mismatch);
  CHECK_THROWS_AS((sim::DelayedGradients<double, E>(grads, std::vector<int>{1, -2, 0})), invalid_input);
  sim::DelayedGradients<double, E> h(grads, 2);
  ParamSet<double, E> other({{"W1", 2, 8, 6}});
  CHECK_THROWS_AS(h.push(E(), other), shape_mismatch);
}

TEST_CASE("a delay whose ring would not fit in memory is a clear error, thrown before anything is allocated", "[sim]") {
  using E = Kokkos::DefaultHostExecutionSpace;
  // The harness reads only shapes: an unmanaged view claiming 2^30 elements stands for a large block
  // without allocating one (its data is never read). tau = INT_MAX asks for a ring of 2^31 x 2^30
  // doubles, 2^64 bytes: before the check, (tau + 1) overflowed int.
  double storage = 0;
  Kokkos::View<double*, E::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>> big(&storage, std::size_t{1} << 30);
  ParamSet<double, E> like;
  like.add("big", big);
  const int huge = std::numeric_limits<int>::max();
  CHECK_THROWS_AS((sim::DelayedGradients<double, E>(like, huge)), invalid_input);
  CHECK_THROWS_WITH((sim::DelayedGradients<double, E>(like, huge)),
                    Catch::Contains("delay 2147483647 for block 'big' (1073741824) needs a ring of 2147483648 x "
                                    "1073741824 values, more than memory can address"));
}
