// Must not compile: float params with double grads.
#include <delayopt/delayopt.hpp>

int main() {
  using E = Kokkos::DefaultHostExecutionSpace;
  delayopt::Adam opt;
  delayopt::ParamSet<float, E> params({{"w", 1, 4}});
  delayopt::ParamSet<double, E> grads({{"w", 1, 4}});
  auto state = opt.init(E(), params);
  opt.update(E(), params, grads, state);
}
