// The CUDA eigenbasis backend against the host (Eigen) backend as oracle: same inputs, a few steps
// across refreshes, in double. Built only with DELAYOPT_ENABLE_CUDA_LINALG and a CUDA Kokkos; runs
// where a GPU is present.
#include "../support/catch.hpp"
#include "../support/helpers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <string>

using namespace delayopt;
using Host = Kokkos::DefaultHostExecutionSpace;
using Dev = Kokkos::Cuda;

namespace {

// Every covariance factor of an eigenbasis state set to I + A A^T / n (A n x n, Gaussian, seeded by
// n), as a restored checkpoint may have it. FullEigen's first factor, and a rank-1 block's, is
// otherwise rank one: its first basis is arbitrary on the null space, and two correct eigensolvers
// then give trajectories that differ at O(lr). From a full-rank start they agree up to rounding.
template <class State>
void full_rank_factors(State& st) {
  const auto fill = [](const auto& f) {
    using V = typename std::decay_t<decltype(f)>::non_const_value_type;
    const std::size_t n = f.extent(0);
    std::mt19937 gen(static_cast<unsigned>(n));
    std::normal_distribution<double> dist;
    std::vector<double> a(n * n);
    for (double& x : a) x = dist(gen);
    auto h = Kokkos::create_mirror_view(f);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        double dot = 0;
        for (std::size_t k = 0; k < n; ++k) dot += a[i * n + k] * a[j * n + k];
        h(i, j) = static_cast<V>((i == j ? 1.0 : 0.0) + dot / double(n));
      }
    Kokkos::deep_copy(f, h);
  };
  for (auto& b : st.basis.blocks) {
    if (b.left) fill(b.L);
    if (b.right) fill(b.R);
  }
}

// The same steps through any optimizer on any space; returns the parameters (on the host) and the
// final state. full_rank: start every eigenbasis factor full rank (full_rank_factors).
template <class T, class Opt>
auto run_steps(const auto& space, auto params, const std::vector<std::vector<T>>& grads, const Opt& opt,
               bool full_rank = false) {
  using E = std::decay_t<decltype(space)>;
  auto g = ParamSet<T, E>::zeros_like(params);
  auto st = opt.init(space, params);
  if constexpr (requires { st.basis.blocks; })
    if (full_rank) full_rank_factors(st);
  for (const auto& gh : grads) {
    delayopt::test::set_values(space, g, gh);
    opt.update(space, params, g, st);
  }
  space.fence();
  return std::pair{delayopt::test::host_values(params), std::move(st)};
}

// `steps` random gradients for `shapes`, each flattened as host_values does (seeds seed, seed + 1, ...).
template <class T>
std::vector<std::vector<T>> random_gradients(const std::vector<BlockShape>& shapes, unsigned steps, unsigned seed) {
  std::vector<std::vector<T>> grads;
  for (unsigned t = 0; t < steps; ++t) {
    ParamSet<T, Host> g(shapes);
    delayopt::test::fill_random(Host(), g, seed + t);
    grads.push_back(delayopt::test::host_values(g));
  }
  return grads;
}

// `count` rank-2 blocks of one shape, named name0, name1, ... (a model's repeated layers).
std::vector<BlockShape> layers(int count, const char* name, std::size_t rows, std::size_t cols) {
  std::vector<BlockShape> out;
  for (int i = 0; i < count; ++i) out.push_back({name + std::to_string(i), 2, rows, cols});
  return out;
}

// The blocks of every part, in order.
std::vector<BlockShape> concat(const std::vector<std::vector<BlockShape>>& parts) {
  std::vector<BlockShape> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// max_i |a_i - b_i|.
template <class T>
double max_abs_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i])));
  return worst;
}

// The block of `shapes` where |a - b| peaks: where a host-vs-device difference sits.
template <class T>
std::string worst_block(const std::vector<BlockShape>& shapes, const std::vector<T>& a, const std::vector<T>& b) {
  std::string name;
  double worst = -1;
  std::size_t at = 0;
  for (const auto& s : shapes) {
    const std::vector<T> x(a.begin() + at, a.begin() + at + s.size()), y(b.begin() + at, b.begin() + at + s.size());
    if (const double d = max_abs_diff(x, y); d > worst) worst = d, name = describe(s);
    at += s.size();
  }
  return name;
}

// Where the inputs come from: parameter and gradient seeds, steps, and whether the factors start full
// rank (full_rank_factors).
struct Inputs {
  unsigned param_seed, grad_seed, steps;
  bool full_rank = false;
};

// opt from the same inputs on the host and on the device: prints the largest difference and its
// block, and checks it against the tolerance of T, the device's batched group count, the refresh
// count and that no factorization failed on either side.
template <class T, class Opt>
void check_against_host(const char* what, const Opt& opt, const std::vector<BlockShape>& shapes, std::size_t groups,
                        Inputs in) {
  constexpr bool dbl = std::is_same_v<T, double>;
  ParamSet<T, Host> ph(shapes);
  delayopt::test::fill_random(Host(), ph, in.param_seed);
  const auto grads = random_gradients<T>(shapes, in.steps, in.grad_seed);
  ParamSet<T, Dev> pd(shapes);
  delayopt::test::set_values(Dev(), pd, delayopt::test::host_values(ph));
  const auto [host, st_host] = run_steps<T>(Host(), ph, grads, opt, in.full_rank);
  const auto [dev, st_dev] = run_steps<T>(Dev(), pd, grads, opt, in.full_rank);
  const double worst = max_abs_diff(host, dev);
  const std::string block = worst_block(shapes, host, dev);
  std::printf("%s %s, %zu batched groups: max |host - cuda| after %u steps = %.3e (in %s)\n", dbl ? "double" : "float",
              what, st_dev.basis.groups.size(), in.steps, worst, block.c_str());
  CHECK(worst <= (dbl ? 1e-10 : 1e-3));
  CHECK(st_dev.basis.groups.size() == groups);
  CHECK(st_dev.basis.refreshes == st_host.basis.refreshes);
  CHECK(basis::KroneckerEigen::failures(st_host.basis) == 0);
  CHECK(basis::KroneckerEigen::failures(st_dev.basis) == 0);
}

}  // namespace

// The gradient-norm reduction (clipping, the non-finite check) runs as one team per chunk on the
// device: its sum, the clipped steps and the skipped NaN step must match the host's.
TEMPLATE_TEST_CASE("CUDA checked and clipped Adam matches the host", "[cuda][adam]", float, double) {
  using T = TestType;
  const std::vector<BlockShape> shapes{{"W", 2, 512, 1024}, {"b", 1, 1000}};
  ParamSet<T, Host> ph(shapes);
  delayopt::test::fill_random(Host(), ph, 3);
  auto grads = random_gradients<T>(shapes, 8, 200);
  grads[3][12345] = std::numeric_limits<T>::quiet_NaN();  // step 4 is skipped, on both
  ParamSet<T, Dev> pd(shapes);
  delayopt::test::set_values(Dev(), pd, delayopt::test::host_values(ph));
  const Adam opt({.schedule = {.lr = 1e-2}, .clip_global_norm = 10.0});  // the norm is ~700: clipped
  const auto [host, st_host] = run_steps<T>(Host(), ph.clone(Host()), grads, opt);
  const auto [dev, st_dev] = run_steps<T>(Dev(), pd, grads, opt);
  const double worst = max_abs_diff(host, dev);
  std::printf("%s Adam, clipped, one NaN step: max |host - cuda| = %.3e\n",
              std::is_same_v<T, double> ? "double" : "float", worst);
  CHECK(worst <= (std::is_same_v<T, double> ? 1e-12 : 1e-5));
  CHECK(Adam::skipped_steps(st_host) == 1);
  CHECK(Adam::skipped_steps(st_dev) == 1);
}

TEMPLATE_TEST_CASE("CUDA eigenbasis backend matches the host backend", "[cuda][soap]", float, double) {
  using T = TestType;
  // Square blocks: the first gradient's factors G G^T and G^T G are then full rank, so the initial
  // eigenbasis is unique up to signs. (A rank-deficient first factor leaves an arbitrary basis of its
  // null space, and two correct eigensolvers then give trajectories that differ at O(lr).)
  const std::vector<BlockShape> shapes{{"W1", 2, 48, 48}, {"W2", 2, 16, 16}, {"b", 1, 40}};
  // batch_max_side 0: each block on its own (SYRK, SYMM, cuSOLVER QR); 128: both blocks batched, with
  // the QR batched too (batch_qr_max_side 64) or per block inside the group (0).
  for (auto [batch, qr] : {std::pair<std::size_t, std::size_t>{0, 0}, {128, 64}, {128, 0}}) {
    const SOAP opt(
        {.basis = {.refresh_every = 5, .batch_max_side = batch, .batch_qr_max_side = qr}, .schedule = {.lr = 1e-3}});
    const std::string what =
        "SOAP, batch_max_side " + std::to_string(batch) + ", batch_qr_max_side " + std::to_string(qr);
    check_against_host<T>(what.c_str(), opt, shapes, batch == 0 ? 0 : 2,
                          {.param_seed = 1, .grad_seed = 100, .steps = 25});
  }
}

// Many blocks of a few shapes, as a model of repeated layers has: the batched groups (one per shape)
// beside a block too large to batch, two-sided and one-sided, Adam and NAdam in the basis.
TEMPLATE_TEST_CASE("CUDA batched eigenbasis groups match the host", "[cuda][soap][batched]", float, double) {
  using T = TestType;
  // Square blocks for two-sided (full-rank first factors, see above); for one-sided only the smaller
  // side rotates, and its factor is full rank.
  const auto square = concat({layers(8, "a", 24, 24), layers(3, "c", 40, 40), {{"big", 2, 160, 160}, {"b", 1, 40}}});
  const auto wide = concat({layers(6, "u", 16, 40), layers(2, "v", 64, 24), {{"b", 1, 40}}});
  const auto compare = [](const char* what, const auto& opt, const std::vector<BlockShape>& shapes,
                          std::size_t groups) {
    check_against_host<T>(what, opt, shapes, groups, {.param_seed = 5, .grad_seed = 400, .steps = 23});
  };
  // 160 x 160 above batch_max_side 128: one by one beside the groups. With the defaults (one-sided
  // below) every rotated block is batched; the bias is not rotated.
  const basis::KroneckerEigen::Hyper every5{.refresh_every = 5, .batch_max_side = 128};
  compare("SOAP, two-sided", SOAP({.basis = every5, .schedule = {.lr = 1e-3}}), square, 2);
  // The same blocks one by one: whether a float difference comes from batching or from the shapes.
  const basis::KroneckerEigen::Hyper unbatched{.refresh_every = 5, .batch_max_side = 0};
  compare("SOAP, two-sided, one by one", SOAP({.basis = unbatched, .schedule = {.lr = 1e-3}}), square, 0);
  compare("rotated NAdam, two-sided", RotatedNAdam({.basis = every5, .schedule = {.lr = 1e-3}}), square, 2);
  const basis::KroneckerEigen::Hyper one_sided{.geometry = basis::Geometry::one_sided, .refresh_every = 5};
  compare("SOAP, one-sided", SOAP({.basis = one_sided, .schedule = {.lr = 1e-3}}), wide, 2);
}

// Non-square two-sided blocks: the smaller side's refresh works in the first s^2 values of each
// larger-side^2 scratch square, so a slice addressed by the wrong side would factor the wrong values.
// Every path must keep every basis orthonormal. (The first factors are rank-deficient here, so host
// and device may pick different null-space bases; orthonormality does not depend on that choice.)
TEST_CASE("CUDA bases stay orthonormal on non-square blocks, on every path", "[cuda][soap][batched]") {
  using T = double;
  const auto shapes = layers(4, "w", 24, 40);
  ParamSet<T, Host> ph(shapes);
  delayopt::test::fill_random(Host(), ph, 13);
  const auto grads = random_gradients<T>(shapes, 12, 600);
  for (auto [batch, qr] : {std::pair<std::size_t, std::size_t>{0, 0}, {128, 64}, {128, 0}}) {
    ParamSet<T, Dev> pd(shapes);
    delayopt::test::set_values(Dev(), pd, delayopt::test::host_values(ph));
    const SOAP opt(
        {.basis = {.refresh_every = 5, .batch_max_side = batch, .batch_qr_max_side = qr}, .schedule = {.lr = 1e-3}});
    const auto [values, st] = run_steps<T>(Dev(), pd, grads, opt);  // refreshes at steps 5 and 10
    double worst = 0;
    for (const auto& b : st.basis.blocks)
      for (const auto& q_dev : {b.QL, b.QR}) {
        const auto q = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), q_dev);
        const int n = static_cast<int>(q.extent(0));
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) {
            double dot = 0;
            for (int k = 0; k < n; ++k) dot += q(k, i) * q(k, j);
            worst = std::max(worst, std::abs(dot - (i == j ? 1.0 : 0.0)));
          }
      }
    std::printf("24 x 40 blocks, batch_max_side %zu, batch_qr_max_side %zu: max |Q^T Q - I| = %.3e\n", batch, qr,
                worst);
    CHECK(worst <= 1e-12);
    CHECK(st.basis.groups.size() == (batch == 0 ? 0u : 1u));
    CHECK(basis::KroneckerEigen::failures(st.basis) == 0);
  }
}

// cuBLAS/cuSOLVER and the factor kernels index a side x side factor with int: a rotated side above
// 46340 is refused before anything is allocated (a 46341 x 2 block holds only 92682 values).
TEST_CASE("CUDA eigenbasis refuses a rotated side whose factor int indices would overflow", "[cuda][soap]") {
  ParamSet<float, Dev> pd({{"tall", 2, 46341, 2, Layout::right}});
  const SOAP wide({.basis = {.max_dim = 50000}, .schedule = {.lr = 1e-3}});
  CHECK_THROWS_AS(wide.init(Dev(), pd), invalid_hyperparameter);
  const SOAP capped({.basis = {.max_dim = 46340}, .schedule = {.lr = 1e-3}});  // the long side stays unrotated
  CHECK_NOTHROW(capped.init(Dev(), pd));
}

// A factor that turns NaN (overflow in a user's gradients, a corrupted restore) makes every refresh
// of that side fail: the batched commit must keep that block's basis and count each failure exactly
// as the one-by-one path does, and leave the other blocks of its group alone.
TEST_CASE("CUDA batched refresh keeps a failed block's basis and counts it", "[cuda][soap][batched]") {
  using T = double;
  const auto shapes = layers(4, "w", 24, 24);
  ParamSet<T, Host> ph(shapes);
  delayopt::test::fill_random(Host(), ph, 9);
  const auto grads = random_gradients<T>(shapes, 20, 500);
  const auto run = [&](std::size_t batch, std::size_t qr) {
    ParamSet<T, Dev> p(shapes);
    delayopt::test::set_values(Dev(), p, delayopt::test::host_values(ph));
    const SOAP opt(
        {.basis = {.refresh_every = 5, .batch_max_side = batch, .batch_qr_max_side = qr}, .schedule = {.lr = 1e-3}});
    auto g = ParamSet<T, Dev>::zeros_like(p);
    auto st = opt.init(Dev(), p);
    for (std::size_t t = 0; t < grads.size(); ++t) {
      if (t == 3) Kokkos::deep_copy(st.basis.blocks[2].L, std::numeric_limits<T>::quiet_NaN());
      delayopt::test::set_values(Dev(), g, grads[t]);
      opt.update(Dev(), p, g, st);
    }
    Dev().fence();
    return std::pair{delayopt::test::host_values(p), basis::KroneckerEigen::failures(st.basis)};
  };
  const auto [one_by_one, failed_one] = run(0, 0);
  const auto [batched, failed_batched] = run(128, 64);
  const auto [batched_solver, failed_batched_solver] = run(128, 0);  // cuSOLVER QR per block in the group
  std::printf("NaN factor: failures one by one %lld, batched %lld, batched with cuSOLVER QR %lld\n",
              static_cast<long long>(failed_one), static_cast<long long>(failed_batched),
              static_cast<long long>(failed_batched_solver));
  // SOAP's steps 5, 10, 15 refresh (its first call only initializes): three failed left sides.
  CHECK(failed_one == 3);
  CHECK(failed_batched == 3);
  CHECK(failed_batched_solver == 3);
  for (T x : batched) REQUIRE(std::isfinite(x));
  for (T x : batched_solver) REQUIRE(std::isfinite(x));
  // Blocks 0, 1, 3 follow the same trajectory on both paths; block 2's kept basis was permuted by
  // NaN keys, whose order the two sorts need not share.
  const std::size_t n = 24 * 24;
  for (std::size_t b : {0u, 1u, 3u}) {
    const std::vector<T> x(one_by_one.begin() + b * n, one_by_one.begin() + (b + 1) * n),
        y(batched.begin() + b * n, batched.begin() + (b + 1) * n),
        z(batched_solver.begin() + b * n, batched_solver.begin() + (b + 1) * n);
    CHECK(max_abs_diff(x, y) <= 1e-10);
    CHECK(max_abs_diff(x, z) <= 1e-10);
  }
}

namespace {

// Steps with gradients tau steps stale: each update gets the parameters of tau steps ago as the
// weights the gradient was taken at (the initial ones for the first tau steps).
template <class T, class Opt>
std::vector<T> run_delayed_steps(const auto& space, auto params, const std::vector<std::vector<T>>& grads,
                                 const Opt& opt, int tau) {
  using E = std::decay_t<decltype(space)>;
  auto g = ParamSet<T, E>::zeros_like(params);
  auto st = opt.init(space, params);
  std::vector<ParamSet<T, E>> history{params.clone(space)};  // history[k]: the weights after k steps
  for (std::size_t t = 0; t < grads.size(); ++t) {
    delayopt::test::set_values(space, g, grads[t]);
    const auto& stale = history[t >= static_cast<std::size_t>(tau) ? t - tau : 0];
    opt.update(space, params, g, st, {.tau = tau}, &stale);
    history.push_back(params.clone(space));
  }
  space.fence();
  return delayopt::test::host_values(params);
}

// The largest |host - cuda| after `steps` delayed steps of opt from the same inputs.
template <class T, class Opt>
double host_vs_cuda_delayed(const Opt& opt, const std::vector<BlockShape>& shapes, unsigned steps, int tau) {
  ParamSet<T, Host> ph(shapes);
  delayopt::test::fill_random(Host(), ph, 7);
  const auto grads = random_gradients<T>(shapes, steps, 300);
  ParamSet<T, Dev> pd(shapes);
  delayopt::test::set_values(Dev(), pd, delayopt::test::host_values(ph));
  const auto host = run_delayed_steps<T>(Host(), ph.clone(Host()), grads, opt, tau);
  const auto dev = run_delayed_steps<T>(Dev(), pd, grads, opt, tau);
  return max_abs_diff(host, dev);
}

// The delayed cases' blocks: a wide matrix and a long vector for the coordinate basis; square blocks
// (full-rank first factors, see above) for the rotated ones.
std::vector<BlockShape> flat_blocks() { return {{"W", 2, 64, 128}, {"b", 1, 1000}}; }
std::vector<BlockShape> square_blocks() { return {{"W1", 2, 48, 48}, {"W2", 2, 16, 16}, {"b", 1, 40}}; }

// Prints and checks one delayed comparison (tau = 3 in every case).
template <class T>
void check_delayed(const char* what, double worst, double tol) {
  std::printf("%s %s, tau = 3: max |host - cuda| = %.3e\n", std::is_same_v<T, double> ? "double" : "float", what,
              worst);
  CHECK(worst <= tol);
}

}  // namespace

// NAdam (its mu-product loop runs per team on the device) and every delay policy, in the coordinate
// basis and inside the eigenbasis, with tau = 3: the device kernels must follow the host's.
TEMPLATE_TEST_CASE("CUDA NAdam and delay policies match the host", "[cuda][delay]", float, double) {
  using T = TestType;
  constexpr bool dbl = std::is_same_v<T, double>;
  const auto flat = flat_blocks(), square = square_blocks();
  const auto check = check_delayed<T>;
  const schedule::Constant lr{.lr = 1e-2};
  const double tol = dbl ? 1e-12 : 1e-5;
  // 120 steps: past the ~55 factors after which the mu product drops below its 2^-54 cut-off.
  check("NAdam", host_vs_cuda_delayed<T>(NAdam({.schedule = lr}), flat, 120, 3), tol);
  using AdamNesterov = Optimizer<basis::Identity, moment::Adam, delay::Nesterov>;
  using AdamWP = Optimizer<basis::Identity, moment::Adam, delay::WeightPrediction>;
  using AdamLR = Optimizer<basis::Identity, moment::Adam, delay::StageLRDiscount>;
  using AdamDC = Optimizer<basis::Identity, moment::Adam, delay::DCASGD>;
  check("Adam + delay::Nesterov", host_vs_cuda_delayed<T>(AdamNesterov({.schedule = lr}), flat, 20, 3), tol);
  check("Adam + delay::WeightPrediction", host_vs_cuda_delayed<T>(AdamWP({.schedule = lr}), flat, 20, 3), tol);
  check("Adam + delay::StageLRDiscount",
        host_vs_cuda_delayed<T>(AdamLR({.delay = {.anneal_steps = 10}, .schedule = lr}), flat, 20, 3), tol);
  check("Adam + delay::DCASGD",
        host_vs_cuda_delayed<T>(AdamDC({.delay = {.lambda = 1.0}, .schedule = lr}), flat, 20, 3), tol);
  // Rotated: refresh every 5, lr 1e-3.
  using RotDC = Optimizer<basis::KroneckerEigen, moment::Adam, delay::DCASGD>;
  using RotWP = Optimizer<basis::KroneckerEigen, moment::Adam, delay::WeightPrediction>;
  const double rot_tol = dbl ? 1e-10 : 1e-3;
  const basis::KroneckerEigen::Hyper every5{.refresh_every = 5};
  check("rotated NAdam",
        host_vs_cuda_delayed<T>(RotatedNAdam({.basis = every5, .schedule = {.lr = 1e-3}}), square, 25, 3), rot_tol);
  check("rotated Adam + DCASGD in the basis",
        host_vs_cuda_delayed<T>(RotDC({.basis = every5, .delay = {.lambda = 1.0}, .schedule = {.lr = 1e-3}}), square,
                                25, 3),
        rot_tol);
  check("rotated Adam + weight prediction",
        host_vs_cuda_delayed<T>(RotWP({.basis = every5, .schedule = {.lr = 1e-3}}), square, 25, 3), rot_tol);
}

// moment::Momentum (torch.optim.SGD) heavy ball with dampening and L2 weight decay, and its Nesterov
// form, in the coordinate basis and inside the eigenbasis (its buffer is a linear slot, rotated on
// each refresh), with tau = 3: the device kernels must follow the host's.
TEMPLATE_TEST_CASE("CUDA SGD momentum matches the host", "[cuda][momentum][delay]", float, double) {
  using T = TestType;
  constexpr bool dbl = std::is_same_v<T, double>;
  const auto flat = flat_blocks(), square = square_blocks();
  const auto check = check_delayed<T>;
  const moment::Momentum::Hyper heavy{.momentum = 0.9, .dampening = 0.5, .weight_decay = 1e-2};
  const moment::Momentum::Hyper nesterov{.momentum = 0.9, .nesterov = true, .weight_decay = 1e-2};
  const double tol = dbl ? 1e-12 : 1e-5;
  check("SGD heavy ball", host_vs_cuda_delayed<T>(SGD({.moment = heavy, .schedule = {.lr = 1e-2}}), flat, 20, 3), tol);
  check("SGD Nesterov", host_vs_cuda_delayed<T>(SGD({.moment = nesterov, .schedule = {.lr = 1e-2}}), flat, 20, 3), tol);
  // Rotated: refresh every 5, lr 1e-3.
  using RotSGD = Optimizer<basis::KroneckerEigen, moment::Momentum, delay::None>;
  const double rot_tol = dbl ? 1e-10 : 1e-3;
  const basis::KroneckerEigen::Hyper every5{.refresh_every = 5};
  check("rotated SGD heavy ball",
        host_vs_cuda_delayed<T>(RotSGD({.basis = every5, .moment = heavy, .schedule = {.lr = 1e-3}}), square, 25, 3),
        rot_tol);
  check("rotated SGD Nesterov",
        host_vs_cuda_delayed<T>(RotSGD({.basis = every5, .moment = nesterov, .schedule = {.lr = 1e-3}}), square, 25, 3),
        rot_tol);
}

// basis::FullEigen (each block one left side of rows * cols), Rank1::full (a bias's left side) and
// the paper's ordering (accumulate and refresh before the update) through each device path: one by
// one, batched groups with the batched QR, and with cuSOLVER's QR per block inside a group.
TEMPLATE_TEST_CASE("CUDA full eigenbasis, rank-1 sides and the paper's ordering match the host",
                   "[cuda][soap][batched]", float, double) {
  using T = TestType;
  const auto compare = [](const char* what, const auto& opt, const std::vector<BlockShape>& shapes,
                          std::size_t groups) {
    check_against_host<T>(what, opt, shapes, groups,
                          {.param_seed = 11, .grad_seed = 700, .steps = 25, .full_rank = true});
  };
  // FullEigen: three 48-element blocks and a 40-element bias batch by size; 576 elements stay on
  // their own (above batch_max_side 512).
  const auto full = concat({layers(3, "a", 6, 8), {{"b", 1, 40}, {"big", 2, 24, 24}}});
  for (auto [batch, qr] : {std::pair<std::size_t, std::size_t>{0, 0}, {512, 128}, {512, 0}}) {
    const std::size_t groups = batch == 0 ? 0 : 2;
    compare("FullEigen Adam",
            FullEigenAdam({.basis = {.refresh_every = 5, .batch_max_side = batch, .batch_qr_max_side = qr},
                           .schedule = {.lr = 1e-3}}),
            full, groups);
    compare(
        "SOAP, Rank1::full",
        SOAP({.basis =
                  {.refresh_every = 5, .rank1 = basis::Rank1::full, .batch_max_side = batch, .batch_qr_max_side = qr},
              .schedule = {.lr = 1e-3}}),
        square_blocks(), batch == 0 ? 0 : 3);
    compare("SOAP, paper ordering",
            SOAP({.basis = {.ordering = basis::Ordering::paper,
                            .refresh_every = 5,
                            .batch_max_side = batch,
                            .batch_qr_max_side = qr},
                  .schedule = {.lr = 1e-3}}),
            square_blocks(), batch == 0 ? 0 : 2);
  }
}

// Checkpoints on the device: the restored state continues like the saved one, and the same file
// loads on the host with the same moments and counters (the failure count folds into one number).
TEMPLATE_TEST_CASE("CUDA checkpoint: a restored state continues like the saved one; the file loads on the host",
                   "[cuda][checkpoint]", float, double) {
  using T = TestType;
  const std::vector<BlockShape> shapes{{"W1", 2, 48, 48}, {"W2", 2, 16, 40}, {"b", 1, 40}};
  const SOAP opt({.basis = {.refresh_every = 3, .batch_max_side = 128}, .schedule = {.lr = 1e-3}});
  Dev space;
  ParamSet<T, Dev> params(shapes);
  delayopt::test::fill_random(space, params, 1);
  auto grads = ParamSet<T, Dev>::zeros_like(params);
  const auto steps = [&](ParamSet<T, Dev>& p, auto& st, unsigned from, unsigned to) {
    for (unsigned t = from; t < to; ++t) {
      delayopt::test::fill_random(space, grads, 500 + t, 0.1);
      opt.update(space, p, grads, st);
    }
    space.fence();
  };
  auto state = opt.init(space, params);
  steps(params, state, 0, 7);
  std::stringstream file;
  io::save_state(file, space, opt, params, state);
  const std::string bytes = file.str();
  const auto saved_moments = delayopt::test::state_values(state);

  std::istringstream in(bytes);
  auto restored = io::load_state(in, space, opt, params);
  auto copy = params.clone(space);
  steps(params, state, 7, 12);
  steps(copy, restored, 7, 12);
  const double worst = max_abs_diff(delayopt::test::host_values(copy), delayopt::test::host_values(params));
  std::printf("%s SOAP on CUDA, restored at step 7: max |restored - saved run| after 12 steps = %.3e\n",
              std::is_same_v<T, double> ? "double" : "float", worst);
  CHECK(worst == 0);
  CHECK(restored.basis.refreshes == state.basis.refreshes);

  ParamSet<T, Host> on_host(shapes);
  std::istringstream in_host(bytes);
  const auto host_state = io::load_state(in_host, Host(), opt, on_host);
  CHECK(delayopt::test::bitwise_equal(delayopt::test::state_values(host_state), saved_moments));
  CHECK(host_state.calls == 7);
  CHECK(basis::KroneckerEigen::failures(host_state.basis) == 0);
}
