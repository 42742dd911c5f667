// Per-step cost of the two-sided Kronecker eigenbasis (SOAP) on fp32 blocks, split into its parts,
// next to the GEMM rate reached on the same shapes in the same run.
//
//   delayopt_bench_soap --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// Counters: BM_SOAPStep reports the amortized time per step over one refresh period (10 steps,
// one refresh) and `gemm_bound_ratio` = achieved time / (GEMM-class flops / measured GEMM rate).
// The parts (accumulate, project, update, refresh) are timed by calling the same operations the
// optimizer runs, one at a time.
#include <delayopt/delayopt.hpp>

#include <benchmark/benchmark.h>

#include <Eigen/Dense>

#include <cstdlib>
#include <random>
#include <string>

namespace {

using E = Kokkos::DefaultHostExecutionSpace;
using T = float;
using Set = delayopt::ParamSet<T, E>;
using Ops = delayopt::basis::detail::EigenbasisOps<T, E>;
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr int kRefresh = 10;

void fill(Set& s, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<T> normal;
  auto f = s.flat(0);
  for (std::size_t i = 0; i < f.extent(0); ++i) f(i) = normal(gen);
}

// GEMM-class flops of one amortized step of a two-sided m x n block (SYRK counted as m^2 n):
// accumulate m^2 n + n^2 m, project and project back 2 (2 m^2 n + 2 m n^2), and per refresh
// (every kRefresh steps) per side: SYMM 2 s^3, Householder QR + forming Q 8/3 s^3, and rotating
// the first moment back and forth 2 (2 m^2 n + 2 m n^2).
double step_flops(double m, double n) {
  const double per_step = m * m * n + n * n * m + 2 * (2 * m * m * n + 2 * m * n * n);
  const double refresh =
      2 * m * m * m + 2 * n * n * n + 8.0 / 3 * (m * m * m + n * n * n) + 2 * (2 * m * m * n + 2 * m * n * n);
  return per_step + refresh / kRefresh;
}

struct Fixture {
  std::size_t m, n;
  Set params, grads;
  delayopt::SOAP opt;
  delayopt::SOAP::State<T, E> state;
  E space;

  Fixture(std::size_t m_, std::size_t n_)
      : m(m_),
        n(n_),
        params({{"W", 2, m_, n_}}),
        grads({{"W", 2, m_, n_}}),
        opt({.basis = {.refresh_every = kRefresh}, .moment = {.beta2 = 0.99}, .schedule = {.lr = 1e-4}}) {
    fill(params, 1);
    fill(grads, 2);
    state = opt.init(space, params);
    for (int i = 0; i < 2; ++i) opt.update(space, params, grads, state);  // initialize the basis
    space.fence();
  }
};

double gemm_rate(std::size_t m, std::size_t n) {
  // The step's GEMM shapes: (m x m)(m x n) and (m x n)(n x n).
  Mat A = Mat::Random(m, m), G = Mat::Random(m, n), B = Mat::Random(n, n), C(m, n);
  C.noalias() = A * G;  // warm up threads and caches
  Kokkos::Timer t;
  int reps = 0;
  while (t.seconds() < 0.5 || reps < 3) {
    C.noalias() = A * G;
    C.noalias() = C * B;
    ++reps;
  }
  benchmark::DoNotOptimize(C.data());
  return reps * (2.0 * m * m * n + 2.0 * m * n * n) / t.seconds();
}

void BM_SOAPStep(benchmark::State& bs) {
  Fixture f(bs.range(0), bs.range(1));
  for (auto _ : bs) {
    Kokkos::Timer t;
    for (int i = 0; i < kRefresh; ++i) f.opt.update(f.space, f.params, f.grads, f.state);  // one refresh
    f.space.fence();
    bs.SetIterationTime(t.seconds() / kRefresh);
  }
  const double rate = gemm_rate(f.m, f.n);
  bs.counters["gemm_GFLOPs"] = rate / 1e9;
  bs.counters["gemm_bound_s"] = step_flops(f.m, f.n) / rate;
  bs.counters["state_MiB"] = delayopt::SOAP::state_bytes(f.state) / 1048576.0;
}

enum Part { accumulate, project, update, refresh };

void BM_SOAPPart(benchmark::State& bs) {
  Fixture f(bs.range(0), bs.range(1));
  const auto part = static_cast<Part>(bs.range(2));
  auto& st = f.state.basis;
  auto work = Set::zeros_like(f.params);
  const delayopt::Adam adam({.schedule = {.lr = 1e-4}});
  auto adam_state = adam.init(f.space, f.params);
  const auto settings = delayopt::basis::KroneckerEigen::settings({}, 0.9, 0.99);
  for (auto _ : bs) {
    Kokkos::Timer t;
    switch (part) {
      case accumulate:
        Ops::accumulate(f.space, st, f.grads, 0.99);
        break;
      case project:  // into the basis and back: both per-step projections
        delayopt::basis::KroneckerEigen::project(f.space, st, f.grads, work);
        delayopt::basis::KroneckerEigen::project_back(f.space, st, work);
        break;
      case update:  // the element-wise passes; Adam's fused step moves the same bytes
        adam.update(f.space, f.params, f.grads, adam_state);
        break;
      case refresh:
        Ops::refresh(f.space, st, settings, {&f.state.moments[0]}, {&f.state.moments[1]}, nullptr);
        break;
    }
    f.space.fence();
    bs.SetIterationTime(t.seconds());
  }
}

const char* part_name(int p) {
  static const char* names[] = {"accumulate", "project+back", "elementwise", "refresh"};
  return names[p];
}

void shapes(benchmark::internal::Benchmark* b) { b->Args({1024, 1024})->Args({4096, 1024}); }

}  // namespace

BENCHMARK(BM_SOAPStep)->Apply(shapes)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);

int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  for (auto [m, n] : {std::pair{1024, 1024}, std::pair{4096, 1024}})
    for (int p = 0; p < 4; ++p)
      benchmark::RegisterBenchmark(
          ("BM_SOAPPart/" + std::string(part_name(p)) + "/" + std::to_string(m) + "x" + std::to_string(n)).c_str(),
          BM_SOAPPart)
          ->Args({m, n, p})
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond)
          ->Iterations(p == refresh ? 2 : 5);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("kokkos_version", std::to_string(KOKKOS_VERSION));
  benchmark::AddCustomContext("execution_space", E::name());
#ifdef EIGEN_USE_BLAS
  benchmark::AddCustomContext("eigen_products", "BLAS (EIGEN_USE_BLAS)");
#else
  benchmark::AddCustomContext("eigen_products", "Eigen");
#endif
  if (const char* t = std::getenv("OMP_NUM_THREADS")) benchmark::AddCustomContext("OMP_NUM_THREADS", t);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
