/// \file delayopt/delay/dc_asgd.hpp
/// \brief DC-ASGD (Zheng et al., ICML 2017), constant-lambda form:
///
///   g~ = g + lambda * g (.) g (.) (w_now - w_stale)
/// a first-order Taylor correction of the stale gradient with the diagonal of the outer-product
/// (Fisher) approximation of the Hessian. It needs the parameters the gradient was taken at
/// (Optimizer::update's `stale_params`). With a rotated basis the correction runs in the rotated
/// coordinates by default (`in_rotated_basis`), where a diagonal Hessian approximation is much
/// better justified; set it false to correct in the coordinate basis before projecting. With
/// coupled L2 decay the rotated gradient it squares includes wd * w (docs/policies.md).
#pragma once

#include "delayopt/core/hyper.hpp"
#include "delayopt/delay/none.hpp"

namespace delayopt::delay {

/// DC-ASGD's Taylor correction of a stale gradient from w_now - w_stale; needs Optimizer::update's
/// stale_params (docs/policies.md, "delay::DCASGD": g~ = g + lambda g (.) g (.) dw).
struct DCASGD : None {
  static constexpr const char* name = "delay::DCASGD";
  static constexpr bool is_none = false;
  static constexpr bool needs_stale_params = true;

  struct Hyper {
    double lambda = 0.04;  // DC-ASGD-c's lambda_0 in the paper's experiments
    bool in_rotated_basis = true;
    void validate() const { hyper::require_nonnegative(name, "lambda", lambda); }
  };
  template <class T>
  struct Coeffs {
    T lambda;
  };
  template <class T>
  KOKKOS_INLINE_FUNCTION static Coeffs<T> coeffs(const Hyper& h, const StepContext&) {
    return {static_cast<T>(h.lambda)};
  }
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T correct(const Coeffs<T>& c, T g, T dw) {
    return g + c.lambda * g * g * dw;
  }
};

}  // namespace delayopt::delay
