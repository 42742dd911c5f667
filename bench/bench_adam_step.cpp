// Fused Adam step (fp32) against STREAM triad and copy on buffers of the same size.
//
//   OMP_NUM_THREADS=2 OMP_PROC_BIND=spread OMP_PLACES=threads ./delayopt_bench_adam
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true   (medians over 5 runs)
//
// Byte conventions: Adam moves 28 B/param (read p, g, m, v; write p, m, v); the non-finite check's extra
// read of g is not counted, so "checked" pays for it in its rate. Triad 12 B/elem, copy 8 B/elem: the
// STREAM convention, without write-allocate traffic. bytes_per_second is printed in 2^30 units;
// triad_GBps is in 10^9 B/s. ratio_vs_triad (the figure of merit) is unit-free.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "delayopt/delayopt.hpp"
#include "measure.hpp"

namespace {

#if defined(KOKKOS_ENABLE_OPENMP)
using E = Kokkos::OpenMP;
#else
using E = Kokkos::DefaultHostExecutionSpace;  // keeps the suite building against any host backend
#endif
using T = float;
using delayopt::NonFinitePolicy;
using delayopt::bench::adam_vs_triad;
using delayopt::bench::copy_bytes;
using delayopt::bench::timed;
using delayopt::bench::triad_bytes;
using Stream = delayopt::bench::Stream<T, E>;

/// Times update() and, interleaved with it, a triad on buffers of the same size, so that machine noise hits
/// both; only the Adam time is reported as the iteration time.
void run_adam(benchmark::State& state, const std::vector<delayopt::BlockShape>& shapes, NonFinitePolicy policy) {
  E space;
  delayopt::ParamSet<T, E> params(shapes);
  auto grads = delayopt::ParamSet<T, E>::zeros_like(params);
  for (std::size_t b = 0; b < grads.num_blocks(); ++b) Kokkos::deep_copy(space, grads.flat(b), T(1e-3));
  const delayopt::Adam opt({.schedule = {.lr = 1e-3}, .nonfinite = policy});
  auto opt_state = opt.init(space, params);
  const auto n = static_cast<std::int64_t>(params.total_size());
  // One warm-up pair: page faults, OpenMP thread start-up.
  const auto r = adam_vs_triad<T>(state, space, n, 1, [&] { opt.update(space, params, grads, opt_state); });
  if (delayopt::Adam::skipped_steps(opt_state) != 0) state.SkipWithError("a step was skipped: non-finite gradient");
  state.counters["triad_GBps"] = r.triad_rate / 1e9;
  state.counters["ratio_vs_triad"] = r.adam_rate / r.triad_rate;
}

void BM_AdamStep(benchmark::State& state, NonFinitePolicy policy) {
  run_adam(state, {{"w", 1, static_cast<std::size_t>(state.range(0))}}, policy);
}

/// Many equal blocks in one ParamSet: one launch must cover them all at the single-block rate.
void BM_AdamStep_Blocked(benchmark::State& state, NonFinitePolicy policy) {
  std::vector<delayopt::BlockShape> shapes;
  for (std::int64_t b = 0; b < state.range(0); ++b) {
    std::string name = "w";  // not "w" + ...: GCC 12 -Wrestrict false positive
    name += std::to_string(b);
    shapes.push_back({name, 1, static_cast<std::size_t>(state.range(1))});
  }
  run_adam(state, shapes, policy);
}

template <bool is_triad>
void run_stream(benchmark::State& state) {
  E space;
  const Stream stream(space, state.range(0));
  const auto work = [&] { is_triad ? stream.triad(space) : stream.copy(space); };
  timed(space, work);  // warm-up
  for (auto _ : state) state.SetIterationTime(timed(space, work));
  const double elems = static_cast<double>(state.iterations()) * static_cast<double>(state.range(0));
  state.SetBytesProcessed(static_cast<std::int64_t>(elems * (is_triad ? triad_bytes<T> : copy_bytes<T>)));
}

void BM_StreamTriad(benchmark::State& state) { run_stream<true>(state); }
void BM_StreamCopy(benchmark::State& state) { run_stream<false>(state); }

// 1M, 16M and 64M elements (M = 2^20).
void sizes(benchmark::internal::Benchmark* b) {
  b->Arg(1 << 20)->Arg(1 << 24)->Arg(1 << 26)->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(BM_AdamStep, checked, NonFinitePolicy::skip_step)->Apply(sizes);
BENCHMARK_CAPTURE(BM_AdamStep, unchecked, NonFinitePolicy::unchecked)->Apply(sizes);
BENCHMARK_CAPTURE(BM_AdamStep_Blocked, checked, NonFinitePolicy::skip_step)
    ->Args({256, 1 << 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_AdamStep_Blocked, unchecked, NonFinitePolicy::unchecked)
    ->Args({256, 1 << 16})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StreamTriad)->Apply(sizes);
BENCHMARK(BM_StreamCopy)->Apply(sizes);

const char* env_or_unset(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "(unset)";
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard kokkos(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  constexpr int v = KOKKOS_VERSION;  // e.g. 30401
  const auto part = [](int x) { return std::to_string(x); };
  benchmark::AddCustomContext("kokkos_version", part(v / 10000) + "." + part(v / 100 % 100) + "." + part(v % 100));
  benchmark::AddCustomContext("execution_space", E::name());
  benchmark::AddCustomContext("concurrency", std::to_string(E().concurrency()));
  for (const char* name : {"OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES"})
    benchmark::AddCustomContext(name, env_or_unset(name));

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
