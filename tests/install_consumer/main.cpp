#include <delayopt/delayopt.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  using E = Kokkos::DefaultExecutionSpace;
  E space;
  delayopt::ParamSet<double, E> params({{"w", 1, 3}}), grads({{"w", 1, 3}});
  Kokkos::deep_copy(space, grads.flat(0), 1.0);
  const delayopt::Adam opt({.schedule = {.lr = 0.1}});
  auto state = opt.init(space, params);
  opt.update(space, params, grads, state);
  auto w = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params.flat(0));
  std::printf("w[0] = %.6f\n", w(0));
  return std::abs(w(0) + 0.1) < 1e-6 ? 0 : 1;  // Adam's first step moves by lr against the sign
}
