// Must compile: the same translation unit shape as the failing cases, used correctly.
#include <delayopt/delayopt.hpp>

int main() {
  using E = Kokkos::DefaultHostExecutionSpace;
  delayopt::Optimizer<delayopt::basis::Identity, delayopt::moment::Adam, delayopt::delay::None> opt;
  delayopt::ParamSet<float, E> params({{"w", 1, 4}});
  delayopt::ParamSet<float, E> grads({{"w", 1, 4}});
  auto state = opt.init(E(), params);
  opt.update(E(), params, grads, state);
  // stepper_stale_params.cpp's Stepper, with a delay policy that needs no stale parameters.
  using Opt = delayopt::Optimizer<delayopt::basis::Identity, delayopt::moment::Adam, delayopt::delay::None>;
  delayopt::Stepper stepper(Opt(), E(), params);
  stepper.step(stepper.make_grads());
}
