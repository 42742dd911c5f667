// Must not compile: a basis policy without visit_state cannot be checkpointed.
#include <delayopt/delayopt.hpp>

#include <sstream>

// KroneckerEigen with its checkpoint hook hidden, as a user-written basis policy would lack it.
struct NoVisitBasis : delayopt::basis::KroneckerEigen {
  static constexpr const char* name = "NoVisitBasis";
  template <class... A>
  static void visit_state(A&&...) = delete;
};

int main() {
  using E = Kokkos::DefaultHostExecutionSpace;
  using Opt = delayopt::Optimizer<NoVisitBasis, delayopt::moment::Adam, delayopt::delay::None>;
  const Opt opt;
  delayopt::ParamSet<float, E> params({{"w", 2, 4, 3}});
  auto state = opt.init(E(), params);
  std::stringstream file;
  delayopt::io::save_state(file, E(), opt, params, state);
}
