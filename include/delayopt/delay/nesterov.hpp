/// \file delayopt/delay/nesterov.hpp
/// \brief Asynchronous Nesterov look-ahead (Ajanthan et al., "Nesterov Method for Asynchronous
/// Pipeline Parallel Optimization", ICML 2025, arXiv 2505.01099), with the base optimizer's
/// increment in place of the gradient step:
///
///   d_t = w_t - w_{t-1},   w_{t+1} = w_t + gamma d_t + (1 - gamma) Delta_t
/// where Delta_t is the moment policy's increment from the stale gradient (for SGD, -lr g). The
/// paper's form is w_{t+1} = w_t + d_t - lr (1 - gamma) grad f(w_{t-tau} + d_{t-tau}) with
/// d_t = gamma (w_t - w_{t-1}): as gamma -> 1 the stale gradient's weight shrinks and the look-ahead
/// follows the drift the delay causes. Per-stage momentum (the paper's adaptive option):
/// gamma_i = gamma + tau_i (gamma_max - gamma) / stages when `stages` > 0, for the delays
/// tau_i = 0 .. stages - 1 of a `stages`-stage pipeline, so gamma <= gamma_i < gamma_max. A delay of
/// `stages` or more is refused (invalid_hyperparameter from update(), before anything changes): the
/// policy was set up for fewer stages, and extrapolating gamma_i past 1 would turn (1 - gamma_i)
/// negative and the step into an ascent. gamma_max >= gamma is required when `stages` > 0. One slot
/// (d). Weight space is basis-free, so the look-ahead is the same with every basis. The paper's
/// experiments run this as torch NAdam with beta1 = 0.99: that is moment::NAdam (Lookahead::torch,
/// its default).
#pragma once

#include "delayopt/core/hyper.hpp"
#include "delayopt/delay/none.hpp"

#include <string>

namespace delayopt::delay {

/// Asynchronous Nesterov look-ahead around the moment policy's increment, with optional per-stage
/// gamma (docs/policies.md, "delay::Nesterov": w_{t+1} = w_t + gamma d_t + (1 - gamma) Delta_t).
struct Nesterov : None {
  static constexpr const char* name = "delay::Nesterov";
  static constexpr bool is_none = false;
  static constexpr int slots = 1;

  struct Hyper {
    double gamma = 0.9;
    /// > 0: per-stage gamma rising with the stage's delay (0 .. stages - 1) towards gamma_max.
    int stages = 0;
    /// >= gamma when stages > 0 (unused otherwise).
    double gamma_max = 0.99;
    void validate() const {
      hyper::require_unit_interval(name, "gamma", gamma);
      hyper::require_unit_interval(name, "gamma_max", gamma_max);
      hyper::require_nonnegative(name, "stages", stages);
      if (stages > 0)
        hyper::require_in(name, "gamma_max", gamma_max, gamma, hyper::bound::closed, 1.0, hyper::bound::open);
    }
  };
  template <class T>
  struct Coeffs {
    T gamma, one_minus_gamma;
  };
  /// Host only (Optimizer::update calls it before enqueueing): throws invalid_hyperparameter for a
  /// delay outside [0, stages) under per-stage momentum.
  template <class T>
  static Coeffs<T> coeffs(const Hyper& h, const StepContext& ctx) {
    if (h.stages > 0 && (ctx.tau < 0 || ctx.tau >= h.stages))
      throw invalid_hyperparameter(std::string(name) + ": tau = " + std::to_string(ctx.tau) + " is outside [0, " +
                                   std::to_string(h.stages) +
                                   "): per-stage momentum was set up for stages = " + std::to_string(h.stages) +
                                   ", whose delays are 0 .. " + std::to_string(h.stages - 1));
    const double g = h.stages > 0 ? h.gamma + ctx.tau * (h.gamma_max - h.gamma) / h.stages : h.gamma;
    return {static_cast<T>(g), static_cast<T>(1.0 - g)};
  }
  template <class T, class Slots>
  KOKKOS_FORCEINLINE_FUNCTION static T finalize(const Coeffs<T>& c, T p_old, T p_new, Slots& s) {
    const T p = p_old + c.gamma * s[0] + c.one_minus_gamma * (p_new - p_old);
    s[0] = p - p_old;
    return p;
  }
};

}  // namespace delayopt::delay
