// No Kokkos allocation per step (docs/performance.md): after a few warm-up steps (the first call
// and the first refresh may allocate lazily), 40 update() calls allocate no Kokkos memory, counted
// with a Kokkos Tools allocate_data callback. Eigen temporaries of the host eigensolver are not
// Kokkos allocations and are not counted.
#include "support/catch.hpp"
#include "support/helpers.hpp"

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

using namespace delayopt;

namespace {

using E = Kokkos::DefaultHostExecutionSpace;

constexpr int warmup_steps = 8;
constexpr int counted_steps = 40;

std::mutex allocations_mutex;
std::vector<std::string> allocation_labels;  // one entry per Kokkos allocation while counting

void record_allocation(const Kokkos::Tools::SpaceHandle space, const char* label, const void*,
                       const std::uint64_t size) {
  const std::lock_guard<std::mutex> lock(allocations_mutex);
  allocation_labels.push_back(std::string(space.name) + ": " + (label ? label : "?") + " (" + std::to_string(size) +
                              " bytes)");
}

/// Counts Kokkos allocations while alive; puts back whatever allocate_data callback was set before.
class AllocationCounter {
 public:
  AllocationCounter() : previous_(Kokkos::Tools::Experimental::get_callbacks().allocate_data) {
    allocation_labels.clear();
    Kokkos::Tools::Experimental::set_allocate_data_callback(&record_allocation);
  }
  ~AllocationCounter() { Kokkos::Tools::Experimental::set_allocate_data_callback(previous_); }
  AllocationCounter(const AllocationCounter&) = delete;
  AllocationCounter& operator=(const AllocationCounter&) = delete;

  std::vector<std::string> labels() const {
    const std::lock_guard<std::mutex> lock(allocations_mutex);
    return allocation_labels;
  }

 private:
  Kokkos::Tools::allocateDataFunction previous_;
};

/// Layer-like blocks: rotated on both sides (one longer than a host chunk), a rank-1 bias, and a
/// LayoutLeft matrix.
std::vector<BlockShape> shapes() {
  return {{"W1", 2, 24, 16, Layout::right},
          {"W2", 2, 64, 80, Layout::right},
          {"b", 1, 33, 1, Layout::right},
          {"W3", 2, 12, 20, Layout::left}};
}

/// A few gradient sets, filled before counting and used in turn.
template <class T>
std::vector<ParamSet<T, E>> gradients(const E& space, const ParamSet<T, E>& params) {
  std::vector<ParamSet<T, E>> gs;
  for (unsigned k = 0; k < 5; ++k) {
    gs.push_back(ParamSet<T, E>::zeros_like(params));
    delayopt::test::fill_random(space, gs.back(), 100 + k, 0.1);
  }
  return gs;
}

/// Runs `step(t)` warmup_steps times, then counted_steps times under an AllocationCounter; returns
/// the labels of the Kokkos allocations made in the counted steps.
template <class Step>
std::vector<std::string> allocations_per_run(const E& space, Step&& step) {
  int t = 0;
  for (; t < warmup_steps; ++t) step(t);
  space.fence();
  AllocationCounter counter;
  for (; t < warmup_steps + counted_steps; ++t) step(t);
  space.fence();
  return counter.labels();
}

/// The same for a policy that needs stale parameters (DC-ASGD): the weights two steps old, kept in two
/// sets allocated before counting.
template <class Opt, class T, class State, class Grads>
std::vector<std::string> allocations_with_stale(const E& space, const Opt& opt, ParamSet<T, E>& params, State& state,
                                                const Grads& g) {
  std::array<ParamSet<T, E>, 2> stale{params.clone(space), params.clone(space)};
  return allocations_per_run(space, [&](int t) {
    auto& s = stale[static_cast<std::size_t>(t) % 2];
    opt.update(space, params, g(t), state, {.tau = 2}, &s);
    s.assign(space, params);
  });
}

}  // namespace

TEMPLATE_TEST_CASE("update() makes no Kokkos allocation per step after warm-up", "[alloc]", float, double) {
  using T = TestType;
  E space;
  ParamSet<T, E> params(shapes());
  delayopt::test::fill_random(space, params, 7, 0.5);
  const auto grads = gradients<T>(space, params);
  const auto g = [&](int t) -> const ParamSet<T, E>& { return grads[static_cast<std::size_t>(t) % grads.size()]; };
  std::vector<std::string> allocated;

  SECTION("Adam, identity basis, through Optimizer::update") {
    const Adam opt({.schedule = {.lr = 1e-3}, .clip_global_norm = 1.0});
    auto state = opt.init(space, params);
    allocated = allocations_per_run(space, [&](int t) { opt.update(space, params, g(t), state); });
    CHECK(Adam::applied_steps(state) == warmup_steps + counted_steps);
  }
  SECTION("Adam, identity basis, through Stepper::step") {
    Stepper stepper(Adam({.schedule = {.lr = 1e-3}}), space, params);
    allocated = allocations_per_run(space, [&](int t) { stepper.step(g(t)); });
    CHECK(Adam::applied_steps(stepper.state()) == warmup_steps + counted_steps);
  }
  SECTION("NAdam with DC-ASGD (stale parameters two steps old)") {
    using Opt = Optimizer<basis::Identity, moment::NAdam, delay::DCASGD>;
    const Opt opt({.delay = {.lambda = 0.5}, .schedule = {.lr = 1e-3}});
    auto state = opt.init(space, params);
    allocated = allocations_with_stale(space, opt, params, state, g);
    CHECK(Opt::applied_steps(state) == warmup_steps + counted_steps);
  }
  SECTION("NAdam with weight prediction (velocity slot, predicted weights each step)") {
    using Opt = Optimizer<basis::Identity, moment::NAdam, delay::WeightPrediction>;
    const Opt opt({.delay = {.gamma = 0.9}, .schedule = {.lr = 1e-3}});
    auto state = opt.init(space, params);
    auto predicted = ParamSet<T, E>::zeros_like(params);
    allocated = allocations_per_run(space, [&](int t) {
      delay::WeightPrediction::predict(space, params, state.delay[0], 3, predicted);
      opt.update(space, params, g(t), state, {.tau = 3});
    });
    CHECK(Opt::applied_steps(state) == warmup_steps + counted_steps);
  }
  SECTION("SOAP (Kronecker eigenbasis, SOAP ordering), refresh every 3 steps") {
    SOAP::Config c = soap_config(1e-3);
    c.basis.refresh_every = 3;
    const SOAP opt(c);
    auto state = opt.init(space, params);
    allocated = allocations_per_run(space, [&](int t) { opt.update(space, params, g(t), state); });
    CHECK(state.basis.refreshes == (warmup_steps + counted_steps - 1) / 3);  // the first call only initializes
  }
  SECTION("SOAP with the momentum as the basis source, refresh every 3 steps (look-ahead in a scratch set)") {
    SOAP::Config c = soap_config(1e-3);
    c.basis.refresh_every = 3;
    c.basis.source = basis::Source::momentum;
    const SOAP opt(c);
    auto state = opt.init(space, params);
    allocated = allocations_per_run(space, [&](int t) { opt.update(space, params, g(t), state); });
    CHECK(state.basis.refreshes == (warmup_steps + counted_steps - 1) / 3);
  }
  SECTION("FullEigen Adam (small blocks), paper ordering, refresh every 5") {
    using Opt = Optimizer<basis::FullEigen, moment::Adam, delay::None>;
    ParamSet<T, E> small({{"w", 2, 6, 8, Layout::right}, {"b", 1, 10, 1, Layout::right}});
    delayopt::test::fill_random(space, small, 9, 0.5);
    std::vector<ParamSet<T, E>> small_grads;
    for (unsigned k = 0; k < 3; ++k) {
      small_grads.push_back(ParamSet<T, E>::zeros_like(small));
      delayopt::test::fill_random(space, small_grads.back(), 200 + k, 0.1);
    }
    const Opt opt({.basis = {.ordering = basis::Ordering::paper, .refresh_every = 5}, .schedule = {.lr = 1e-3}});
    auto state = opt.init(space, small);
    allocated = allocations_per_run(space, [&](int t) { opt.update(space, small, small_grads[t % 3], state); });
    CHECK(state.basis.refreshes == (warmup_steps + counted_steps) / 5);
  }
  SECTION("NAdam in the Kronecker eigenbasis, paper ordering, refresh every 4, DC-ASGD in the rotated basis") {
    using Opt = Optimizer<basis::KroneckerEigen, moment::NAdam, delay::DCASGD>;
    const Opt opt({.basis = {.ordering = basis::Ordering::paper, .refresh_every = 4},
                   .delay = {.lambda = 0.5, .in_rotated_basis = true},
                   .schedule = {.lr = 1e-3}});
    auto state = opt.init(space, params);
    allocated = allocations_with_stale(space, opt, params, state, g);
    CHECK(state.basis.refreshes == (warmup_steps + counted_steps) / 4);
  }

  for (const auto& a : allocated) UNSCOPED_INFO(a);
  REQUIRE(allocated.size() == std::size_t{0});
}
