/// \file delayopt/probe/misalignment.hpp
/// \brief How far a Hessian is from diagonal: ||H||_{1,1} / tr(H), estimated from Hessian-vector
/// products (basis-rotation paper, arXiv 2602.03515, Sec. 4: the misalignment that makes stale
/// coordinate-wise updates point the wrong way).
///
/// For a symmetric positive semi-definite H the ratio is >= 1, with 1 exactly when H is diagonal.
/// Estimator: with z of i.i.d. standard Cauchy entries, (H z)_i is Cauchy with scale sum_j |H_ij|
/// (Cauchy laws are 1-stable), and the median of |Cauchy(s)| is s; so the median over samples of
/// |(H z)_i|, summed over i, estimates ||H||_{1,1} (relative standard error of one row's median:
/// about 1.57 / sqrt(samples)). tr(H) is Hutchinson's estimate E[r^T H r] with Rademacher r (exact
/// for a diagonal H). The HVP can be exact or a finite difference of gradients (hvp_from_gradients).
/// Away from a minimum a network's Hessian can be indefinite: tr H then sums eigenvalues of both
/// signs and the ratio mixes misalignment with negative curvature. Probe near a minimum, or pass a
/// Gauss-Newton product, when the ratio is to be read as misalignment alone.
#pragma once

#include "delayopt/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace delayopt::probe {

using Vector = std::vector<double>;
/// out = H v
using Hvp = std::function<void(const Vector& v, Vector& out)>;

/// Result of probe::misalignment(): ||H||_{1,1}, tr H and their ratio (docs/policies.md,
/// "Misalignment probe").
struct Misalignment {
  double l11 = 0;    ///< estimated sum_ij |H_ij|
  double trace = 0;  ///< (estimated) tr H
  double ratio = 0;  ///< l11 / trace: 1 for a diagonal H
};

namespace detail {

/// Throws shape_mismatch("<where>: <what> has <size> values, expected <n>") unless x.size() == n:
/// the probe reads n values of each vector a user callback returns or is given.
inline void require_length(const Vector& x, std::size_t n, const char* where, const char* what) {
  if (x.size() != n)
    throw shape_mismatch(std::string(where) + ": " + what + " has " + std::to_string(x.size()) + " values, expected " +
                         std::to_string(n));
}

}  // namespace detail

/// Estimates ||H||_{1,1} / tr(H) for an n x n H from `samples` Cauchy HVPs (and as many Rademacher
/// HVPs for the trace). Throws shape_mismatch if `hvp` returns other than n values.
inline Misalignment misalignment(std::size_t n, const Hvp& hvp, int samples = 400, unsigned seed = 0) {
  if (n == 0 || samples < 1) throw invalid_input("probe::misalignment: need n > 0 and samples > 0");
  std::mt19937_64 gen(seed);
  std::cauchy_distribution<double> cauchy(0.0, 1.0);
  std::bernoulli_distribution coin(0.5);
  std::vector<Vector> abs_rows(n, Vector(samples));
  Vector z(n), hz(n);
  double trace = 0;
  for (int s = 0; s < samples; ++s) {
    for (auto& x : z) x = cauchy(gen);
    hvp(z, hz);
    detail::require_length(hz, n, "probe::misalignment", "the HVP's output");
    for (std::size_t i = 0; i < n; ++i) abs_rows[i][s] = std::abs(hz[i]);
    for (auto& x : z) x = coin(gen) ? 1.0 : -1.0;
    hvp(z, hz);
    detail::require_length(hz, n, "probe::misalignment", "the HVP's output");
    for (std::size_t i = 0; i < n; ++i) trace += z[i] * hz[i];
  }
  Misalignment m;
  for (auto& row : abs_rows) {
    std::nth_element(row.begin(), row.begin() + samples / 2, row.end());
    m.l11 += row[samples / 2];
  }
  m.trace = trace / samples;
  if (!(m.trace > 0)) throw invalid_input("probe::misalignment: the estimated trace is not positive (H not PSD?)");
  m.ratio = m.l11 / m.trace;
  return m;
}

/// The same H seen in an orthonormal basis Q (n x n, row-major, columns = basis vectors):
/// H~ = Q^T H Q, whose HVP is Q^T H (Q v). Throws shape_mismatch for a v or an HVP output of other
/// than n values.
inline Hvp rotated(const Hvp& hvp, const Vector& Q, std::size_t n) {
  if (Q.size() != n * n) throw shape_mismatch("probe::rotated: Q is not n x n");
  return [hvp, Q, n](const Vector& v, Vector& out) {
    detail::require_length(v, n, "probe::rotated", "the direction");
    Vector qv(n, 0.0), hqv(n);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j) qv[i] += Q[i * n + j] * v[j];
    hvp(qv, hqv);
    detail::require_length(hqv, n, "probe::rotated", "the HVP's output");
    out.assign(n, 0.0);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j) out[j] += Q[i * n + j] * hqv[i];
  };
}

/// Central finite difference of a gradient: H v ~ (g(w + h v) - g(w - h v)) / (2 h), h scaled to |v|.
/// Throws shape_mismatch for a v or a gradient of other than w.size() values.
inline Hvp hvp_from_gradients(std::function<void(const Vector& w, Vector& g)> grad, Vector w, double h = 1e-4) {
  return [grad = std::move(grad), w = std::move(w), h](const Vector& v, Vector& out) {
    detail::require_length(v, w.size(), "probe::hvp_from_gradients", "the direction");
    double norm = 0;
    for (double x : v) norm += x * x;
    const double step = h / std::max(std::sqrt(norm), 1e-300);
    Vector wp(w), wm(w), gp(w.size()), gm(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) wp[i] += step * v[i], wm[i] -= step * v[i];
    grad(wp, gp);
    detail::require_length(gp, w.size(), "probe::hvp_from_gradients", "the gradient");
    grad(wm, gm);
    detail::require_length(gm, w.size(), "probe::hvp_from_gradients", "the gradient");
    out.resize(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) out[i] = (gp[i] - gm[i]) / (2 * step);
  };
}

}  // namespace delayopt::probe
