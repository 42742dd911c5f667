/// \file delayopt/moment/momentum.hpp
/// \brief SGD with heavy-ball (Polyak 1964) or Nesterov momentum (Sutskever et al. 2013), in the form
/// of `torch.optim.SGD` (the optimizer of PipeDream's own experiments).
///
/// With g the gradient (+ wd p under coupled L2), mu = momentum, d = dampening, t the 1-based step:
///   b <- g                                  at t = 1 (torch starts the buffer at the first gradient)
///   b <- mu b + (1 - d) g                   at t > 1
///   u = g + mu b (nesterov),  u = b (heavy ball),  u = g (mu = 0: plain SGD, b unused)
///   p <- p - lr u
/// Weight decay: the modes of moment::Adam (l2 is torch SGD's `weight_decay`).
/// SGD is rotation-equivariant, so in a rotated basis it takes the coordinate-basis steps (to rounding);
/// what a rotated basis adds is an Adam-type moment's per-coordinate scaling.
#pragma once

#include "delayopt/core/concepts.hpp"
#include "delayopt/core/hyper.hpp"
#include "delayopt/moment/adam.hpp"

#include <cstdint>
#include <sstream>

namespace delayopt::moment {

/// torch's SGD: heavy-ball or Nesterov momentum with one buffer slot b, or plain SGD at momentum 0
/// (docs/policies.md, "moment::Momentum": b <- mu b + (1 - d) g, p <- p - lr u).
struct Momentum {
  static constexpr const char* name = "moment::Momentum";
  static constexpr int slots = 1;
  /// The buffer rotates with the basis.
  static constexpr SlotKind slot_kinds[slots] = {SlotKind::linear};
  using WeightDecay = Adam::WeightDecay;

  struct Hyper {
    double momentum = 0.9;
    double dampening = 0.0;
    bool nesterov = false;
    double weight_decay = 0.0;
    WeightDecay weight_decay_mode = WeightDecay::l2;

    void validate() const {
      hyper::require_unit_interval(name, "momentum", momentum);
      hyper::require_in(name, "dampening", dampening, 0.0, hyper::bound::closed, 1.0, hyper::bound::closed);
      hyper::require_nonnegative(name, "weight_decay", weight_decay);
      // torch.optim.SGD's rule: the look-ahead g + mu b needs a buffer, and an undamped one.
      if (nesterov && (momentum <= 0.0 || dampening != 0.0)) {
        std::ostringstream msg;
        msg << name << ": nesterov = true needs momentum > 0 and dampening = 0 (momentum = " << momentum
            << ", dampening = " << dampening << ")";
        throw invalid_hyperparameter(msg.str());
      }
    }
  };

  template <class T>
  struct Coeffs {
    T keep;      // mu, or 0 at the first step and without momentum
    T take;      // 1 - dampening, or 1 at the first step and without momentum
    T look;      // mu for nesterov, else 0
    T from_buf;  // 1: u includes the buffer (mu > 0); 0: plain SGD
    T neg_lr, l2, decay;
    bool decay_after;
  };

  template <class T>
  KOKKOS_INLINE_FUNCTION static Coeffs<T> coeffs(const Hyper& h, double lr, std::int64_t t) {
    const bool fresh = t <= 1 || h.momentum == 0.0;
    const bool decoupled = h.weight_decay_mode != WeightDecay::l2;
    return Coeffs<T>{static_cast<T>(fresh ? 0.0 : h.momentum),
                     static_cast<T>(fresh ? 1.0 : 1.0 - h.dampening),
                     static_cast<T>(h.nesterov ? h.momentum : 0.0),
                     static_cast<T>(h.momentum > 0.0 ? 1.0 : 0.0),
                     static_cast<T>(-lr),
                     static_cast<T>(decoupled ? 0.0 : h.weight_decay),
                     static_cast<T>(decoupled ? 1.0 - lr * h.weight_decay : 1.0),
                     h.weight_decay_mode == WeightDecay::decoupled_after_update};
  }

  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T gradient(const Coeffs<T>& c, T g, T p) {
    return Adam::gradient(c, g, p);
  }

  /// Operation order follows torch.optim.SGD: buf.mul_(mu).add_(g, alpha=1-d); g.add(buf, alpha=mu).
  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T direction(const Coeffs<T>& c, T g, Kokkos::Array<T, slots>& s) {
    s[0] = s[0] * c.keep + c.take * g;
    const T u = c.look != T(0) ? g + c.look * s[0] : c.from_buf != T(0) ? s[0] : g;
    return c.neg_lr * u;
  }

  template <class T>
  KOKKOS_FORCEINLINE_FUNCTION static T apply(const Coeffs<T>& c, T p, T delta) {
    return Adam::apply(c, p, delta);
  }
};

}  // namespace delayopt::moment
