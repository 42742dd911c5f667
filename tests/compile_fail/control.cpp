// Must compile: the same translation unit shape as the failing cases, used correctly.
#include <delayopt/delayopt.hpp>

#include <sstream>

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
  // uncheckpointable_basis.cpp's save_state, with a basis that has visit_state.
  const delayopt::SOAP soap;
  delayopt::ParamSet<float, E> matrix({{"w", 2, 4, 3}});
  auto soap_state = soap.init(E(), matrix);
  std::stringstream file;
  delayopt::io::save_state(file, E(), soap, matrix, soap_state);
}
