/// \file delayopt/moment/nadam.hpp
/// \brief NAdam: Adam with a Nesterov look-ahead on the first moment (Dozat 2016), in optax's form
/// (`optax.nadam`, i.e. scale_by_adam(nesterov=True)): no momentum-decay schedule.
///
///   m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
///   m^ = beta1 m / (1 - beta1^(t+1)) + (1 - beta1) g / (1 - beta1^t),   v^ = v / (1 - beta2^t)
///   p <- p - lr m^ / (sqrt(v^) + eps)
/// With beta1 around 0.99 this is the asynchronous-pipeline Nesterov method of Ajanthan et al.
/// (ICML 2025), whose code runs torch's NAdam: torch additionally ramps the look-ahead weight with
/// momentum_decay (mu_t = beta1 (1 - 0.5 * 0.96^(0.004 t))), which this form leaves out.
/// Weight decay: the modes of moment::Adam.
#pragma once

#include "delayopt/core/compat.hpp"
#include "delayopt/core/concepts.hpp"
#include "delayopt/core/hyper.hpp"
#include "delayopt/moment/adam.hpp"

#include <cstdint>

namespace delayopt::moment {

struct NAdam {
  static constexpr const char* name = "moment::NAdam";
  static constexpr int slots = 2;
  static constexpr SlotKind slot_kinds[slots] = {SlotKind::linear, SlotKind::second_moment};
  using WeightDecay = Adam::WeightDecay;

  struct Hyper {
    double beta1 = 0.99;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    WeightDecay weight_decay_mode = WeightDecay::decoupled;

    void validate() const {
      hyper::require_unit_interval(name, "beta1", beta1);
      hyper::require_unit_interval(name, "beta2", beta2);
      hyper::require_positive(name, "eps", eps);
      hyper::require_nonnegative(name, "weight_decay", weight_decay);
    }
  };

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
    const bool decoupled = h.weight_decay_mode != WeightDecay::l2;
    return Coeffs<T>{static_cast<T>(h.beta1),
                     static_cast<T>(1.0 - h.beta1),
                     static_cast<T>(h.beta2),
                     static_cast<T>(1.0 - h.beta2),
                     static_cast<T>(h.beta1 / (1.0 - compat::pow(h.beta1, td + 1.0))),
                     static_cast<T>((1.0 - h.beta1) / (1.0 - compat::pow(h.beta1, td))),
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
