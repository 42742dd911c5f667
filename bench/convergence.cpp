// delayopt_convergence: iterations to a target loss under gradient delay, per method, delay and seed.
//
//   delayopt_convergence --problem mlp --stages 1,4,16 --seeds 1,2,3
//       --methods adam,nesterov,rot-cov-bi,rot-cov-bi+nesterov --json mlp.json
//   delayopt_convergence --problem kron-lstsq --tau 0,4,16 --methods adam,rot-cov-bi
//
// Problems (docs/convergence.md):
//  - quadratic / kron-lstsq: one block, the gradient applied at step t taken at the weights of step
//    t - tau (weight stashing: w_0 before training started), optional gradient noise;
//  - mlp: a residual MLP split into P pipeline stages; the gradient of step t is taken in a network
//    whose stage-s layers sit at their version from P-1-s steps ago, each stage applies it to its
//    current weights with its own optimizer (stashing on), or the backward uses the current weights
//    (stashing off). Fresh minibatches every step; the target is a relative held-out loss.
// The learning rate is tuned per (method, delay, seed) on --lr-grid; each record keeps the best.
#include <cli_checks.hpp>
#include <delayopt/delayopt.hpp>
#include <json_file.hpp>
#include <method_registry.hpp>

#include <CLI/CLI.hpp>
#include <Eigen/Dense>
#include <nlohmann/json.hpp>
#include <unsupported/Eigen/KroneckerProduct>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

using E = Kokkos::DefaultHostExecutionSpace;
using Set = delayopt::ParamSet<double, E>;
using Method = delayopt::tools::AnyMethod<double, E>;
using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::VectorXd;

Mat random_orthogonal(int n, std::mt19937& gen) {
  std::normal_distribution<double> normal;
  Mat a(n, n);
  for (int i = 0; i < a.size(); ++i) a.data()[i] = normal(gen);
  return Mat(Eigen::HouseholderQR<Mat>(a).householderQ());
}

/// kappa^(-i/(n-1)), i = 0..n-1: log-evenly spaced from 1 down to 1/kappa.
Vec log_spectrum(int n, double kappa) {
  Vec d(n);
  for (int i = 0; i < n; ++i) d(i) = std::pow(kappa, -double(i) / std::max(n - 1, 1));
  return d;
}

Eigen::Map<Mat> as_mat(const Set& s, std::size_t i) {
  const auto& sh = s.shape(i);
  return {s.flat(i).data(), static_cast<Eigen::Index>(sh.rows), static_cast<Eigen::Index>(sh.cols)};
}

struct Outcome {
  std::optional<int> iters;
  double final_loss = std::numeric_limits<double>::infinity();
  double sec_per_step = 0;
};

/// Stops a run: target reached, diverged, or past `limit` (the best iteration count found so far
/// on the lr grid, so losing learning rates stop early).
struct Stop {
  double target;
  int limit;
};

/// Records the relative loss of step `it`; true when the run should stop (target reached, or the
/// loss non-finite or above `diverged`).
bool record(Outcome& out, double rel, int it, const Stop& stop, double diverged) {
  out.final_loss = rel;
  if (rel <= stop.target) {
    out.iters = it;
    return true;
  }
  return !std::isfinite(rel) || rel > diverged;
}

/// Wall time per step of a run that ended after step `it` (at most stop.limit steps ran).
void set_sec_per_step(Outcome& out, std::chrono::steady_clock::time_point t0, int it, const Stop& stop) {
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.sec_per_step = sec / std::max(1, std::min(it, stop.limit));
}

// ---- single-block problems --------------------------------------------------------------------

/// f(W) = 1/2 tr((W - W*)^T A (W - W*) B) (Hessian B (x) A, rotated and ill-conditioned), with
/// gradient noise A^{1/2} Z B^{1/2} * noise (shaped like the Hessian, as minibatch noise of a
/// least-squares loss is) or Z * noise (isotropic). `quadratic` is the cols = 1 case (B = 1).
struct Quadratic {
  int rows, cols;
  double noise;
  bool isotropic = false;
  Mat A, B, A_half, B_half, W_star, W0, U, V;
  std::mt19937 gen;

  Quadratic(int r, int c, double kappa, double noise_, unsigned seed, bool isotropic_ = false)
      : rows(r), cols(c), noise(noise_), isotropic(isotropic_), gen(seed) {
    U = random_orthogonal(r, gen);
    V = random_orthogonal(c, gen);
    const Vec a = log_spectrum(r, kappa), b = log_spectrum(c, c > 1 ? std::sqrt(kappa) : 1.0);
    A = U * a.asDiagonal() * U.transpose();
    B = V * b.asDiagonal() * V.transpose();
    A_half = U * a.cwiseSqrt().asDiagonal() * U.transpose();
    B_half = V * b.cwiseSqrt().asDiagonal() * V.transpose();
    std::normal_distribution<double> normal;
    W_star.resize(r, c);
    W0.resize(r, c);
    for (int i = 0; i < r * c; ++i) W_star.data()[i] = normal(gen), W0.data()[i] = normal(gen);
  }
  double loss(const Mat& W) const {
    const Mat D = W - W_star;
    return 0.5 * (D.transpose() * A * D * B).trace();
  }
  Mat gradient(const Mat& W) {
    Mat G = A * (W - W_star) * B;
    if (noise > 0) {
      std::normal_distribution<double> normal;
      Mat Z(rows, cols);
      for (int i = 0; i < Z.size(); ++i) Z.data()[i] = normal(gen);
      if (isotropic)
        G += noise * Z;
      else
        G += noise * A_half * Z * B_half;
    }
    return G;
  }
  /// The Hessian in the row-major vec(W) (A (x) B) and the basis of the Kronecker factors'
  /// eigenvectors, U (x) V, that a rotated method converges to.
  Mat hessian() const { return Eigen::kroneckerProduct(A, B); }
  Mat factor_basis() const { return Eigen::kroneckerProduct(U, V); }
};

Outcome run_single(Quadratic prob, const std::string& name, const delayopt::tools::MethodOptions& mo, int tau,
                   Stop stop) {
  Set params({{"W", prob.cols > 1 ? 2 : 1, static_cast<std::size_t>(prob.rows), static_cast<std::size_t>(prob.cols)}});
  as_mat(params, 0) = prob.W0;
  auto grads = Set::zeros_like(params), predicted = Set::zeros_like(params);
  auto opts = mo;
  opts.rotate_vectors = true;  // the quadratic is one vector block: rotate it
  Method m = delayopt::tools::make_method(name, opts, E(), params);
  std::vector<Set> ring;  // the last tau + 1 weight versions (stashing)
  for (int k = 0; k <= tau; ++k) ring.push_back(params.clone(E()));
  const double f0 = prob.loss(prob.W0);
  const auto t0 = std::chrono::steady_clock::now();
  Outcome out;
  int it = 1;
  for (; it <= stop.limit; ++it) {
    // Slot k % (tau + 1) holds w_k; step `it` needs w_{it-1-tau} (w_0 before training started),
    // whose slot is it % (tau + 1), and then stores w_it there.
    const Set& stale = ring[it % (tau + 1)];
    const Set* at = &stale;
    if (m.predicts()) {  // PipeMare: take the gradient at the weights predicted tau steps ahead
      m.predict(E(), stale, tau, predicted);
      E().fence();
      at = &predicted;
    }
    as_mat(grads, 0) = prob.gradient(as_mat(*at, 0));
    m.step(E(), params, grads, {.tau = tau}, &stale);
    ring[it % (tau + 1)].assign(E(), params);  // same space instance: ordered after the step
    E().fence();
    if (record(out, prob.loss(as_mat(params, 0)) / f0, it, stop, 1e6)) break;
  }
  set_sec_per_step(out, t0, it, stop);
  return out;
}

// ---- the pipelined residual MLP ---------------------------------------------------------------

/// tanh through Eigen's vectorized exp (std::tanh is scalar and was 70% of the MLP's time):
/// 1 - 2 / (e^{2x} + 1), exact to rounding in double, saturating correctly at +-1.
template <class Derived>
Mat fast_tanh(const Eigen::MatrixBase<Derived>& z) {
  return (1.0 - 2.0 / ((2.0 * z.array()).exp() + 1.0)).matrix();
}

struct MlpShape {
  int layers = 16, width = 24, batch = 32, holdout = 512, eval_every = 25;
  double kappa = 100, teacher_scale = 1.0, init_scale = 0.5;
};

/// h_{l+1} = h_l + 0.5 tanh(W_l h_l), l = 0..L-1, loss 1/(2B) ||h_L - y||^2 with y from a teacher of
/// the same architecture; inputs x = S^{1/2} z with S rotated and condition number kappa.
struct Mlp {
  MlpShape shape;
  Mat input_half;  // S^{1/2}
  std::vector<Mat> teacher, init;
  Mat x_held, y_held;

  /// Minibatch k of the stream (x, teacher(x)): every method and learning rate sees the same
  /// batches, generated once.
  const std::pair<Mat, Mat>& batch(std::size_t k) const {
    while (batches_.size() <= k) {
      Mat x = inputs(shape.batch, data_gen_);
      Mat y = forward_teacher(x);
      batches_.emplace_back(std::move(x), std::move(y));
    }
    return batches_[k];
  }

 private:
  mutable std::mt19937 data_gen_;
  mutable std::deque<std::pair<Mat, Mat>> batches_;

 public:
  Mlp(const MlpShape& s, unsigned seed) : shape(s), data_gen_(seed * 7919u + 17u) {
    std::mt19937 gen(seed);
    const int n = s.width;
    const Mat U = random_orthogonal(n, gen);
    Vec spec = log_spectrum(n, s.kappa);
    spec *= n / spec.sum();  // mean eigenvalue 1
    input_half = U * spec.cwiseSqrt().asDiagonal() * U.transpose();
    std::normal_distribution<double> normal;
    auto random_layer = [&](double scale) {
      Mat w(n, n);
      for (int i = 0; i < w.size(); ++i) w.data()[i] = normal(gen) * scale / std::sqrt(double(n));
      return w;
    };
    for (int l = 0; l < s.layers; ++l) teacher.push_back(random_layer(s.teacher_scale));
    for (int l = 0; l < s.layers; ++l) init.push_back(random_layer(s.init_scale));
    x_held = inputs(s.holdout, gen);
    y_held = forward_teacher(x_held);
  }
  Mat inputs(int count, std::mt19937& gen) const {
    std::normal_distribution<double> normal;
    Mat z(shape.width, count);
    for (int i = 0; i < z.size(); ++i) z.data()[i] = normal(gen);
    return input_half * z;
  }
  Mat forward_teacher(Mat h) const {
    for (const auto& w : teacher) h += 0.5 * fast_tanh(w * h);
    return h;
  }
  /// Held-out loss of the network whose layer l is layer(l).
  template <class Layer>
  double held_loss(Layer layer) const {
    Mat h = x_held;
    for (int l = 0; l < shape.layers; ++l) h += 0.5 * fast_tanh(layer(l) * h);
    return 0.5 * (h - y_held).squaredNorm() / shape.holdout;
  }
  /// Minibatch gradient: forward through fwd(l); the backward through the same weights
  /// (same_weights: stashing) or recomputed with bwd(l) (the current weights, no stashing). grad(l)
  /// receives dLoss/dW_l.
  template <class Fwd, class Bwd, class Grad>
  double gradient(const Mat& x, const Mat& y, Fwd fwd, bool same_weights, Bwd bwd, Grad grad) const {
    const int L = shape.layers;
    std::vector<Mat> h(L + 1), t(L);
    h[0] = x;
    for (int l = 0; l < L; ++l) {
      t[l] = fast_tanh(fwd(l) * h[l]);
      h[l + 1] = h[l] + 0.5 * t[l];
    }
    Mat d = (h[L] - y) / double(x.cols());
    const double loss = 0.5 * (h[L] - y).squaredNorm() / double(x.cols());
    for (int l = L - 1; l >= 0; --l) {
      const auto& w = bwd(l);
      if (!same_weights) t[l] = fast_tanh(w * h[l]);
      const Mat s = (d.array() * 0.5 * (1.0 - t[l].array().square())).matrix();
      grad(l) = s * h[l].transpose();
      d += w.transpose() * s;
    }
    return loss;
  }
};

struct MlpRun {
  int stages;
  bool stashing;
  /// Linear learning-rate warmup over this many steps (0: none).
  int warmup;
  /// Per stage: how the stage's rotated basis refreshes (empty: every mo.refresh_every steps).
  std::vector<std::int64_t> refresh_shares;
  std::int64_t refresh_window = 0;
  /// > 0: NAdam's beta1 per stage, base + tau_s (0.99 - base) / P (AsyncPP's adaptive momentum).
  double stage_momentum = 0;
};

Outcome run_mlp(const Mlp& mlp, const std::string& name, delayopt::tools::MethodOptions mo, const MlpRun& cfg,
                Stop stop) {
  const int L = mlp.shape.layers, P = cfg.stages, n = mlp.shape.width;
  struct Stage {
    int first, count, tau;
    Set params, grads;
    std::vector<Set> ring;  // forward weights (stashed, or predicted) of the last tau + 1 steps
    std::optional<Method> method;
  };
  std::vector<Stage> st(P);
  std::vector<std::pair<int, int>> where(L);  // layer -> (stage, block)
  for (int s = 0; s < P; ++s) {
    auto& g = st[s];
    g.first = s * L / P;
    g.count = (s + 1) * L / P - g.first;
    g.tau = P - 1 - s;
    std::vector<delayopt::BlockShape> shapes;
    for (int k = 0; k < g.count; ++k) {
      std::string name = "W";  // appended, not "W" + ...: GCC 12 warns falsely (-Wrestrict) on the latter
      name += std::to_string(g.first + k);
      shapes.push_back({std::move(name), 2, std::size_t(n), std::size_t(n)});
      where[g.first + k] = {s, k};
    }
    g.params = Set(shapes);
    for (int k = 0; k < g.count; ++k) as_mat(g.params, k) = mlp.init[g.first + k];
    g.grads = Set::zeros_like(g.params);
    for (int k = 0; k <= g.tau; ++k) g.ring.push_back(g.params.clone(E()));
    auto o = mo;
    if (!cfg.refresh_shares.empty()) {
      o.refresh_window = cfg.refresh_window;
      o.refreshes_per_window = cfg.refresh_shares[s];
    }
    if (cfg.stage_momentum > 0) o.nadam_beta1 = cfg.stage_momentum + g.tau * (0.99 - cfg.stage_momentum) / P;
    g.method.emplace(delayopt::tools::make_method(name, o, E(), g.params));
  }
  // Eigen maps of one step's weights for every layer: forward (stashed or predicted), current.
  std::vector<Eigen::Map<Mat>> fwd, cur, grad;
  const auto layer_now = [&](int l) { return as_mat(st[where[l].first].params, where[l].second); };
  const double f0 = mlp.held_loss(layer_now);
  Outcome out;
  const auto t0 = std::chrono::steady_clock::now();
  int it = 1;
  for (; it <= stop.limit; ++it) {
    fwd.clear();
    cur.clear();
    grad.clear();
    for (int l = 0; l < L; ++l) {
      auto& g = st[where[l].first];
      // Slot it % (tau + 1) holds the stage's forward weights from step it - 1 - tau.
      fwd.push_back(as_mat(g.ring[it % (g.tau + 1)], where[l].second));
      cur.push_back(as_mat(g.params, where[l].second));
      grad.push_back(as_mat(g.grads, where[l].second));
    }
    const auto& [x, y] = mlp.batch(static_cast<std::size_t>(it - 1));
    mlp.gradient(
        x, y, [&](int l) -> const Eigen::Map<Mat>& { return fwd[l]; }, cfg.stashing,
        [&](int l) -> const Eigen::Map<Mat>& { return cfg.stashing ? fwd[l] : cur[l]; },
        [&](int l) -> Eigen::Map<Mat>& { return grad[l]; });
    const double ramp = cfg.warmup > 0 ? std::min(1.0, double(it) / cfg.warmup) : 1.0;
    for (auto& g : st) {
      // DC-ASGD compares with the weights the forward used (its stash).
      g.method->step(E(), g.params, g.grads, {.step = it - 1, .tau = g.tau, .lr_scale = ramp},
                     &g.ring[it % (g.tau + 1)]);
      if (g.method->predicts())  // PipeMare: the next forward runs on weights predicted tau ahead
        g.method->predict(E(), g.params, g.tau, g.ring[it % (g.tau + 1)]);
      else
        g.ring[it % (g.tau + 1)].assign(E(), g.params);
    }
    E().fence();
    if ((it % mlp.shape.eval_every == 0 || it == stop.limit) &&
        record(out, mlp.held_loss(layer_now) / f0, it, stop, 1e3))
      break;
  }
  set_sec_per_step(out, t0, it, stop);
  return out;
}

// ---- misalignment probe ------------------------------------------------------------------------

/// ||H||_{1,1} / tr H, exactly.
double l11_ratio(const Mat& H) { return H.cwiseAbs().sum() / H.trace(); }

/// The same for H seen in the orthonormal basis Q (columns = basis vectors).
double exact_ratio(const Mat& H, const Mat& Q) { return l11_ratio(Q.transpose() * H * Q); }

/// The eigenbasis U (x) V of H's Kronecker factors by partial traces, A_ik = sum_j H_(ij),(kj) and
/// B_jl = sum_i H_(ij),(il) (row-major vec W, W rows x cols): exactly H's eigenbasis when
/// H = A (x) B, and otherwise the Kronecker basis of the factors K-FAC would estimate.
Mat partial_trace_basis(const Mat& H, int rows, int cols) {
  Mat A = Mat::Zero(rows, rows), B = Mat::Zero(cols, cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      for (int k = 0; k < rows; ++k) A(i, k) += H(i * cols + j, k * cols + j);
      for (int l = 0; l < cols; ++l) B(j, l) += H(i * cols + j, i * cols + l);
    }
  return Eigen::kroneckerProduct(Eigen::SelfAdjointEigenSolver<Mat>(A).eigenvectors(),
                                 Eigen::SelfAdjointEigenSolver<Mat>(B).eigenvectors());
}

/// ||H||_{1,1} / tr H of the quadratic's Hessian in the coordinates and in the Kronecker factors'
/// eigenbasis (what a rotated method converges to).
void probe_single(const Quadratic& q, nlohmann::json& out) {
  const Mat H = q.hessian(), Q = q.factor_basis();
  const auto n = static_cast<std::size_t>(H.rows());
  const delayopt::probe::Hvp hvp = [&](const delayopt::probe::Vector& v, delayopt::probe::Vector& r) {
    Eigen::Map<Vec>(r.data(), n) = H * Eigen::Map<const Vec>(v.data(), n);
  };
  delayopt::probe::Vector qv(Q.data(), Q.data() + Q.size());
  const auto before = delayopt::probe::misalignment(n, hvp);
  const auto after = delayopt::probe::misalignment(n, delayopt::probe::rotated(hvp, qv, n));
  const double exact = l11_ratio(H);
  const double exact_after = exact_ratio(H, Q), exact_pt = exact_ratio(H, partial_trace_basis(H, q.rows, q.cols));
  std::printf(
      "probe: ||H||_11 / tr H = %.3f (exact %.3f) in the coordinates, %.3f (exact %.3f) in the factors' "
      "eigenbasis, exact %.3f in the eigenbasis of H's partial traces\n",
      before.ratio, exact, after.ratio, exact_after, exact_pt);
  out = {{"before", before.ratio},
         {"exact_before", exact},
         {"after", after.ratio},
         {"exact_after", exact_after},
         {"exact_partial_trace", exact_pt}};
}

/// The same for the MLP's first layer: the Hessian of the held-out loss in W_0 by finite differences
/// of gradients. At the initial weights, the Cauchy estimate with the basis from L = E[G G^T],
/// R = E[G^T G] over 64 minibatch gradients (what a rotated method starts from); then, from the whole
/// Hessian (n^2 HVPs), the exact ratios and the eigenvalue range there and at the teacher's weights
/// (a minimum: loss 0), where the gradients vanish and the basis is that of H's partial traces.
/// Away from a minimum the Hessian can be indefinite, which the ratio does not show by itself. The
/// exact part needs n^2 HVPs and an n^2 x n^2 matrix: it is skipped for layers above 64 x 64.
void probe_mlp(const Mlp& mlp, nlohmann::json& out) {
  const int n = mlp.shape.width, L = mlp.shape.layers;
  std::vector<Mat> w = mlp.init, g(L);
  auto grad0 = [&](const Mat& x, const Mat& y) {
    mlp.gradient(
        x, y, [&](int l) -> const Mat& { return w[l]; }, true, [&](int l) -> const Mat& { return w[l]; },
        [&](int l) -> Mat& { return g[l]; });
    return g[0];
  };
  const auto N = static_cast<std::size_t>(n * n);
  // Layer 0's HVP with every other layer at `at`'s weights.
  auto hvp_at = [&](const std::vector<Mat>& at) {
    const std::vector<Mat>* base = &at;
    return delayopt::probe::hvp_from_gradients(
        [&, base](const delayopt::probe::Vector& v, delayopt::probe::Vector& r) {
          w = *base;
          w[0] = Eigen::Map<const Mat>(v.data(), n, n);
          const Mat g0 = grad0(mlp.x_held, mlp.y_held);
          r.assign(g0.data(), g0.data() + g0.size());
        },
        delayopt::probe::Vector(at[0].data(), at[0].data() + N));
  };
  // The whole Hessian, column by column, symmetrized (finite differences are not exactly symmetric).
  auto hessian = [&](const delayopt::probe::Hvp& hvp) {
    Mat H(N, N);
    delayopt::probe::Vector e(N, 0.0), col;
    for (std::size_t i = 0; i < N; ++i) {
      e[i] = 1;
      hvp(e, col);
      e[i] = 0;
      H.col(static_cast<Eigen::Index>(i)) = Eigen::Map<const Vec>(col.data(), static_cast<Eigen::Index>(N));
    }
    return Mat(0.5 * (H + H.transpose()));
  };
  const auto hvp = hvp_at(mlp.init);
  const auto before = delayopt::probe::misalignment(N, hvp, 200);
  std::mt19937 gen(12345);
  Mat Lf = Mat::Zero(n, n), Rf = Mat::Zero(n, n);
  w = mlp.init;
  for (int k = 0; k < 64; ++k) {
    const Mat x = mlp.inputs(mlp.shape.batch, gen), y = mlp.forward_teacher(x);
    const Mat G = grad0(x, y);
    Lf += G * G.transpose();
    Rf += G.transpose() * G;
  }
  const Mat U = Eigen::SelfAdjointEigenSolver<Mat>(Lf).eigenvectors(),
            V = Eigen::SelfAdjointEigenSolver<Mat>(Rf).eigenvectors();
  const Mat Q = Eigen::kroneckerProduct(U, V);
  delayopt::probe::Vector qv(Q.data(), Q.data() + Q.size());
  const auto after = delayopt::probe::misalignment(N, delayopt::probe::rotated(hvp, qv, N), 200);
  std::printf("probe (layer 0 at init): ||H||_11 / tr H = %.3f in the coordinates, %.3f in the L/R eigenbasis\n",
              before.ratio, after.ratio);
  out = {{"before", before.ratio}, {"after", after.ratio}};

  constexpr std::size_t kMaxExact = 64 * 64;
  if (N > kMaxExact) {
    std::printf("probe (layer 0): exact ratios skipped, the layer has %zu > %zu weights\n", N, kMaxExact);
    return;
  }
  for (const std::vector<Mat>* at : {&mlp.init, &mlp.teacher}) {
    const bool init = at == &mlp.init;
    const Mat H = hessian(hvp_at(*at));
    const Vec eig = Eigen::SelfAdjointEigenSolver<Mat>(H, Eigen::EigenvaluesOnly).eigenvalues();
    nlohmann::json e = {{"coords", l11_ratio(H)},
                        {"partial_trace", exact_ratio(H, partial_trace_basis(H, n, n))},
                        {"min_eig", eig.minCoeff()},
                        {"max_eig", eig.maxCoeff()}};
    char lr_part[64] = "";
    if (init) {
      e["lr_basis"] = exact_ratio(H, Q);
      std::snprintf(lr_part, sizeof lr_part, "%.3f in the L/R eigenbasis, ", e["lr_basis"].get<double>());
    }
    std::printf(
        "probe (layer 0 at %s), exact: %.3f in the coordinates, %s%.3f in the eigenbasis of H's partial "
        "traces; eigenvalues in [%.3g, %.3g]\n",
        init ? "init" : "the teacher, a minimum", e["coords"].get<double>(), lr_part, e["partial_trace"].get<double>(),
        eig.minCoeff(), eig.maxCoeff());
    out[init ? "init" : "teacher"] = e;
  }
}

}  // namespace

int main(int argc, char* argv[]) {
  CLI::App app{"delayopt convergence study: iterations to a target relative loss under gradient delay"};
  std::string problem = "quadratic", json_file, stashing = "on", refresh_split, noise_shape = "hessian";
  int dim = 64, rows = 16, cols = 8, max_iters = 20000;
  double kappa = 100, noise = 0, target = -1;
  MlpShape shape;
  std::vector<int> taus, stages, seeds{1};
  std::vector<std::string> methods{"adam", "pipedream-lr", "nesterov", "rot-cov-bi", "rot-cov-bi+nesterov"};
  std::vector<double> lrs;
  delayopt::tools::MethodOptions mo;
  std::int64_t refresh_budget = 0, refresh_window = 100, anneal_steps = 0;
  bool probe = false;
  int warmup = 0;
  double stage_momentum = 0;
  std::string lr_search = "outward";
  double lr_min = 1e-4;
  app.add_option("--problem", problem, "quadratic, kron-lstsq or mlp")
      ->check(CLI::IsMember({"quadratic", "kron-lstsq", "mlp"}))
      ->capture_default_str();
  app.add_option("--dim", dim, "quadratic: dimension")->capture_default_str()->check(delayopt::cli::positive);
  app.add_option("--rows", rows, "kron-lstsq: rows of W")->capture_default_str()->check(delayopt::cli::positive);
  app.add_option("--cols", cols, "kron-lstsq: columns of W")->capture_default_str()->check(delayopt::cli::positive);
  app.add_option("--kappa", kappa, "condition number of the Hessian (quadratic) or input covariance (mlp)")
      ->capture_default_str()
      ->check(delayopt::cli::number_in(1, true, 1e12, true));
  app.add_option("--noise", noise, "quadratic/kron-lstsq: gradient noise scale")
      ->capture_default_str()
      ->check(delayopt::cli::non_negative);
  app.add_option("--noise-shape", noise_shape,
                 "quadratic/kron-lstsq: hessian (A^1/2 Z B^1/2, like minibatch noise) or isotropic (Z)")
      ->capture_default_str()
      ->check(CLI::IsMember({"hessian", "isotropic"}));
  app.add_option("--layers", shape.layers, "mlp: residual layers")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--width", shape.width, "mlp: width")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--batch", shape.batch, "mlp: minibatch size")->capture_default_str()->check(delayopt::cli::positive);
  app.add_option("--teacher-scale", shape.teacher_scale, "mlp: teacher weights ~ N(0, (scale^2) / width)")
      ->capture_default_str()
      ->check(delayopt::cli::non_negative);
  app.add_option("--init-scale", shape.init_scale, "mlp: initial student weights ~ N(0, (scale^2) / width)")
      ->capture_default_str()
      ->check(delayopt::cli::non_negative);
  app.add_option("--eval-every", shape.eval_every, "mlp: steps between held-out evaluations")
      ->capture_default_str()
      ->check(delayopt::cli::positive);
  app.add_option("--tau", taus, "single-block problems: gradient delays (default 0,4,16)")
      ->delimiter(',')
      ->check(delayopt::cli::non_negative);
  app.add_option("--stages", stages, "mlp: pipeline depths P; stage s sees delay P-1-s (default 1,4,16)")
      ->delimiter(',')
      ->check(CLI::Range(1, 4096));
  app.add_option("--stashing", stashing, "mlp: on = forward and backward on the same stashed weights")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--seeds", seeds, "seeds")->delimiter(',')->capture_default_str()->check(delayopt::cli::finite);
  app.add_option("--methods", methods, delayopt::tools::method_names())->delimiter(',')->capture_default_str();
  app.add_option("--target", target, "relative loss to reach (default 1e-3; mlp: held-out, 0.05)")
      ->check(delayopt::cli::number_in(0, false, 1, false));
  app.add_option("--max-iters", max_iters, "give up after this many steps")
      ->capture_default_str()
      ->check(delayopt::cli::positive);
  auto* grid_opt = app.add_option("--lr-grid", lrs, "learning rates tried per (method, delay, seed)")
                       ->delimiter(',')
                       ->check(delayopt::cli::positive);
  app.add_option("--lr-min", lr_min,
                 "without --lr-grid: the quarter-decade grid runs from this rate (rounded to the grid) to 1e-1")
      ->capture_default_str()
      ->check(delayopt::cli::number_in(1e-12, true, 0.1, true))
      ->excludes(grid_opt);
  app.add_option("--lr-search", lr_search,
                 "full: every grid point; outward: from the previous delay's best, each direction until two "
                 "misses in a row (assumes iterations are unimodal in log lr)")
      ->check(CLI::IsMember({"full", "outward"}))
      ->capture_default_str();
  app.add_option("--refresh-every", mo.refresh_every, "rotated bases: steps between refreshes")
      ->check(delayopt::cli::positive)
      ->capture_default_str();
  app.add_option("--basis-beta", mo.basis_beta,
                 "rotated bases: EMA factor of the Kronecker factors L, R (< 0: the moment's beta2)")
      ->capture_default_str()
      ->check(delayopt::cli::number_in(-delayopt::cli::inf, false, 1, false));
  app.add_option("--refresh-budget", refresh_budget,
                 "mlp: refreshes per --refresh-window shared by all stages (replaces --refresh-every)")
      ->check(delayopt::cli::positive);
  app.add_option("--refresh-window", refresh_window, "mlp: window of the refresh budget")
      ->capture_default_str()
      ->check(delayopt::cli::positive);
  app.add_option("--refresh-split", refresh_split, "mlp: how the budget is split across stages")
      ->check(CLI::IsMember({"proportional", "uniform", "inverse"}));
  app.add_option("--stage-momentum", stage_momentum,
                 "mlp, NAdam methods: per-stage beta1 = BASE + tau_s (0.99 - BASE) / P (AsyncPP's adaptive "
                 "momentum; 0: beta1 0.99 everywhere)")
      ->check(delayopt::cli::number_in(0, true, 0.99, true));
  app.add_option("--nadam-beta1", mo.nadam_beta1, "NAdam methods: beta1, in [0, 1) (default 0.99)")
      ->check(delayopt::cli::number_in(0, true, 1, false))
      ->excludes("--stage-momentum");
  app.add_option("--nadam-momentum-decay", mo.nadam_momentum_decay,
                 "NAdam methods: psi of torch's look-ahead mu_t = beta1 (1 - 0.5 * 0.96^(psi t)), in [0, 1] "
                 "(default 0.004)")
      ->check(delayopt::cli::number_in(0, true, 1, true));
  app.add_option("--adam-beta1", mo.adam_beta1, "Adam methods: beta1, in [0, 1) (default 0.9)")
      ->check(delayopt::cli::number_in(0, true, 1, false));
  app.add_option("--beta2", mo.beta2,
                 "Adam and NAdam methods: beta2, in [0, 1) (default 0.999; soap 0.95); also the L, R EMA "
                 "factor of rotated bases unless --basis-beta is given")
      ->check(delayopt::cli::number_in(0, true, 1, false));
  app.add_option("--warmup", warmup, "mlp: linear learning-rate warmup steps")
      ->capture_default_str()
      ->check(delayopt::cli::non_negative);
  app.add_option("--anneal-steps", anneal_steps, "PipeDream-LR's T_c (default: --max-iters)")
      ->check(delayopt::cli::positive);
  app.add_option("--dcasgd-lambda", mo.dcasgd_lambda, "DC-ASGD's lambda")
      ->capture_default_str()
      ->check(delayopt::cli::non_negative);
  app.add_option("--wp-gamma", mo.wp_gamma, "weight prediction: EMA factor of the weight velocity, in [0, 1)")
      ->capture_default_str()
      ->check(delayopt::cli::number_in(0, true, 1, false));
  app.add_option("--nag-gamma", mo.nag_gamma,
                 "nag (delay::Nesterov): momentum of the weight-space look-ahead w+ = w + gamma d + (1 - gamma) "
                 "Delta, in [0, 1)")
      ->capture_default_str()
      ->check(delayopt::cli::number_in(0, true, 1, false));
  app.add_option("--clip", mo.clip,
                 "clip each stage's gradient to this global L2 norm before its step (0: off; the paper's code "
                 "uses 1)")
      ->capture_default_str()
      ->check(delayopt::cli::non_negative);
  app.add_flag("--probe", probe, "also print the misalignment ||H||_11 / tr H before and after rotation");
  app.add_option("--json", json_file, "write {\"records\": [...]} here");
  // Kokkos first: it takes its own --kokkos-* flags out of argv, which CLI11 would reject.
  Kokkos::ScopeGuard guard(argc, argv);
  CLI11_PARSE(app, argc, argv);
  // Where the outward search starts at the first delay setting: the middle of --lr-grid; on the
  // built-in grid 10^-2.5 (or its lowest point, if --lr-min is above that), so extending the grid
  // downwards leaves the search path unchanged.
  std::size_t first_start = lrs.size() / 2;
  if (lrs.empty()) {
    // Quarter decades 1e-4 * 10^(k/4): extending the grid below 1e-4 leaves the points above it unchanged.
    const int k_min = static_cast<int>(std::lround(4.0 * std::log10(lr_min / 1e-4)));
    for (int k = k_min; k <= 12; ++k) lrs.push_back(1e-4 * std::pow(10.0, k / 4.0));
    first_start = static_cast<std::size_t>(std::max(0, 6 - k_min));
  }

  const bool is_mlp = problem == "mlp";
  shape.kappa = kappa;
  auto usage_error = [](const std::string& what) {
    std::fprintf(stderr, "delayopt_convergence: %s\n", what.c_str());
    return 2;
  };
  if (is_mlp && !taus.empty())
    return usage_error("--problem mlp takes --stages (stage s is delayed by P-1-s), not --tau");
  if (!is_mlp && !stages.empty()) return usage_error("--stages applies to --problem mlp; use --tau here");
  if (is_mlp && (noise > 0 || noise_shape != "hessian"))
    return usage_error("--noise and --noise-shape apply to --problem quadratic and kron-lstsq");
  if (!is_mlp && (refresh_budget > 0 || stashing == "off" || stage_momentum > 0 || warmup > 0))
    return usage_error("--refresh-budget, --stashing, --stage-momentum and --warmup apply to --problem mlp");
  if (refresh_budget > 0 && refresh_split.empty()) refresh_split = "proportional";
  if (!refresh_split.empty() && refresh_budget == 0) return usage_error("--refresh-split needs --refresh-budget");
  if (app.count("--refresh-window") > 0 && refresh_budget == 0)
    return usage_error("--refresh-window needs --refresh-budget");
  const auto given = [&](std::initializer_list<const char*> flags) {
    std::string out;
    for (const char* f : flags)
      if (app.count(f) > 0) out += (out.empty() ? "" : ", ") + std::string(f);
    return out;
  };
  if (const auto f = given({"--dim"}); problem != "quadratic" && !f.empty())
    return usage_error(f + " applies to --problem quadratic");
  if (const auto f = given({"--rows", "--cols"}); problem != "kron-lstsq" && !f.empty())
    return usage_error(f + " apply to --problem kron-lstsq");
  if (const auto f = given({"--layers", "--width", "--batch", "--teacher-scale", "--init-scale", "--eval-every"});
      !is_mlp && !f.empty())
    return usage_error(f + " apply to --problem mlp");
  if (taus.empty()) taus = {0, 4, 16};
  if (stages.empty()) stages = {1, 4, 16};
  for (int P : stages)
    if (P > shape.layers)
      return usage_error("--stages " + std::to_string(P) + " exceeds --layers " + std::to_string(shape.layers) +
                         " (each stage needs a layer)");
  // A delay keeps tau + 1 weight copies; one at or past --max-iters never sees a fresh gradient.
  for (int tau : taus)
    if (tau >= max_iters)
      return usage_error("--tau " + std::to_string(tau) + " must be below --max-iters " + std::to_string(max_iters));
  const auto twice = [](const auto& list) {
    for (std::size_t i = 0; i < list.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (list[i] == list[j]) return true;
    return false;
  };
  if (twice(seeds) || twice(methods) || twice(taus) || twice(stages))
    return usage_error("--seeds, --methods, --tau and --stages each list a value at most once");
  // Fail now, not after hours of runs.
  if (!json_file.empty() && !delayopt::tools::can_write_json(json_file))
    return usage_error("cannot write --json " + json_file);
  if (target < 0) target = is_mlp ? 0.05 : 1e-3;
  mo.anneal_steps = anneal_steps > 0 ? anneal_steps : max_iters;
  std::sort(lrs.begin(), lrs.end());
  // Validate every name before any run, so a typo does not surface an hour in; and reject an option
  // that none of the methods reads, which would otherwise do nothing without a word.
  using delayopt::tools::Knob;
  delayopt::tools::MethodReads reads;
  std::string method_list;
  for (const auto& m : methods) try {
      Set probe_set({{"W", 2, 2, 2}});
      reads |= delayopt::tools::make_method(m, mo, E(), probe_set).reads();
      method_list += (method_list.empty() ? "" : ",") + m;
    } catch (const std::exception& e) {
      return usage_error(e.what());
    }
  const std::pair<const char*, Knob> method_options[] = {
      {"--anneal-steps", Knob::anneal_steps},   {"--refresh-every", Knob::refresh}, {"--basis-beta", Knob::basis_beta},
      {"--refresh-budget", Knob::refresh},      {"--stage-momentum", Knob::nadam},  {"--nadam-beta1", Knob::nadam},
      {"--nadam-momentum-decay", Knob::nadam},  {"--adam-beta1", Knob::adam_beta1}, {"--beta2", Knob::beta2},
      {"--dcasgd-lambda", Knob::dcasgd_lambda}, {"--wp-gamma", Knob::wp_gamma},     {"--nag-gamma", Knob::nag_gamma}};
  for (const auto& [flag, knob] : method_options)
    if (app.count(flag) > 0 && !reads.has(knob))
      return usage_error(std::string(flag) + " does nothing for --methods " + method_list + ": it applies to " +
                         delayopt::tools::methods_reading(knob));

  nlohmann::json records = nlohmann::json::array(), probes = nlohmann::json::array();
  const char* delay_key = is_mlp ? "stages" : "tau";
  int name_width = 24;
  for (const auto& m : methods) name_width = std::max(name_width, static_cast<int>(m.size()));
  std::printf("%-*s %6s %5s %8s %9s %11s %10s\n", name_width, "method", delay_key, "seed", "iters", "best lr",
              "final f/f0", "us/step");
  for (int seed : probe ? seeds : std::vector<int>{}) {
    nlohmann::json p;
    if (is_mlp)
      probe_mlp(Mlp(shape, seed), p);
    else
      probe_single(problem == "quadratic" ? Quadratic(dim, 1, kappa, 0, seed) : Quadratic(rows, cols, kappa, 0, seed),
                   p);
    p["seed"] = seed;
    probes.push_back(p);
  }
  std::map<int, Mlp> mlps;                                   // per seed, with its minibatch stream
  std::map<std::pair<std::string, int>, std::size_t> start;  // (method, seed) -> best lr index so far
  for (const auto& method : methods)
    for (int delay : is_mlp ? stages : taus)
      for (int seed : seeds) {
        std::optional<Quadratic> quad;
        MlpRun cfg{delay, stashing == "on", warmup, {}, refresh_window, stage_momentum};
        if (is_mlp) {
          if (!mlps.count(seed)) mlps.emplace(seed, Mlp(shape, seed));
          if (refresh_budget > 0)
            cfg.refresh_shares = delayopt::schedule::split_refresh_budget(
                delay, refresh_budget,
                refresh_split == "uniform"        ? delayopt::schedule::RefreshSplit::uniform
                : refresh_split == "proportional" ? delayopt::schedule::RefreshSplit::proportional
                                                  : delayopt::schedule::RefreshSplit::inverse);
        } else {
          const bool iso = noise_shape == "isotropic";
          quad.emplace(problem == "quadratic" ? Quadratic(dim, 1, kappa, noise, seed, iso)
                                              : Quadratic(rows, cols, kappa, noise, seed, iso));
        }
        Outcome best;
        std::size_t best_i = start.count({method, seed}) ? start[{method, seed}] : first_start;
        std::vector<bool> tried(lrs.size(), false);
        int runs = 0;
        // Returns whether lrs[i] beat the best so far.
        const auto attempt = [&](std::size_t i) {
          tried[i] = true;
          auto o = mo;
          o.lr = lrs[i];
          // Losers stop early: a run must beat the best so far (by one evaluation interval).
          const Stop stop{target, best.iters ? *best.iters - (is_mlp ? shape.eval_every : 1) : max_iters};
          if (stop.limit < 1) return false;
          ++runs;
          const Outcome r =
              is_mlp ? run_mlp(mlps.at(seed), method, o, cfg, stop) : run_single(*quad, method, o, delay, stop);
          const bool better = runs == 1 || (r.iters && (!best.iters || *r.iters < *best.iters)) ||
                              (!r.iters && !best.iters && r.final_loss < best.final_loss);
          if (better) best = r, best_i = i;
          return better;
        };
        try {
          if (lr_search == "full") {
            for (std::size_t i = 0; i < lrs.size(); ++i) attempt(i);
          } else {
            // Outward from the best lr of the previous delay setting (the grid's middle at first):
            // each direction goes on while it improves and gives up after two misses in a row.
            attempt(best_i);
            for (int dir : {+1, -1}) {
              int misses = 0;
              for (auto i = static_cast<std::ptrdiff_t>(best_i) + dir;
                   i >= 0 && i < static_cast<std::ptrdiff_t>(lrs.size()) && misses < 2; i += dir)
                if (!tried[i]) misses = attempt(static_cast<std::size_t>(i)) ? 0 : misses + 1;
            }
          }
        } catch (const std::exception& e) {
          return usage_error(e.what());
        }
        start[{method, seed}] = best_i;
        const double best_lr = lrs[best_i];
        if ((best_lr == lrs.front() || best_lr == lrs.back()) && lrs.size() > 1)
          std::fprintf(stderr,
                       "delayopt_convergence: note: %s %s=%d seed %d: best lr %.3g is at the edge of --lr-grid\n",
                       method.c_str(), delay_key, delay, seed, best_lr);
        nlohmann::json r{{"method", method},
                         {delay_key, delay},
                         {"seed", seed},
                         {"lr", best_lr},
                         {"final_loss", best.final_loss},
                         {"sec_per_step", best.sec_per_step},
                         {"lr_runs", runs}};
        r["iters_to_target"] = best.iters ? nlohmann::json(*best.iters) : nlohmann::json(nullptr);
        records.push_back(r);
        std::printf("%-*s %6d %5d %8s %9.2e %11.3e %10.1f\n", name_width, method.c_str(), delay, seed,
                    best.iters ? std::to_string(*best.iters).c_str() : "-", best_lr, best.final_loss,
                    best.sec_per_step * 1e6);
        std::fflush(stdout);
      }
  if (!json_file.empty()) {
    nlohmann::json doc{{"problem", problem}, {"target", target}, {"records", records}};
    if (is_mlp) {
      doc["stashing"] = stashing == "on";
      doc["layers"] = shape.layers;
      doc["width"] = shape.width;
      doc["batch"] = shape.batch;
      doc["teacher_scale"] = shape.teacher_scale;
      doc["init_scale"] = shape.init_scale;
      if (refresh_budget > 0)
        doc["refresh_budget"] = {{"total", refresh_budget}, {"window", refresh_window}, {"split", refresh_split}};
      else
        doc["refresh_every"] = mo.refresh_every;
    } else {
      doc["noise"] = noise;
      doc["noise_shape"] = noise_shape;
    }
    doc["kappa"] = kappa;
    if (mo.basis_beta >= 0) doc["basis_beta"] = mo.basis_beta;
    doc["dcasgd_lambda"] = mo.dcasgd_lambda;
    doc["wp_gamma"] = mo.wp_gamma;
    doc["nag_gamma"] = mo.nag_gamma;
    if (stage_momentum > 0) doc["stage_momentum"] = stage_momentum;
    if (mo.nadam_beta1 >= 0) doc["nadam_beta1"] = mo.nadam_beta1;
    if (mo.nadam_momentum_decay >= 0) doc["nadam_momentum_decay"] = mo.nadam_momentum_decay;
    if (mo.adam_beta1 >= 0) doc["adam_beta1"] = mo.adam_beta1;
    if (mo.beta2 >= 0) doc["beta2"] = mo.beta2;
    if (mo.clip > 0) doc["clip"] = mo.clip;
    if (probe) doc["probe"] = probes;
    try {
      delayopt::tools::write_json(json_file, doc);
    } catch (const std::runtime_error& e) {
      std::fprintf(stderr, "delayopt_convergence: %s\n", e.what());
      return 1;
    }
    std::printf("wrote %s\n", json_file.c_str());
  }
}
