/// \file delayopt/moment/nadam.hpp
/// \brief NAdam: Adam with a Nesterov look-ahead on the first moment (Dozat 2016), in torch's form
/// (`torch.optim.NAdam`, with its momentum-decay schedule) or optax's (`optax.nadam`, constant mu).
///
///   m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
///   m^ = mu_{t+1} m / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g / (1 - prod_{i<=t} mu_i)
///   p <- p - lr m^ / (sqrt(v / (1 - beta2^t)) + eps)
/// Lookahead::torch: mu_t = beta1 (1 - 0.5 * 0.96^(psi t)), psi = momentum_decay (torch's default
/// 0.004), so the look-ahead weight starts near beta1 / 2 and reaches 0.9 beta1 only after
/// ln 0.2 / (psi ln 0.96) ~ 10^4 steps.
/// Lookahead::constant: mu_t = beta1 (optax). With beta1 = 0.99 and the torch schedule this is the
/// asynchronous-pipeline Nesterov method as Ajanthan et al. (ICML 2025) run it (torch NAdam).
/// Weight decay: the modes of moment::Adam.
#pragma once

#include "delayopt/core/compat.hpp"
#include "delayopt/core/concepts.hpp"
#include "delayopt/core/hyper.hpp"
#include "delayopt/moment/adam.hpp"

#include <cstdint>

namespace delayopt::moment {

/// Adam with a Nesterov look-ahead on the first moment, two slots m and v like Adam, in torch's or
/// optax's form (docs/policies.md, "moment::NAdam").
struct NAdam {
  static constexpr const char* name = "moment::NAdam";
  static constexpr int slots = 2;
  static constexpr SlotKind slot_kinds[slots] = {SlotKind::linear, SlotKind::second_moment};
  using WeightDecay = Adam::WeightDecay;
  enum class Lookahead { torch, constant };  ///< how the look-ahead weight mu_t evolves

  struct Hyper {
    double beta1 = 0.99;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    WeightDecay weight_decay_mode = WeightDecay::decoupled;
    Lookahead lookahead = Lookahead::torch;
    double momentum_decay = 0.004;  ///< psi of Lookahead::torch

    void validate() const {
      hyper::require_unit_interval(name, "beta1", beta1);
      hyper::require_unit_interval(name, "beta2", beta2);
      hyper::require_positive(name, "eps", eps);
      hyper::require_nonnegative(name, "weight_decay", weight_decay);
      hyper::require_nonnegative(name, "momentum_decay", momentum_decay);
    }
  };

  /// The look-ahead weight mu_t of step t (counted from 1).
  KOKKOS_INLINE_FUNCTION static double mu(const Hyper& h, double t) {
    return h.lookahead == Lookahead::constant ? h.beta1
                                              : h.beta1 * (1.0 - 0.5 * compat::pow(0.96, t * h.momentum_decay));
  }

  /// prod_{i=1..t} mu_i. torch keeps it as state; here it is recomputed from t, because the step
  /// counter lives on the device (skipped steps do not advance it). The update only uses 1 - product
  /// and 1 - product * mu_{t+1}, which round to exactly 1 in double once the product is below 2^-54,
  /// so the loop stops there: with the default psi that is ~55 factors (mu_i < 0.6 beta1 for
  /// i < 1300) however long the run. Every GPU thread runs it at its chunk's start, so it is bounded:
  /// a product still above 2^-54 after kLoopFactors factors (a large psi or beta1, where mu_i nears
  /// beta1 early; up to ln 2^-54 / ln beta1 factors, ~3700 for beta1 = 0.99) gets its tail in closed
  /// form instead (tail_log_product).
  KOKKOS_INLINE_FUNCTION static double mu_product(const Hyper& h, std::int64_t t) {
    if (h.lookahead == Lookahead::constant) return compat::pow(h.beta1, static_cast<double>(t));
    const double q = compat::pow(0.96, h.momentum_decay);
    const std::int64_t cap = kLoopFactors, looped = t < cap ? t : cap;
    double p = 1.0, qi = 1.0;
    for (std::int64_t i = 1; i <= looped && p >= 0x1p-54; ++i) {
      qi *= q;  // 0.96^(psi i), within ~i ulp of torch's pow
      p *= h.beta1 * (1.0 - 0.5 * qi);
    }
    if (t == looped || p < 0x1p-54) return p;
    const double n = static_cast<double>(t - looped);  // factors kLoopFactors + 1 .. t
    return p * compat::pow(h.beta1, n) * compat::exp(tail_log_product(q, qi * q, n));
  }
  /// Factors mu_product multiplies out before it switches to the closed-form tail.
  static constexpr std::int64_t kLoopFactors = 64;

  /// sum_{j=0}^{n-1} ln(1 - q^(a+j) / 2) for q in (0, 1], qa = q^a: the logarithm expanded,
  /// -sum_k (1/2)^k / k * q^(a k) (1 - q^(k n)) / (1 - q^k), each geometric sum in closed form; the
  /// terms shrink at least by half per k.
  KOKKOS_INLINE_FUNCTION static double tail_log_product(double q, double qa, double n) {
    double sum = 0.0, half_k = 1.0, qk = 1.0, qak = 1.0;
    for (int k = 1; k <= 80; ++k) {
      half_k *= 0.5;
      qk *= q;
      qak *= qa;
      const double geometric = qk < 1.0 ? qak * (1.0 - compat::pow(q, k * n)) / (1.0 - qk) : qak * n;
      const double term = half_k / k * geometric;
      sum -= term;
      if (term <= 1e-18 * -sum) break;
    }
    return sum;
  }

  template <class T>
  struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2;
    T c_m, c_g;  // m^ = c_m m + c_g g
    T neg_lr, bc2_sqrt, eps, l2, decay;
    bool decay_after;
  };

  template <class T>
  KOKKOS_INLINE_FUNCTION static Coeffs<T> coeffs(const Hyper& h, double lr, std::int64_t t) {
    const double td = static_cast<double>(t);
    const double mu_t = mu(h, td), mu_next = mu(h, td + 1.0);
    const double prod = mu_product(h, t);
    const bool decoupled = h.weight_decay_mode != WeightDecay::l2;
    return Coeffs<T>{static_cast<T>(h.beta1),
                     static_cast<T>(1.0 - h.beta1),
                     static_cast<T>(h.beta2),
                     static_cast<T>(1.0 - h.beta2),
                     static_cast<T>(mu_next / (1.0 - prod * mu_next)),
                     static_cast<T>((1.0 - mu_t) / (1.0 - prod)),
                     static_cast<T>(-lr),
                     static_cast<T>(compat::sqrt(1.0 - compat::pow(h.beta2, td))),
                     static_cast<T>(h.eps),
                     static_cast<T>(decoupled ? 0.0 : h.weight_decay),
                     static_cast<T>(decoupled ? 1.0 - lr * h.weight_decay : 1.0),
                     h.weight_decay_mode == WeightDecay::decoupled_after_update};
  }

  // Weight decay (coupled L2 in `gradient`, decoupled in `apply`) is Adam's.
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T gradient(const Coeffs<T>& c, T g, T p) {
    return Adam::gradient(c, g, p);
  }

  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T direction(const Coeffs<T>& c, T g, Kokkos::Array<T, slots>& s) {
    s[0] = s[0] * c.beta1 + c.one_minus_beta1 * g;
    s[1] = s[1] * c.beta2 + c.one_minus_beta2 * g * g;
    const T m_hat = c.c_m * s[0] + c.c_g * g;
    return c.neg_lr * m_hat / (compat::sqrt(s[1]) / c.bc2_sqrt + c.eps);
  }

  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T apply(const Coeffs<T>& c, T p, T delta) {
    return Adam::apply(c, p, delta);
  }
};

}  // namespace delayopt::moment
