// Shared by the Adam benchmarks (bench_adam_step.cpp on the host, bench_device_step.cpp on Kokkos'
// default space): STREAM arrays, a fenced timer, and the Adam-vs-triad loop that times each step
// with a triad on the same number of elements interleaved, so that machine noise and clock changes
// hit both.
#pragma once

#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <cstdint>

namespace delayopt::bench {

/// Seconds for `work` to be enqueued and complete (launches are asynchronous on device spaces).
template <class Space, class Work>
double timed(const Space& space, const Work& work) {
  Kokkos::Timer timer;
  work();
  space.fence();
  return timer.seconds();
}

/// Bytes per element: Adam reads p, g, m, v and writes p, m, v (the non-finite check's extra read
/// of g is not counted, so "checked" pays for it in its rate); STREAM triad a = b + s c and copy
/// a = b, without write-allocate traffic.
template <class T>
inline constexpr double adam_bytes = 7 * sizeof(T);
template <class T>
inline constexpr double triad_bytes = 3 * sizeof(T);
template <class T>
inline constexpr double copy_bytes = 2 * sizeof(T);

/// STREAM arrays, first touched with the kernels' own policy so that each OpenMP thread's pages are
/// local to it.
template <class T, class Space>
struct Stream {
  using Vector = Kokkos::View<T*, typename Space::memory_space>;
  struct Fill {
    Vector v;
    T x;
    KOKKOS_INLINE_FUNCTION void operator()(const std::int64_t i) const { v(i) = x; }
  };
  struct Triad {
    Vector a, b, c;
    T s;
    KOKKOS_INLINE_FUNCTION void operator()(const std::int64_t i) const { a(i) = b(i) + s * c(i); }
  };
  struct Copy {
    Vector a, b;
    KOKKOS_INLINE_FUNCTION void operator()(const std::int64_t i) const { a(i) = b(i); }
  };

  std::int64_t n;
  Vector a, b, c;

  Stream(const Space& space, std::int64_t size)
      : n(size),
        a(Kokkos::ViewAllocateWithoutInitializing("bench::a"), size),
        b(Kokkos::ViewAllocateWithoutInitializing("bench::b"), size),
        c(Kokkos::ViewAllocateWithoutInitializing("bench::c"), size) {
    Kokkos::parallel_for("bench::fill", policy(space), Fill{a, 0});
    Kokkos::parallel_for("bench::fill", policy(space), Fill{b, 1});
    Kokkos::parallel_for("bench::fill", policy(space), Fill{c, 2});
    space.fence();
  }

  Kokkos::RangePolicy<Space> policy(const Space& space) const { return Kokkos::RangePolicy<Space>(space, 0, n); }
  void triad(const Space& space) const { Kokkos::parallel_for("bench::triad", policy(space), Triad{a, b, c, 3}); }
  void copy(const Space& space) const { Kokkos::parallel_for("bench::copy", policy(space), Copy{a, b}); }
};

/// Achieved rates (bytes/s, 10^9-free) of the Adam steps and of the interleaved triads.
struct AdamVsTriad {
  double adam_rate, triad_rate;
};

/// Times `step()` (one optimizer update on n elements of T) as the benchmark's iteration time, with
/// a triad on n elements after each, after `warmups` untimed pairs (page faults and thread start-up
/// on the host; module loading and clock ramp on CUDA). Sets bytes_processed to Adam's traffic.
template <class T, class Space, class Step>
AdamVsTriad adam_vs_triad(benchmark::State& state, const Space& space, std::int64_t n, int warmups, const Step& step) {
  const Stream<T, Space> stream(space, n);
  for (int i = 0; i < warmups; ++i) step(), stream.triad(space);
  space.fence();
  double adam_s = 0, triad_s = 0;
  for (auto _ : state) {
    const double t = timed(space, step);
    state.SetIterationTime(t);
    adam_s += t;
    triad_s += timed(space, [&] { stream.triad(space); });
  }
  const double elems = static_cast<double>(state.iterations()) * static_cast<double>(n);
  state.SetBytesProcessed(static_cast<std::int64_t>(elems * adam_bytes<T>));
  return {elems * adam_bytes<T> / adam_s, elems * triad_bytes<T> / triad_s};
}

}  // namespace delayopt::bench
