/// \file delayopt/moment/adam.hpp
/// \brief Adam / AdamW moment policy (Kingma & Ba 2015; Loshchilov & Hutter 2019).
///
/// With t the 1-based step, bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (both 1 without bias correction):
///   m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
///   eps_mode::after_bias_correction (torch):  p <- p - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)
///   eps_mode::before_bias_correction (SOAP):  p <- p - lr sqrt(bc2) / bc1 * m / (sqrt(v) + eps)
/// Weight decay: l2 adds wd p to g; decoupled multiplies p by (1 - lr wd) before the step (torch
/// AdamW); decoupled_after_update does it after the step, on the updated p (SOAP).
#pragma once

#include "delayopt/core/compat.hpp"
#include "delayopt/core/concepts.hpp"
#include "delayopt/core/hyper.hpp"

#include <cmath>
#include <cstdint>

namespace delayopt::moment {

/// Adam's per-element update with two state slots: m (slot 0) and v (slot 1).
struct Adam {
  static constexpr const char* name = "moment::Adam";
  static constexpr int slots = 2;

  enum class WeightDecay { l2, decoupled, decoupled_after_update };
  enum class Eps { after_bias_correction, before_bias_correction };

  struct Hyper {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
    WeightDecay weight_decay_mode = WeightDecay::l2;
    bool bias_correction = true;
    Eps eps_mode = Eps::after_bias_correction;

    void validate() const {
      hyper::require_unit_interval(name, "beta1", beta1);
      hyper::require_unit_interval(name, "beta2", beta2);
      hyper::require_positive(name, "eps", eps);
      hyper::require_nonnegative(name, "weight_decay", weight_decay);
    }
  };

  /// Kernel constants for one step, computed in double and rounded to T once.
  template <class T>
  struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2;
    T neg_step_size;  // -lr / bc1 (torch) or -lr sqrt(bc2) / bc1 (SOAP)
    T bc2_sqrt;       // divides sqrt(v) in the torch form, 1 in the SOAP form
    T eps;
    T l2;     // wd for WeightDecay::l2, else 0
    T decay;  // 1 - lr wd for the decoupled modes, else 1
    bool decay_after;
  };

  template <class T>
  KOKKOS_INLINE_FUNCTION static Coeffs<T> coeffs(const Hyper& h, double lr, std::int64_t t) {
    const double bc1 = h.bias_correction ? 1.0 - compat::pow(h.beta1, static_cast<double>(t)) : 1.0;
    const double bc2 = h.bias_correction ? 1.0 - compat::pow(h.beta2, static_cast<double>(t)) : 1.0;
    const bool torch_eps = h.eps_mode == Eps::after_bias_correction;
    const bool decoupled = h.weight_decay_mode != WeightDecay::l2;
    return Coeffs<T>{static_cast<T>(h.beta1),
                     static_cast<T>(1.0 - h.beta1),
                     static_cast<T>(h.beta2),
                     static_cast<T>(1.0 - h.beta2),
                     static_cast<T>(torch_eps ? -(lr / bc1) : -(lr * compat::sqrt(bc2) / bc1)),
                     static_cast<T>(torch_eps ? compat::sqrt(bc2) : 1.0),
                     static_cast<T>(h.eps),
                     static_cast<T>(decoupled ? 0.0 : h.weight_decay),
                     static_cast<T>(decoupled ? 1.0 - lr * h.weight_decay : 1.0),
                     h.weight_decay_mode == WeightDecay::decoupled_after_update};
  }

  /// How a basis change treats each slot: m rotates with the basis, v is only permuted (SOAP).
  static constexpr SlotKind slot_kinds[slots] = {SlotKind::linear, SlotKind::second_moment};

  /// The gradient the moments see: g + wd p under coupled L2 (in the parameter basis).
  template <class C, class T>
  KOKKOS_FORCEINLINE_FUNCTION static T gradient(const C& c, T g, T p) {
    return g + c.l2 * p;
  }

  /// Updates m, v from gradient g and returns the parameter increment (in the moments' basis).
  /// Operation order follows torch.optim.Adam so double runs match it to the last bits.
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T direction(const Coeffs<T>& c, T g, Kokkos::Array<T, slots>& s) {
    s[0] = s[0] * c.beta1 + c.one_minus_beta1 * g;
    s[1] = s[1] * c.beta2 + c.one_minus_beta2 * g * g;
    const T denom = compat::sqrt(s[1]) / c.bc2_sqrt + c.eps;
    return c.neg_step_size * s[0] / denom;
  }

  /// New parameter value from the old one and the increment `delta` (in the parameter's basis).
  /// Generic in the coefficient type: moment::NAdam shares it (fields decay, decay_after).
  template <class C, class T>
  KOKKOS_FORCEINLINE_FUNCTION static T apply(const C& c, T p, T delta) {
    return c.decay_after ? (p + delta) * c.decay : p * c.decay + delta;
  }
};

}  // namespace delayopt::moment
