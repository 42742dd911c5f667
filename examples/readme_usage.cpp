#include <delayopt/delayopt.hpp>

#include <cstdio>

int main(int argc, char* argv[]) {
  Kokkos::ScopeGuard guard(argc, argv);  // the application owns Kokkos' lifetime
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  // Named blocks in one allocation: a 64x32 weight and a bias, plus gradients shaped alike.
  delayopt::ParamSet<float, Space> params({{"W", 2, 64, 32}, {"b", 1, 64}});
  auto grads = delayopt::ParamSet<float, Space>::zeros_like(params);
  const delayopt::Adam opt({.moment = {.beta2 = 0.99}, .schedule = {.lr = 1e-3}, .clip_global_norm = 1.0});
  auto state = opt.init(space, params);  // a value: stash it, clone it, checkpoint it
  for (int step = 0; step < 100; ++step) {
    Kokkos::deep_copy(space, grads.flat("W"), 0.5f);      // your backward pass writes grads here
    opt.update(space, params, grads, state, {.tau = 0});  // enqueued on `space`, no fence
  }
  space.fence();
  auto w = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params.flat("W"));
  std::printf("W[0] after 100 steps: %.4f (skipped steps: %lld)\n", w(0),
              static_cast<long long>(delayopt::Adam::skipped_steps(state)));
}
