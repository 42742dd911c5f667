/// \file delayopt/delay/stage_lr_discount.hpp
/// \brief PipeDream-LR / PipeMare learning-rate rescheduling (Yang et al., MLSys 2021; the
/// PipeDream-LR baseline of arXiv 2602.03515).
///
///   lr_i(t) = lr(t) / tau_i^(1 - min(t / T_c, 1)),   untouched for tau_i = 0
/// A stage with delay tau starts at lr / tau and the discount anneals geometrically to none by step
/// T_c = anneal_steps. It multiplies the schedule; tau is StepContext::tau.
#pragma once

#include "delayopt/core/hyper.hpp"
#include "delayopt/delay/none.hpp"

#include <algorithm>
#include <cmath>

namespace delayopt::delay {

/// PipeDream-LR's learning-rate discount lr / tau^(1 - min(t / T_c, 1)) for a stage with delay tau
/// (docs/policies.md, "delay::StageLRDiscount").
struct StageLRDiscount : None {
  static constexpr const char* name = "delay::StageLRDiscount";
  static constexpr bool is_none = false;

  struct Hyper {
    /// T_c: steps over which the discount anneals away (PipeDream-LR: 7 epochs).
    std::int64_t anneal_steps = 1000;
    void validate() const {
      hyper::require_in(name, "anneal_steps", static_cast<double>(anneal_steps), 1, hyper::bound::closed, INFINITY,
                        hyper::bound::open);
    }
  };

  static double lr_factor(const Hyper& h, const StepContext& ctx, std::int64_t step) {
    if (ctx.tau <= 0) return 1.0;
    const double p = 1.0 - std::min(static_cast<double>(step) / static_cast<double>(h.anneal_steps), 1.0);
    return std::pow(static_cast<double>(ctx.tau), -p);
  }
  template <class T>
  KOKKOS_INLINE_FUNCTION static None::Coeffs<T> coeffs(const Hyper&, const StepContext&) {
    return {};
  }
};

}  // namespace delayopt::delay
