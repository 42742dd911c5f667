/// \file methods.hpp
/// \brief The optimizers a pipeline stage can run, by name: the shared registry
/// (tools/method_registry.hpp, the names delayopt_convergence accepts) plus this example's
/// measured default learning rates.
///
/// The executor needs an optimizer with
///   void step(const Space&, ParamSet& params, const ParamSet& grads, const StepContext&, const ParamSet* stale)
/// and optionally needs_stale_weights() (DC-ASGD: keep the weights each gradient was taken at) and
/// predicts() / predict() (weight prediction: run the forward on extrapolated weights): the
/// registry's AnyMethod, wrapped in StageMethod.
#pragma once

#include <delayopt/delayopt.hpp>
#include <method_registry.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pipeline {

/// A base method's default learning rate, and where that number comes from.
struct MethodDefault {
  const char* base;
  double lr;
  /// true: the best iterations-to-target on digits at P = 1 (seed 1, 2000 steps) over the grid
  /// 5e-4 .. 8e-3 in factors of 2 (docs/pipeline.md); false: borrowed from a related method.
  bool measured;
};

/// Every base name of the registry with its default rate. A combination `base+compensation` runs
/// at the base's rate: the compensations only act once there is staleness, and these rates are
/// single-device (P = 1) rates, as a practitioner would tune them.
inline const std::vector<MethodDefault>& method_defaults() {
  static const std::vector<MethodDefault> table{
      {"adam", 1e-3, true},
      {"pipedream-lr", 1e-3, true},
      {"nesterov", 2e-3, true},  // torch NAdam: 611, 452, 339, 367, 976 iterations for 5e-4 .. 8e-3
      // At tau = 0 (P = 1) both are Adam bit for bit, so the P = 1 grid gives Adam's rate.
      {"dcasgd", 1e-3, true},
      {"weight-pred", 1e-3, true},
      // Adam's, not tuned on digits: at P = 1 it averages Adam's steps (gamma 0.9).
      {"nag", 1e-3, false},
      {"sgd", 1e-2, true},  // 1418, 885, 577, 641, 655 iterations for 2.5e-3 .. 4e-2
      {"soap", 4e-3, true},
      {"rot-cov-bi", 4e-3, true},
      {"rot-cov-uni", 2e-3, true},
      {"rot-mom-bi", 4e-3, true},
      {"rot-mom-uni", 2e-3, true},  // 698, 422, 277, 437, 899 iterations for 5e-4 .. 8e-3
      {"full-eigen", 4e-3, false},  // rot-cov-bi's; a 64x64 block's 4096^2 covariance is too slow to tune on
  };
  return table;
}

/// Every accepted name (the registry's list).
inline std::string method_names() { return delayopt::tools::method_names(); }

/// The base of `name` ("rot-cov-bi" for "rot-cov-bi+dcasgd") and its compensation ("" for none).
inline std::pair<std::string, std::string> split_method(const std::string& name) {
  const auto plus = name.find('+');
  if (plus == std::string::npos) return {name, ""};
  return {name.substr(0, plus), name.substr(plus + 1)};
}

/// The default learning rate of `name`. Throws std::invalid_argument for an unknown base.
inline double default_lr(const std::string& name) {
  const auto base = split_method(name).first;
  const auto& t = method_defaults();
  const auto it = std::find_if(t.begin(), t.end(), [&](const MethodDefault& d) { return base == d.base; });
  if (it == t.end()) throw std::invalid_argument("unknown method '" + name + "' (known: " + method_names() + ")");
  return it->lr;
}

struct MethodOptions {
  double lr = 0;                ///< 0: the method's default (method_defaults())
  double horizon = 0;           ///< PipeDream-LR T_c in steps; 0: the run's length
  std::int64_t run_steps = 1;   ///< updates per stage in the run (the default horizon)
  double dcasgd_lambda = 0.04;  ///< DC-ASGD's lambda
  double wp_gamma = 0.9;        ///< weight prediction: EMA factor of the weight velocity
  double nag_gamma = 0.9;       ///< nag: momentum of delay::Nesterov's weight-space look-ahead
  double clip = 0;              ///< the stage's gradient clipped to this global L2 norm; 0: off
};

/// The registry's optimizer for a stage, plus whether it needs the stale weights.
template <class T, class Space>
class StageMethod {
 public:
  using Params = delayopt::ParamSet<T, Space>;

  explicit StageMethod(delayopt::tools::AnyMethod<T, Space> method) : method_(std::move(method)) {}

  void step(const Space& space, Params& params, const Params& grads, const delayopt::StepContext& ctx,
            const Params* stale) {
    method_.step(space, params, grads, ctx, stale);
  }
  bool needs_stale_weights() const { return method_.needs_stale(); }
  /// The registry knobs the method was built from.
  const delayopt::tools::MethodReads& reads() const { return method_.reads(); }
  bool predicts() const { return method_.predicts(); }
  void predict(const Space& space, const Params& from, int tau, Params& out) const {
    method_.predict(space, from, tau, out);
  }

 private:
  delayopt::tools::AnyMethod<T, Space> method_;
};

/// Builds the stage optimizer called `name` for `params`. Throws std::invalid_argument naming the
/// accepted names for an unknown one.
template <class T, class Space>
StageMethod<T, Space> make_method(const std::string& name, const MethodOptions& o, const Space& space,
                                  const delayopt::ParamSet<T, Space>& params) {
  delayopt::tools::MethodOptions r;
  r.lr = o.lr > 0 ? o.lr : default_lr(name);
  r.anneal_steps =
      std::max<std::int64_t>(1, std::llround(o.horizon > 0 ? o.horizon : static_cast<double>(o.run_steps)));
  r.dcasgd_lambda = o.dcasgd_lambda;
  r.wp_gamma = o.wp_gamma;
  r.nag_gamma = o.nag_gamma;
  r.clip = o.clip;
  return StageMethod<T, Space>(delayopt::tools::make_method<T, Space>(name, r, space, params));
}

}  // namespace pipeline
