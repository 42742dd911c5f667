// Must not compile: Stepper::step(grads) cannot pass the stale parameters delay::DCASGD needs.
#include <delayopt/delayopt.hpp>

int main() {
  using E = Kokkos::DefaultHostExecutionSpace;
  using Opt = delayopt::Optimizer<delayopt::basis::Identity, delayopt::moment::Adam, delayopt::delay::DCASGD>;
  delayopt::ParamSet<float, E> params({{"w", 1, 4}});
  delayopt::Stepper stepper(Opt(), E(), params);
  stepper.step(stepper.make_grads());
}
