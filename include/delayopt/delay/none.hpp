/// \file delayopt/delay/none.hpp
/// \brief No delay compensation: a stale gradient is applied as it is (PipeDream with stashing).
#pragma once

#include "delayopt/core/step_context.hpp"

#include <Kokkos_Core.hpp>

#include <cstdint>

namespace delayopt::delay {

/// Members every delay policy has (docs/policies.md, "Delay policies"): an lr factor from the
/// staleness, an element-wise gradient correction from dw = w_now - w_stale, and a finalizer that
/// sees each parameter's old and new value (with `slots` per-element state arrays).
struct None {
  static constexpr const char* name = "delay::None";
  static constexpr bool is_none = true;
  static constexpr bool needs_stale_params = false;
  static constexpr int slots = 0;

  struct Hyper {
    void validate() const {}
  };
  template <class T>
  struct Coeffs {};

  // Defaults that derived policies inherit: generic in their Hyper and Coeffs types.
  template <class H>
  static double lr_factor(const H&, const StepContext&, std::int64_t /*step*/) {
    return 1.0;
  }
  template <class T>
  KOKKOS_INLINE_FUNCTION static Coeffs<T> coeffs(const Hyper&, const StepContext&) {
    return {};
  }
  template <class C, class T>
  KOKKOS_FORCEINLINE_FUNCTION static T correct(const C&, T g, T /*dw*/) {
    return g;
  }
  template <class C, class T, class Slots>
  KOKKOS_FORCEINLINE_FUNCTION static T finalize(const C&, T /*p_old*/, T p_new, Slots&) {
    return p_new;
  }
};

}  // namespace delayopt::delay
