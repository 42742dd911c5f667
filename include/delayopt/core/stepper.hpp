/// \file delayopt/core/stepper.hpp
/// \brief Stepper: a libtorch-style owner of params and state with step(grads).
#pragma once

#include "delayopt/core/optimizer.hpp"

#include <utility>

namespace delayopt {

/// Owns an optimizer, its parameters and its state on one execution-space instance.
///
///   delayopt::Stepper stepper(delayopt::Adam({.schedule = {.lr = 1e-3}}), space, params);
///   stepper.step(grads);   // enqueued on space
/// step() has no stale parameters to pass, so a delay policy that needs them (delay::DCASGD) is
/// rejected at compile time: drive such an optimizer with Optimizer::update directly.
template <class Opt, class T, class ExecSpace>
class Stepper {
  static_assert(!Opt::delay_type::needs_stale_params,
                "delayopt::Stepper: this delay policy needs the parameters each gradient was taken at "
                "(Delay::needs_stale_params, e.g. delay::DCASGD), which step(grads) cannot pass; call "
                "Optimizer::update(space, params, grads, state, ctx, &stale_params) instead");

 public:
  using state_type = typename Opt::template State<T, ExecSpace>;

  Stepper(Opt opt, ExecSpace space, ParamSet<T, ExecSpace> params)
      : opt_(std::move(opt)),
        space_(std::move(space)),
        params_(std::move(params)),
        state_(opt_.init(space_, params_)) {}

  /// One update from `grads` (same blocks as params()).
  void step(const ParamSet<T, ExecSpace>& grads, const StepContext& ctx = {}) {
    opt_.update(space_, params_, grads, state_, ctx);
  }

  /// A zero gradient set shaped like the parameters (allocate once, refill each step).
  ParamSet<T, ExecSpace> make_grads() const { return ParamSet<T, ExecSpace>::zeros_like(params_, "delayopt::grads"); }

  const Opt& optimizer() const { return opt_; }
  const ExecSpace& space() const { return space_; }
  ParamSet<T, ExecSpace>& params() { return params_; }
  const ParamSet<T, ExecSpace>& params() const { return params_; }
  state_type& state() { return state_; }
  const state_type& state() const { return state_; }

 private:
  Opt opt_;
  ExecSpace space_;
  ParamSet<T, ExecSpace> params_;
  state_type state_;
};

}  // namespace delayopt
