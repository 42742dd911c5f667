/// \file delayopt/delay/weight_prediction.hpp
/// \brief PipeMare-style weight prediction (Yang et al., MLSys 2021, "discrepancy correction").
///
/// Keeps an EMA of the per-step weight change, u <- gamma u + (1 - gamma)(w_{t+1} - w_t), and
/// predicts the weights a stage's backward should use for a gradient that will be applied tau steps
/// later: w^ = w + tau u (WeightPrediction::predict). Used instead of weight stashing, the forward
/// and backward see weights extrapolated to the application step rather than stale ones. One slot
/// (u); the update itself is unchanged.
#pragma once

#include "delayopt/core/for_each_chunk.hpp"
#include "delayopt/core/hyper.hpp"
#include "delayopt/core/param_set.hpp"
#include "delayopt/delay/none.hpp"

#include <string>

namespace delayopt::delay {

/// PipeMare's weight prediction: a velocity EMA (one slot) and predict(), the weights extrapolated
/// tau steps ahead (docs/policies.md, "delay::WeightPrediction": w^ = w + tau u).
struct WeightPrediction : None {
  static constexpr const char* name = "delay::WeightPrediction";
  static constexpr bool is_none = false;
  static constexpr int slots = 1;

  struct Hyper {
    double gamma = 0.9;  // EMA of the weight velocity
    void validate() const { hyper::require_unit_interval(name, "gamma", gamma); }
  };
  template <class T>
  struct Coeffs {
    T gamma, one_minus_gamma;
  };
  template <class T>
  KOKKOS_INLINE_FUNCTION static Coeffs<T> coeffs(const Hyper& h, const StepContext&) {
    return {static_cast<T>(h.gamma), static_cast<T>(1.0 - h.gamma)};
  }
  template <class T, class Slots>
  KOKKOS_FORCEINLINE_FUNCTION static T finalize(const Coeffs<T>& c, T p_old, T p_new, Slots& s) {
    s[0] = c.gamma * s[0] + c.one_minus_gamma * (p_new - p_old);
    return p_new;
  }

  /// out = params + tau * velocity: the weights predicted `tau` steps ahead, for the forward and
  /// backward of a gradient that will be applied tau steps from now. `velocity` is the optimizer
  /// state's delay slot (State::delay[0]). Enqueued on `space`. A negative tau throws invalid_input.
  template <class T, class ExecSpace>
  static void predict(const ExecSpace& space, const ParamSet<T, ExecSpace>& params,
                      const ParamSet<T, ExecSpace>& velocity, int tau, ParamSet<T, ExecSpace>& out) {
    if (tau < 0)
      throw invalid_input("delay::WeightPrediction::predict: negative delay tau = " + std::to_string(tau) +
                          " (a gradient is applied at or after the step it is taken)");
    ParamSet<T, ExecSpace>::require_same_shapes(params, velocity, "delay::WeightPrediction::predict", "params",
                                                "velocity");
    ParamSet<T, ExecSpace>::require_same_shapes(params, out, "delay::WeightPrediction::predict", "params", "out");
    detail::for_each_chunk(space, delayopt::detail::Label::predict_weights, params.chunks(),
                           Predict<T, ExecSpace>{params.refs(), velocity.refs(), out.refs(), static_cast<T>(tau)});
  }

  template <class T, class ExecSpace>
  struct Predict {
    Kokkos::View<delayopt::detail::BlockRef<T>*, typename ExecSpace::memory_space> p, u, out;
    T tau;
    struct Context {
      const T* p;
      const T* u;
      T* out;
      bool skip;
    };
    KOKKOS_INLINE_FUNCTION Context chunk_context(const delayopt::detail::Chunk& ch) const {
      return {p(ch.block).data, u(ch.block).data, out(ch.block).data, false};
    }
    KOKKOS_FORCEINLINE_FUNCTION void element(const Context& x, std::size_t i) const {
      x.out[i] = x.p[i] + tau * x.u[i];
    }
  };
};

}  // namespace delayopt::delay
