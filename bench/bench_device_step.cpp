// Adam and SOAP steps on Kokkos' default execution space: CUDA in a CUDA build, OpenMP (or Serial) in
// a host build. bench_adam_step.cpp and bench_soap_step.cpp fill their views with host loops, so they
// only run on host memory; everything here is filled and timed on the default space.
//
//   Host:  cmake --preset default -DKokkos_ROOT=... -DDELAYOPT_ENABLE_BENCHMARKS=ON
//          cmake --build build/default --target delayopt_bench_device
//          OMP_NUM_THREADS=2 OMP_PROC_BIND=spread OMP_PLACES=threads build/default/bench/delayopt_bench_device
//   CUDA:  cmake --preset cuda -DKokkos_ROOT=/opt/kokkos-4.6.01-cuda
//              -DCMAKE_CXX_COMPILER=/opt/kokkos-4.6.01-cuda/bin/nvcc_wrapper -DDELAYOPT_ENABLE_BENCHMARKS=ON
//          cmake --build build/cuda --target delayopt_bench_device
//          build/cuda/bench/delayopt_bench_device --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// BM_DeviceAdamStep: one fused Adam step (fp32 checked and unchecked, fp64 checked) on one block of
// 16M and 64M elements and on 256 blocks of 64Ki. Bytes as in bench_adam_step.cpp: 28 B/param in fp32
// (read p, g, m, v; write p, m, v: 7 * sizeof(T)); the non-finite check's extra read of g is not
// counted, so "checked" pays for it in its rate. bytes_per_second is in 2^30 units, adam_GBps and
// triad_GBps in 10^9 B/s; triad_ratio = Adam's bandwidth / a STREAM triad's (a = b + s c, 3 * sizeof(T)
// B/elem, no write-allocate) on N elements of the same type, run interleaved with the steps.
//
// BM_DeviceNAdamStep: the same for NAdam (fp32 checked and unchecked), whose coefficients add a loop of
// ~55 dependent multiplies (the mu product) evaluated by every thread of a team at its chunk's start:
// its triad_ratio against Adam's, side by side in one run, is that loop's cost.
//
// BM_DeviceSOAPStep: fp32 two-sided SOAP, 10 consecutive updates (one refresh) per iteration, reported
// per step, as BM_SOAPStep in bench_soap_step.cpp. One block: gemm_bound_s = the step's GEMM-class flops /
// the GEMM rate measured in this run on the step's shapes (cuBLAS SGEMM through the library's handle on
// CUDA, Eigen on host); gemm_bound_ratio = achieved time / gemm_bound_s. Many blocks of one shape
// ("64x32sq" = 64 blocks of 32 x 32): the same blocks one by one (batch_max_side 0) and as one batched
// group (batch_max_side = side), registered side by side; their time ratio is what batching buys. On a
// device space without the CUDA backend (DELAYOPT_ENABLE_CUDA_LINALG=OFF) the SOAP cases are not
// registered. Only the SOAP cases: --benchmark_filter=SOAP.
//
// BM_DeviceSOAPPart: the step's parts one call each (the factor update, project + back, the element-wise
// passes, one refresh), as BM_SOAPPart in bench_soap_step.cpp, for one large block and for 64 small ones
// one by one and batched: where a step's time goes.
#include <delayopt/delayopt.hpp>

#include "measure.hpp"

#include <benchmark/benchmark.h>
#include <Kokkos_Random.hpp>

#include <Eigen/Dense>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(KOKKOS_ENABLE_CUDA)
#include <cuda_runtime.h>
#endif

namespace {

using E = Kokkos::DefaultExecutionSpace;
using delayopt::NonFinitePolicy;
using Pool = Kokkos::Random_XorShift64_Pool<E>;
constexpr int kRefresh = 10;

#if defined(DELAYOPT_ENABLE_CUDA_LINALG) && defined(KOKKOS_ENABLE_CUDA)
constexpr bool kCudaLinalg = true;
#else
constexpr bool kCudaLinalg = false;
#endif

using delayopt::bench::timed;

/// Uniform values in [lo, hi) generated on the device: no host loop, no N-element host->device copy.
template <class V>
void fill_uniform(const V& v, Pool& pool, double lo, double hi) {
  using T = typename V::non_const_value_type;
  Kokkos::fill_random(v, pool, static_cast<T>(lo), static_cast<T>(hi));
}

// ---- Adam ----------------------------------------------------------------------------------------

/// Times update() and, interleaved with it, a triad on N elements, so that clock and noise changes hit
/// both; only the Adam time is the iteration time.
template <class Opt, class T>
void BM_DeviceMomentStep(benchmark::State& state, NonFinitePolicy policy) {
  E space;
  std::vector<delayopt::BlockShape> shapes;
  for (std::int64_t b = 0; b < state.range(0); ++b) {
    std::string name = "w";  // not "w" + ...: GCC 12 -Wrestrict false positive
    name += std::to_string(b);
    shapes.push_back({name, 1, static_cast<std::size_t>(state.range(1))});
  }
  delayopt::ParamSet<T, E> params(shapes);
  auto grads = delayopt::ParamSet<T, E>::zeros_like(params);
  Pool pool(1);
  for (std::size_t b = 0; b < params.num_blocks(); ++b) {
    fill_uniform(params.flat(b), pool, -1, 1);
    fill_uniform(grads.flat(b), pool, -1e-3, 1e-3);
  }
  const Opt opt({.schedule = {.lr = 1e-3}, .nonfinite = policy});
  auto opt_state = opt.init(space, params);
  const auto n = static_cast<std::int64_t>(params.total_size());
  // Three warm-up pairs: first-touch page faults and OpenMP start-up on host; module loading and
  // clock ramp on CUDA. NAdam's mu-product loop grows with the step up to ~55 factors: 128 warm-up
  // steps time it at full length.
  const int warmups = std::is_same_v<Opt, delayopt::NAdam> ? 128 : 3;
  const auto r =
      delayopt::bench::adam_vs_triad<T>(state, space, n, warmups, [&] { opt.update(space, params, grads, opt_state); });
  if (Opt::skipped_steps(opt_state) != 0) state.SkipWithError("a step was skipped: non-finite gradient");
  state.counters["adam_GBps"] = r.adam_rate / 1e9;
  state.counters["triad_GBps"] = r.triad_rate / 1e9;
  state.counters["triad_ratio"] = r.adam_rate / r.triad_rate;
}

// ---- SOAP ----------------------------------------------------------------------------------------

/// The rotated basis has a backend on host memory (Eigen) and, with DELAYOPT_ENABLE_CUDA_LINALG, on
/// Kokkos::Cuda (cuBLAS/cuSOLVER); on any other space SOAP does not compile, so it is not registered.
template <class Space>
constexpr bool has_eigenbasis = delayopt::compat::is_host_space_v<Space> ||
#if defined(KOKKOS_ENABLE_CUDA)
                                (kCudaLinalg && std::is_same_v<Space, Kokkos::Cuda>);
#else
                                false;
#endif

// GEMM-class flops of one amortized step of a two-sided m x n block, as bench_soap_step.cpp counts them
// (SYRK as m^2 n): accumulate m^2 n + n^2 m, project and project back 2 (2 m^2 n + 2 m n^2), and per
// refresh per side SYMM 2 s^3, Householder QR + forming Q 8/3 s^3, and rotating the first moment back
// and forth 2 (2 m^2 n + 2 m n^2). The CUDA backend runs the same operations (eigenbasis_cuda.hpp).
double step_flops(double m, double n) {
  const double per_step = m * m * n + n * n * m + 2 * (2 * m * m * n + 2 * m * n * n);
  const double refresh =
      2 * m * m * m + 2 * n * n * n + 8.0 / 3 * (m * m * m + n * n * n) + 2 * (2 * m * m * n + 2 * m * n * n);
  return per_step + refresh / kRefresh;
}

/// fp32 GEMM rate (flop/s) on the step's two product shapes, (m x m)(m x n) and (m x n)(n x n).
double host_gemm_rate(std::size_t m, std::size_t n) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto rows = static_cast<Eigen::Index>(m), cols = static_cast<Eigen::Index>(n);
  Mat A = Mat::Random(rows, rows), G = Mat::Random(rows, cols), B = Mat::Random(cols, cols), C(rows, cols),
      D(rows, cols);
  C.noalias() = A * G;  // warm up threads and caches
  Kokkos::Timer t;
  int reps = 0;
  while (t.seconds() < 0.5 || reps < 3) {
    C.noalias() = A * G;
    D.noalias() = C * B;
    ++reps;
  }
  benchmark::DoNotOptimize(D.data());
  return reps * (2.0 * m * m * n + 2.0 * m * n * n) / t.seconds();
}

#if defined(DELAYOPT_ENABLE_CUDA_LINALG) && defined(KOKKOS_ENABLE_CUDA)
/// The same through cuBLAS SGEMM, on the handle (and so the math mode) the optimizer's products use.
double cublas_gemm_rate(const Kokkos::Cuda& space, std::size_t m_, std::size_t n_) {
  using V = Kokkos::View<float*, Kokkos::CudaSpace>;
  const int m = static_cast<int>(m_), n = static_cast<int>(n_);
  V A("bench::A", m_ * m_), G("bench::G", m_ * n_), B("bench::B", n_ * n_), C("bench::C", m_ * n_),
      D("bench::D", m_ * n_);
  Pool pool(2);
  for (const V& v : {A, G, B}) fill_uniform(v, pool, -1, 1);
  auto blas = delayopt::linalg::cuda::Handles::on(space.cuda_stream()).blas;
  const auto pair = [&] {  // column-major C = A G, D = C B
    delayopt::linalg::cuda::gemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, m, 1.f, A.data(), m, G.data(), m, 0.f, C.data(),
                                 m);
    delayopt::linalg::cuda::gemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, n, 1.f, C.data(), m, B.data(), n, 0.f, D.data(),
                                 m);
  };
  pair();  // warm-up: cuBLAS loads its kernels lazily
  space.fence();
  Kokkos::Timer t;
  int reps = 0;
  while (t.seconds() < 0.5 || reps < 3) {
    for (int i = 0; i < 8; ++i) pair();  // several per fence: the sync would otherwise cost ~10% at 1024
    space.fence();
    reps += 8;
  }
  return reps * (2.0 * m * m * n + 2.0 * m * n * n) / t.seconds();
}
#endif

/// Measured once per shape and process: Google Benchmark calls a benchmark function several times
/// (iteration estimate, repetitions), and half a second of GEMMs per call would dominate a device run.
template <class Space>
double gemm_rate([[maybe_unused]] const Space& space, std::size_t m, std::size_t n) {
  static std::map<std::pair<std::size_t, std::size_t>, double> cache;
  auto it = cache.find({m, n});
  if (it != cache.end()) return it->second;
  double rate = 0;
  if constexpr (delayopt::compat::is_host_space_v<Space>) {
    rate = host_gemm_rate(m, n);
  } else {
#if defined(DELAYOPT_ENABLE_CUDA_LINALG) && defined(KOKKOS_ENABLE_CUDA)
    rate = cublas_gemm_rate(space, m, n);
#endif
  }
  return cache[{m, n}] = rate;
}

/// `blocks` fp32 blocks of rows x cols with uniform values, and SOAP with the given batching, its
/// basis initialized and one refresh period run: cuSOLVER's lazily loaded kernels and its workspace
/// set-up are then out of the timed iterations (bench_soap_step.cpp initializes with two updates).
template <class Space>
struct SoapFixture {
  using T = float;
  Space space;
  delayopt::ParamSet<T, Space> params, grads;
  delayopt::SOAP opt;
  delayopt::SOAP::State<T, Space> state;

  static std::vector<delayopt::BlockShape> shapes(int blocks, std::size_t m, std::size_t n) {
    std::vector<delayopt::BlockShape> out;
    for (int b = 0; b < blocks; ++b) {
      std::string name = "W";  // not "W" + ...: GCC 12 -Wrestrict false positive
      name += std::to_string(b);
      out.push_back({name, 2, m, n});
    }
    return out;
  }

  SoapFixture(int blocks, std::size_t m, std::size_t n, std::size_t batch, std::size_t qr)
      : params(shapes(blocks, m, n)),
        grads(shapes(blocks, m, n)),
        opt({.basis = {.refresh_every = kRefresh, .batch_max_side = batch, .batch_qr_max_side = qr},
             .moment = {.beta2 = 0.99},
             .schedule = {.lr = 1e-4}}) {
    Kokkos::Random_XorShift64_Pool<Space> pool(3);
    for (int b = 0; b < blocks; ++b) {
      Kokkos::fill_random(params.flat(b), pool, T(-1), T(1));
      Kokkos::fill_random(grads.flat(b), pool, T(-1), T(1));
    }
    state = opt.init(space, params);
    const int warmup = delayopt::compat::is_host_space_v<Space> ? 2 : 2 + kRefresh;
    for (int i = 0; i < warmup; ++i) opt.update(space, params, grads, state);
    space.fence();
  }
};

/// Args: blocks, rows, cols, batch_max_side, batch_qr_max_side. One block: gemm_bound_* as above.
/// Several blocks of one shape (a model of repeated layers): per_block_us, and the same blocks with
/// batch_max_side 0 (one by one) and = side (one batched group) are registered side by side.
template <class Space>
void BM_DeviceSOAPStep(benchmark::State& bs) {
  const auto blocks = static_cast<int>(bs.range(0));
  const auto m = static_cast<std::size_t>(bs.range(1)), n = static_cast<std::size_t>(bs.range(2));
  SoapFixture<Space> f(blocks, m, n, static_cast<std::size_t>(bs.range(3)), static_cast<std::size_t>(bs.range(4)));
  auto& space = f.space;
  auto& params = f.params;
  auto& grads = f.grads;
  auto& state = f.state;
  const auto& opt = f.opt;
  double total_s = 0;
  for (auto _ : bs) {
    // Any kRefresh consecutive updates hold exactly one refresh, whatever the phase.
    const double t = timed(space, [&] {
      for (int i = 0; i < kRefresh; ++i) opt.update(space, params, grads, state);
    });
    bs.SetIterationTime(t / kRefresh);
    total_s += t;
  }
  if (delayopt::basis::KroneckerEigen::failures(state.basis) != 0) bs.SkipWithError("a factorization failed");

  const double step_s = total_s / (static_cast<double>(bs.iterations()) * kRefresh);
  const double flops = blocks * step_flops(static_cast<double>(m), static_cast<double>(n));
  bs.counters["GFLOPs"] = flops / step_s / 1e9;
  bs.counters["per_block_us"] = step_s / blocks * 1e6;
  bs.counters["batched_groups"] = static_cast<double>(state.basis.groups.size());
  bs.counters["state_MiB"] = static_cast<double>(delayopt::SOAP::state_bytes(state)) / 1048576.0;
  if (blocks == 1) {
    const double rate = gemm_rate(space, m, n);
    const double bound_s = flops / rate;
    bs.counters["gemm_GFLOPs"] = rate / 1e9;
    bs.counters["gemm_bound_s"] = bound_s;
    bs.counters["gemm_bound_ratio"] = step_s / bound_s;
  }
}

enum class SoapPart : int { accumulate, project, elementwise, refresh };

/// One part of the step, as BM_SOAPPart in bench_soap_step.cpp: the factor update, both per-step
/// projections, the element-wise passes (Adam's fused step moves the same bytes), or one refresh of
/// both sides with the moments' bookkeeping. Args as BM_DeviceSOAPStep, then the part.
template <class Space>
void BM_DeviceSOAPPart(benchmark::State& bs) {
  using T = float;
  using Ops = delayopt::basis::detail::EigenbasisOps<T, Space>;
  using Set = delayopt::ParamSet<T, Space>;
  SoapFixture<Space> f(static_cast<int>(bs.range(0)), static_cast<std::size_t>(bs.range(1)),
                       static_cast<std::size_t>(bs.range(2)), static_cast<std::size_t>(bs.range(3)),
                       static_cast<std::size_t>(bs.range(4)));
  auto& st = f.state.basis;
  auto work = Set::zeros_like(f.params);
  const delayopt::Adam adam({.schedule = {.lr = 1e-4}});
  auto adam_state = adam.init(f.space, f.params);
  const auto settings = delayopt::basis::KroneckerEigen::settings({}, 0.9, 0.99);
  const auto part = static_cast<SoapPart>(bs.range(5));
  const auto run = [&] {
    switch (part) {
      case SoapPart::accumulate:
        Ops::accumulate(f.space, st, f.grads, 0.99);
        break;
      case SoapPart::project:
        delayopt::basis::KroneckerEigen::project(f.space, st, f.grads, work);
        delayopt::basis::KroneckerEigen::project_back(f.space, st, work);
        break;
      case SoapPart::elementwise:
        adam.update(f.space, f.params, f.grads, adam_state);
        break;
      case SoapPart::refresh:
        Ops::refresh(f.space, st, settings, {&f.state.moments[0]}, {&f.state.moments[1]}, nullptr);
        break;
    }
  };
  run();  // the part's own first-call costs (kernel loading) out of the timing
  for (auto _ : bs) bs.SetIterationTime(timed(f.space, run));
  if (delayopt::basis::KroneckerEigen::failures(st) != 0) bs.SkipWithError("a factorization failed");
}

template <class Space>
void register_soap() {
  if constexpr (has_eigenbasis<Space>) {
    const auto add = [](const std::string& name, std::int64_t blocks, std::int64_t m, std::int64_t n,
                        std::int64_t batch, std::int64_t qr) {
      benchmark::RegisterBenchmark(("BM_DeviceSOAPStep/fp32/" + name).c_str(), BM_DeviceSOAPStep<Space>)
          ->Args({blocks, m, n, batch, qr})
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    };
    // One large block: above the default batch_max_side, so one by one as before batching existed.
    const delayopt::basis::KroneckerEigen::Hyper defaults{};
    const auto batch = static_cast<std::int64_t>(defaults.batch_max_side);
    const auto qr = static_cast<std::int64_t>(defaults.batch_qr_max_side);
    for (auto [m, n] : {std::pair{1024, 1024}, std::pair{4096, 1024}})
      add(std::to_string(m) + "x" + std::to_string(n), 1, m, n, batch, qr);
    // Repeated layers of 64Ki-4M parameters per shape: one by one (batch_max_side 0) and one batched
    // group with the default batch_qr_max_side; beside its cut-off (128), the other QR choice.
    for (auto [blocks, side] : {std::pair{64, 32}, std::pair{32, 64}, std::pair{16, 128}, std::pair{8, 256},
                                std::pair{4, 512}, std::pair{4, 1024}}) {
      const std::string shape = std::to_string(blocks) + "x" + std::to_string(side) + "sq";
      add(shape + "/one_by_one", blocks, side, side, 0, 0);
      add(shape + "/batched", blocks, side, side, side, qr);
      if (side == 128) add(shape + "/batched_cusolver_qr", blocks, side, side, side, 0);
      if (side == 256) add(shape + "/batched_qr", blocks, side, side, side, side);
    }
    // Where a step's time goes: one large block, and 64 small ones one by one and batched.
    const char* part_names[] = {"accumulate", "project+back", "elementwise", "refresh"};
    struct Case {
      const char* name;
      std::int64_t blocks, m, n, batch, qr;
    };
    for (const Case& c : {Case{"1024x1024", 1, 1024, 1024, batch, qr}, Case{"4096x1024", 1, 4096, 1024, batch, qr},
                          Case{"64x32sq/one_by_one", 64, 32, 32, 0, 0}, Case{"64x32sq/batched", 64, 32, 32, 32, qr}})
      for (int p = 0; p < 4; ++p)
        benchmark::RegisterBenchmark(("BM_DeviceSOAPPart/" + std::string(part_names[p]) + "/" + c.name).c_str(),
                                     BM_DeviceSOAPPart<Space>)
            ->Args({c.blocks, c.m, c.n, c.batch, c.qr, p})
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond)
            ->Iterations(p == static_cast<int>(SoapPart::refresh) ? 5 : 20);
    benchmark::AddCustomContext("gemm_reference",
                                delayopt::compat::is_host_space_v<Space> ? "Eigen sgemm" : "cuBLAS SGEMM");
  } else {
    benchmark::AddCustomContext("soap", "not registered: no eigenbasis backend for this space");
  }
}

void register_adam() {
  // 16M and 64M elements in one block (M = 2^20), and 256 blocks of 64Ki: one launch must cover them all.
  const std::vector<std::pair<std::int64_t, std::int64_t>> sets{{1, 1 << 24}, {1, 1 << 26}, {256, 1 << 16}};
  const auto add = [&](const char* type, const char* check, auto fn, NonFinitePolicy policy,
                       const std::string& bench = "BM_DeviceAdamStep/") {
    for (auto [blocks, size] : sets)
      benchmark::RegisterBenchmark((bench + type + "/" + check).c_str(), fn, policy)
          ->Args({blocks, size})
          ->ArgNames({"blocks", "n"})
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
  };
  using delayopt::Adam, delayopt::NAdam;
  add("fp32", "checked", BM_DeviceMomentStep<Adam, float>, NonFinitePolicy::skip_step);
  add("fp32", "unchecked", BM_DeviceMomentStep<Adam, float>, NonFinitePolicy::unchecked);
  add("fp64", "checked", BM_DeviceMomentStep<Adam, double>, NonFinitePolicy::skip_step);
  // NAdam streams the same bytes; its coefficients add the mu-product loop (~55 factors once the
  // run is past ~55 steps), which every thread of a team evaluates at the chunk's start.
  add("fp32", "checked", BM_DeviceMomentStep<NAdam, float>, NonFinitePolicy::skip_step, "BM_DeviceNAdamStep/");
  add("fp32", "unchecked", BM_DeviceMomentStep<NAdam, float>, NonFinitePolicy::unchecked, "BM_DeviceNAdamStep/");
}

std::string device_name() {
#if defined(KOKKOS_ENABLE_CUDA)
  if constexpr (std::is_same_v<E, Kokkos::Cuda>) {
    cudaDeviceProp prop{};
    int dev = 0;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess) return prop.name;
  }
#endif
  return "host";
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard kokkos(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_adam();
  register_soap<E>();

  constexpr int v = KOKKOS_VERSION;  // e.g. 40601
  const auto part = [](int x) { return std::to_string(x); };
  benchmark::AddCustomContext("kokkos_version", part(v / 10000) + "." + part(v / 100 % 100) + "." + part(v % 100));
  benchmark::AddCustomContext("execution_space", E::name());
  benchmark::AddCustomContext("concurrency", std::to_string(E().concurrency()));
  benchmark::AddCustomContext("device", device_name());
  for (const char* name : {"OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES"})
    if (const char* val = std::getenv(name)) benchmark::AddCustomContext(name, val);

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
