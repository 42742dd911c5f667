// Checkpoints (io/checkpoint.hpp): a restored state continues bit for bit like the one saved, and
// every kind of bad file is refused with a message saying what is wrong.
#include "support/catch.hpp"
#include "support/helpers.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <random>
#include <sstream>
#include <string>

#include <unistd.h>

using namespace delayopt;
using delayopt::test::bitwise_equal;
using delayopt::test::host_values;

namespace {

using E = Kokkos::DefaultHostExecutionSpace;

std::vector<BlockShape> shapes() {
  return {{"W1", 2, 8, 6, Layout::right}, {"W2", 2, 5, 12, Layout::left}, {"b", 1, 7, 1, Layout::right}};
}

/// Steps `opt` from `state` over gradients seeded by the step number (the same on every call).
template <class Opt, class T>
void run(const E& space, const Opt& opt, ParamSet<T, E>& params, typename Opt::template State<T, E>& state, int from,
         int to) {
  auto g = ParamSet<T, E>::zeros_like(params);
  for (int t = from; t < to; ++t) {
    delayopt::test::fill_random(space, g, 1000u + static_cast<unsigned>(t), 0.1);
    if constexpr (Opt::delay_type::needs_stale_params)
      opt.update(space, params, g, state, {.tau = 1}, &params);
    else
      opt.update(space, params, g, state, {.tau = 1});
  }
  space.fence();
}

/// Parameters drawn from `seed` and the state of `opt` after `steps` steps (run's gradients).
template <class T, class Opt>
struct Trained {
  ParamSet<T, E> params;
  typename Opt::template State<T, E> state;
};
template <class T, class Opt>
Trained<T, Opt> trained(const E& space, const Opt& opt, unsigned seed, int steps) {
  Trained<T, Opt> t{ParamSet<T, E>(shapes()), {}};
  delayopt::test::fill_random(space, t.params, seed, 0.5);
  t.state = opt.init(space, t.params);
  run(space, opt, t.params, t.state, 0, steps);
  return t;
}

/// Saves after `first` steps, restores into a new state, and runs `more` steps from both: the
/// parameters and every moment must match bit for bit.
template <class Opt, class T>
void check_round_trip(const Opt& opt, int first, int more) {
  E space;
  auto [params, state] = trained<T>(space, opt, 3, first);

  std::stringstream file;
  io::save_state(file, space, opt, params, state);
  auto restored = io::load_state(file, space, opt, params);
  CHECK(restored.calls == state.calls);
  CHECK(Opt::applied_steps(restored) == Opt::applied_steps(state));
  CHECK(bitwise_equal(delayopt::test::state_values(restored), delayopt::test::state_values(state)));

  auto params_b = params.clone(space);
  run(space, opt, params, state, first, first + more);
  run(space, opt, params_b, restored, first, first + more);
  CHECK(bitwise_equal(host_values(params_b), host_values(params)));
  CHECK(bitwise_equal(delayopt::test::state_values(restored), delayopt::test::state_values(state)));
  if constexpr (!Opt::basis_type::is_identity) {
    CHECK(restored.basis.refreshes == state.basis.refreshes);
    CHECK(restored.basis.refreshes > 0);
  }
  for (int k = 0; k < Opt::delay_type::slots; ++k)  // an int, as Optimizer::clone loops: nvcc warns on size_t < 0
    CHECK(bitwise_equal(host_values(restored.delay[k]), host_values(state.delay[k])));
}

/// A saved checkpoint of a few Adam steps, as bytes.
template <class T = double>
std::string adam_checkpoint(const Adam& opt, ParamSet<T, E>& params) {
  E space;
  auto state = opt.init(space, params);
  run(space, opt, params, state, 0, 3);
  std::stringstream file;
  io::save_state(file, space, opt, params, state);
  return file.str();
}

}  // namespace

TEMPLATE_TEST_CASE("a restored state continues bit for bit like the saved one", "[checkpoint]", float, double) {
  using T = TestType;
  SECTION("Adam") { check_round_trip<Adam, T>(Adam({.schedule = {.lr = 1e-2}}), 5, 4); }
  SECTION("SOAP, refresh every 3, a restart between refreshes") {
    SOAP::Config c = soap_config(1e-2);
    c.basis.refresh_every = 3;
    check_round_trip<SOAP, T>(SOAP(c), 7, 6);
  }
  SECTION("NAdam in the basis, paper ordering, one-sided, rank-1 blocks rotated") {
    const RotatedNAdam opt({.basis = {.geometry = basis::Geometry::one_sided,
                                      .ordering = basis::Ordering::paper,
                                      .refresh_every = 2,
                                      .rank1 = basis::Rank1::full},
                            .schedule = {.lr = 1e-2}});
    check_round_trip<RotatedNAdam, T>(opt, 5, 5);
  }
  SECTION("SOAP with the momentum as the basis source") {
    SOAP::Config c = soap_config(1e-2);
    c.basis.refresh_every = 2;
    c.basis.source = basis::Source::momentum;
    check_round_trip<SOAP, T>(SOAP(c), 5, 4);
  }
  SECTION("full eigenbasis") {
    check_round_trip<FullEigenAdam, T>(FullEigenAdam({.basis = {.refresh_every = 2}, .schedule = {.lr = 1e-2}}), 5, 4);
  }
  SECTION("weight prediction's velocity and Nesterov's last step (delay slots)") {
    using WP = Optimizer<basis::Identity, moment::Adam, delay::WeightPrediction>;
    check_round_trip<WP, T>(WP({.delay = {.gamma = 0.9}, .schedule = {.lr = 1e-2}}), 4, 4);
    using NAG = Optimizer<basis::KroneckerEigen, moment::Adam, delay::Nesterov>;
    check_round_trip<NAG, T>(NAG({.basis = {.refresh_every = 2}, .delay = {.gamma = 0.5}, .schedule = {.lr = 1e-2}}), 5,
                             4);
  }
  SECTION("DC-ASGD in the rotated basis") {
    using DC = Optimizer<basis::KroneckerEigen, moment::Adam, delay::DCASGD>;
    check_round_trip<DC, T>(DC({.basis = {.refresh_every = 2}, .delay = {.lambda = 0.5}, .schedule = {.lr = 1e-2}}), 5,
                            4);
  }
}

TEST_CASE("a bad checkpoint is refused with a message saying what is wrong", "[checkpoint]") {
  E space;
  const Adam adam({.schedule = {.lr = 1e-2}});
  ParamSet<double, E> params(shapes());
  delayopt::test::fill_random(space, params, 3, 0.5);
  const std::string good = adam_checkpoint(adam, params);
  const auto load = [&](const std::string& bytes) {
    std::istringstream in(bytes);
    return io::load_state(in, space, adam, params);
  };
  REQUIRE_NOTHROW(load(good));

  SECTION("not a checkpoint, empty, truncated, or a flipped byte") {
    CHECK_THROWS_WITH(load(""), Catch::Contains("not a delayopt checkpoint"));
    CHECK_THROWS_WITH(load("{\"records\": []}\n"), Catch::Contains("not a delayopt checkpoint"));
    CHECK_THROWS_WITH(load(good.substr(0, good.size() - 9)), Catch::Contains("checksum mismatch"));
    CHECK_THROWS_WITH(load(good.substr(0, 40)), Catch::Contains("checksum mismatch"));
    std::string flipped = good;
    flipped[flipped.size() / 2] ^= 0x10;
    CHECK_THROWS_WITH(load(flipped), Catch::Contains("checksum mismatch"));
  }
  SECTION("another format version") {
    std::string other = good;
    other[8] = 2;  // the version word follows the 8-byte magic
    CHECK_THROWS_WITH(load(other), Catch::Contains("format version 2; this build reads 1"));
  }
  SECTION("another composition") {
    const SOAP soap(soap_config(1e-2));
    std::istringstream in(good);
    CHECK_THROWS_WITH(io::load_state(in, space, soap, params),
                      Catch::Contains("saved by Optimizer<basis::Identity, moment::Adam, delay::None>; this is "
                                      "Optimizer<basis::KroneckerEigen, moment::Adam, delay::None>"));
  }
  SECTION("another value type") {
    ParamSet<float, E> fparams(shapes());
    std::istringstream in(good);
    CHECK_THROWS_WITH(io::load_state(in, space, adam, fparams),
                      Catch::Contains("holds 64-bit state; this is float (32-bit)"));
  }
  SECTION("other parameters") {
    std::vector<BlockShape> other = shapes();
    other[1].rows = 6;
    ParamSet<double, E> p2(other);
    std::istringstream in(good);
    CHECK_THROWS_AS(io::load_state(in, space, adam, p2), shape_mismatch);
    std::istringstream in2(good);
    CHECK_THROWS_WITH(io::load_state(in2, space, adam, p2),
                      Catch::Contains("block 1 is 'W2' (5x12, LayoutLeft) in the checkpoint and 'W2' (6x12, "
                                      "LayoutLeft) in params"));
    ParamSet<double, E> fewer({shapes()[0]});
    std::istringstream in3(good);
    CHECK_THROWS_WITH(io::load_state(in3, space, adam, fewer),
                      Catch::Contains("the checkpoint has 3 blocks, params 1"));
  }
  SECTION("another basis configuration (two-sided saved, one-sided loaded)") {
    SOAP::Config two = soap_config(1e-2);
    auto state = SOAP(two).init(space, params);
    run(space, SOAP(two), params, state, 0, 3);
    std::stringstream file;
    io::save_state(file, space, SOAP(two), params, state);
    SOAP::Config one = two;
    one.basis.geometry = basis::Geometry::one_sided;
    CHECK_THROWS_WITH(io::load_state(file, space, SOAP(one), params),
                      Catch::Contains("holds 'basis/") && Catch::Contains("another basis configuration"));
  }
  SECTION("a non-finite moment, or a negative second moment") {
    for (const double bad : {std::numeric_limits<double>::quiet_NaN(), -1.0}) {
      auto state = adam.init(space, params);
      run(space, adam, params, state, 0, 2);
      delayopt::test::set_value(space, state.moments[1], 2, 3, bad);  // v of block 'b'
      std::stringstream file;
      io::save_state(file, space, adam, params, state);
      CHECK_THROWS_WITH(io::load_state(file, space, adam, params),
                        Catch::Contains("'moment1/b' element 3 is") && Catch::Contains("second moment"));
    }
    auto state = adam.init(space, params);
    delayopt::test::set_value(space, state.moments[0], 0, 5, std::numeric_limits<double>::infinity());
    std::stringstream file;
    io::save_state(file, space, adam, params, state);
    CHECK_THROWS_WITH(io::load_state(file, space, adam, params), Catch::Contains("'moment0/W1' element 5 is inf"));
  }
  SECTION("a failed load leaves the caller's state as it was") {
    auto state = adam.init(space, params);
    run(space, adam, params, state, 0, 4);
    const auto before = delayopt::test::state_values(state);
    std::string corrupt = good;
    corrupt[corrupt.size() - 20] ^= 1;
    CHECK_THROWS_AS(state = load(corrupt), invalid_input);
    CHECK(bitwise_equal(delayopt::test::state_values(state), before));
    CHECK(state.calls == 4);
  }
}

// Past the checksum: bytes changed and the checksum recomputed, as a buggy writer could produce.
// The parser must refuse or load, never read out of bounds or accept a non-finite value.
TEST_CASE("a checkpoint with a valid checksum but altered contents is refused or loads cleanly", "[checkpoint]") {
  E space;
  const SOAP opt(soap_config(1e-2));
  const auto [params, state] = trained<double>(space, opt, 3, 4);
  std::stringstream file;
  io::save_state(file, space, opt, params, state);
  const std::string good = file.str();
  const std::size_t body = good.size() - sizeof(std::uint64_t);
  std::mt19937 gen(11);
  int refused = 0, loaded = 0, cut = 0, cut_refused = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string bad = good.substr(0, body);
    for (int c = 0; c < 1 + trial % 4; ++c)
      bad[std::uniform_int_distribution<std::size_t>(8, body - 1)(gen)] = static_cast<char>(gen());
    const bool cut_short = trial % 10 == 0;
    if (cut_short) bad.resize(std::uniform_int_distribution<std::size_t>(20, body - 1)(gen)), ++cut;
    const std::uint64_t h = io::detail::fnv1a(bad.data(), bad.size(), io::detail::fnv_basis);
    bad.append(reinterpret_cast<const char*>(&h), sizeof h);
    std::istringstream in(bad);
    try {
      const auto st = io::load_state(in, space, opt, params);
      for (double x : delayopt::test::state_values(st)) REQUIRE(std::isfinite(x));
      ++loaded;
    } catch (const error&) {  // invalid_input or shape_mismatch
      ++refused;
      cut_refused += cut_short;
    }
  }
  UNSCOPED_INFO(refused << " refused, " << loaded << " loaded (finite values or counters changed)");
  CHECK(refused + loaded == 300);
  CHECK(cut_refused == cut);  // a file cut short never loads
  CHECK(refused >= 50);       // 99 of 300 here: a header, a key, an extent or a non-finite value
}

TEST_CASE("checkpoint files: written atomically, a missing file named in the error", "[checkpoint]") {
  E space;
  const SOAP opt(soap_config(1e-2));
  const auto [params, state] = trained<float>(space, opt, 5, 12);
  const auto path = std::filesystem::temp_directory_path() / ("delayopt-ckpt-" + std::to_string(::getpid()));
  io::save_state(path, space, opt, params, state);
  CHECK_FALSE(std::filesystem::exists(path.string() + ".tmp"));
  io::save_state(path, space, opt, params, state);  // replaces it
  const auto restored = io::load_state(path, space, opt, params);
  CHECK(bitwise_equal(delayopt::test::state_values(restored), delayopt::test::state_values(state)));
  std::filesystem::remove(path);
  CHECK_THROWS_WITH(io::load_state(path, space, opt, params),
                    Catch::Contains("cannot open") && Catch::Contains(path.string()));
}
