// The CUDA eigenbasis backend against the host (Eigen) backend as oracle: same inputs, a few steps
// across refreshes, in double. Built only with DELAYOPT_ENABLE_CUDA_LINALG and a CUDA Kokkos; runs
// where a GPU is present.
#include "../support/catch.hpp"
#include "../support/helpers.hpp"

#include <cstdio>

using namespace delayopt;
using Host = Kokkos::DefaultHostExecutionSpace;
using Dev = Kokkos::Cuda;

namespace {

template <class T>
std::vector<T> run(const auto& space, auto params, const std::vector<std::vector<T>>& grads, const SOAP& opt,
                   std::int64_t* failures) {
  using E = std::decay_t<decltype(space)>;
  auto g = ParamSet<T, E>::zeros_like(params);
  auto st = opt.init(space, params);
  for (const auto& gh : grads) {
    std::size_t off = 0;
    for (std::size_t b = 0; b < g.num_blocks(); ++b) {
      auto h = Kokkos::create_mirror_view(g.flat(b));
      for (std::size_t i = 0; i < h.extent(0); ++i) h(i) = gh[off++];
      Kokkos::deep_copy(space, g.flat(b), h);
    }
    opt.update(space, params, g, st);
  }
  space.fence();
  *failures = basis::KroneckerEigen::failures(st.basis);
  return delayopt::test::host_values(params);
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA eigenbasis backend matches the host backend", "[cuda][soap]", float, double) {
  using T = TestType;
  // Square blocks: the first gradient's factors G G^T and G^T G are then full rank, so the initial
  // eigenbasis is unique up to signs. (A rank-deficient first factor leaves an arbitrary basis of its
  // null space, and two correct eigensolvers then give trajectories that differ at O(lr).)
  const std::vector<BlockShape> shapes{{"W1", 2, 48, 48}, {"W2", 2, 16, 16}, {"b", 1, 40}};
  ParamSet<T, Host> ph(shapes);
  delayopt::test::fill_random(Host(), ph, 1);
  std::vector<std::vector<T>> grads;
  for (unsigned t = 0; t < 25; ++t) {
    ParamSet<T, Host> g(shapes);
    delayopt::test::fill_random(Host(), g, 100 + t);
    grads.push_back(delayopt::test::host_values(g));
  }
  ParamSet<T, Dev> pd(shapes);
  for (std::size_t b = 0; b < shapes.size(); ++b) Kokkos::deep_copy(pd.flat(b), ph.flat(b));
  const SOAP opt({.basis = {.refresh_every = 5}, .schedule = {.lr = 1e-3}});
  std::int64_t fh = 0, fd = 0;
  const auto host = run<T>(Host(), ph.clone(Host()), grads, opt, &fh);
  const auto dev = run<T>(Dev(), pd, grads, opt, &fd);
  const double tol = std::is_same_v<T, double> ? 1e-10 : 1e-3;
  double worst = 0;
  for (std::size_t i = 0; i < host.size(); ++i) worst = std::max(worst, double(std::abs(host[i] - dev[i])));
  std::printf("%s: max |host - cuda| over the parameters after 25 steps: %.3e\n",
              std::is_same_v<T, double> ? "double" : "float", worst);
  CHECK(worst <= tol);
  CHECK(fh == 0);
  CHECK(fd == 0);
}
