// Small host-side helpers for tests: fill, read back, compare bit for bit.
#pragma once

#include <delayopt/delayopt.hpp>

#include <cstring>
#include <random>
#include <vector>

namespace delayopt::test {

template <class T, class E>
std::vector<T> host_values(const ParamSet<T, E>& set) {
  std::vector<T> out;
  for (std::size_t b = 0; b < set.num_blocks(); ++b) {
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), set.flat(b));
    out.insert(out.end(), h.data(), h.data() + h.extent(0));
  }
  return out;
}

/// Every moment slot of a state, concatenated.
template <class State>
auto state_values(const State& st) {
  std::vector<typename std::decay_t<decltype(st.moments[0])>::value_type> out;
  for (const auto& m : st.moments) {
    auto v = host_values(m);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

template <class T, class E>
void fill_random(const E& space, ParamSet<T, E>& set, unsigned seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  for (std::size_t b = 0; b < set.num_blocks(); ++b) {
    auto h = Kokkos::create_mirror_view(set.flat(b));
    for (std::size_t i = 0; i < h.extent(0); ++i) h(i) = static_cast<T>(dist(gen));
    Kokkos::deep_copy(space, set.flat(b), h);
  }
  space.fence();
}

/// The inverse of host_values: every block of `set`, in order, from one flat host vector.
template <class T, class E>
void set_values(const E& space, ParamSet<T, E>& set, const std::vector<T>& flat) {
  std::size_t off = 0;
  for (std::size_t b = 0; b < set.num_blocks(); ++b) {
    auto h = Kokkos::create_mirror_view(set.flat(b));
    for (std::size_t i = 0; i < h.extent(0); ++i) h(i) = flat.at(off++);
    Kokkos::deep_copy(space, set.flat(b), h);
  }
  space.fence();  // the host mirrors must outlive the copies
}

template <class T, class E>
void set_value(const E& space, ParamSet<T, E>& set, std::size_t block, std::size_t i, T value) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), set.flat(block));
  h(i) = value;
  Kokkos::deep_copy(space, set.flat(block), h);
  space.fence();
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

inline std::vector<BlockShape> small_shapes() {
  return {{"W1", 2, 8, 6, Layout::right}, {"W2", 2, 16, 4, Layout::right}, {"b", 1, 5, 1, Layout::right}};
}

}  // namespace delayopt::test
