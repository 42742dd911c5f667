/// \file methods.hpp
/// \brief The optimizers a pipeline stage can run, by name, behind one small type-erased interface.
///
/// Everything name-related lives in this one file so it can later be swapped for the library's
/// shared method registry: the executor only needs a type with
///   void step(const Space&, ParamSet& params, const ParamSet& grads, const StageStep&)
/// and make_method() returns one for a name.
#pragma once

#include <delayopt/delayopt.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace pipeline {

/// What a stage knows when it applies an update.
struct StageStep {
  int stage = 0;
  int stages = 1;
  std::int64_t step = 0;         ///< updates this stage applied before this one (the schedule's step)
  int tau = 0;                   ///< staleness of this gradient, from the executor's version counters
  std::int64_t total_steps = 1;  ///< updates in the whole run
};

/// A per-update multiplier of the learning rate.
struct LrRule {
  enum class Kind { none, pipedream_lr } kind = Kind::none;
  /// Horizon T of the PipeDream-LR discount; <= 0 means the run's length.
  double horizon = 0;

  /// PipeDream-LR (PipeMare's "learning-rate rescheduling", Yang et al. 2021): a stage whose
  /// gradients are tau > 0 steps stale runs at lr / tau^(1 - min(t / T, 1)), i.e. 1/tau at the
  /// start, annealed to the full rate at t = T.
  double operator()(const StageStep& s) const {
    if (kind == Kind::none || s.tau <= 0) return 1.0;
    const double T = horizon > 0 ? horizon : static_cast<double>(s.total_steps);
    return std::pow(static_cast<double>(s.tau), -(1.0 - std::min(static_cast<double>(s.step) / T, 1.0)));
  }
};

/// A delayopt::Optimizer together with its state and an LR rule: the concrete stage optimizer.
template <class Opt, class T, class Space>
class StatefulOptimizer {
 public:
  using Params = delayopt::ParamSet<T, Space>;

  StatefulOptimizer(const Opt& opt, const Space& space, const Params& params, LrRule rule = {})
      : opt_(opt), state_(opt_.init(space, params)), rule_(rule) {}

  void step(const Space& space, Params& params, const Params& grads, const StageStep& s) {
    opt_.update(space, params, grads, state_, {.step = s.step, .tau = s.tau, .lr_scale = rule_(s)});
  }

 private:
  Opt opt_;
  typename Opt::template State<T, Space> state_;
  LrRule rule_;
};

/// Any stage optimizer behind one virtual call per update (negligible next to the update itself).
template <class T, class Space>
class AnyOptimizer {
 public:
  using Params = delayopt::ParamSet<T, Space>;

  template <class Impl>
  explicit AnyOptimizer(Impl impl) : impl_(std::make_unique<Holder<Impl>>(std::move(impl))) {}

  void step(const Space& space, Params& params, const Params& grads, const StageStep& s) {
    impl_->step(space, params, grads, s);
  }

 private:
  struct Base {
    virtual ~Base() = default;
    virtual void step(const Space&, Params&, const Params&, const StageStep&) = 0;
  };
  template <class Impl>
  struct Holder final : Base {
    explicit Holder(Impl i) : impl(std::move(i)) {}
    void step(const Space& space, Params& p, const Params& g, const StageStep& s) override {
      impl.step(space, p, g, s);
    }
    Impl impl;
  };
  std::unique_ptr<Base> impl_;
};

/// A method name, what it is, and its default learning rate: the best iterations-to-target on
/// digits at P = 1 over the grid 5e-4 .. 8e-3 in factors of 2 (docs/pipeline.md). A delay
/// discount uses its base method's rate.
struct MethodInfo {
  const char* name;
  const char* description;
  double lr;
};

inline const std::vector<MethodInfo>& method_table() {
  static const std::vector<MethodInfo> table{
      {"adam", "Adam in the coordinate basis, no delay compensation", 1e-3},
      {"pipedream-lr", "Adam with the PipeDream-LR stage discount lr / tau^(1 - min(t/T, 1))", 1e-3},
      {"nesterov", "NAdam with beta1 = 0.99 (the asynchronous Nesterov baseline of Ajanthan et al. 2025)", 1e-3},
      {"soap", "SOAP (published ordering and defaults: betas 0.95, refresh 10)", 4e-3},
      {"rot-cov-bi", "basis rotation: paper ordering, covariance eigenbasis, both sides, refresh 10", 4e-3},
      {"rot-cov-uni", "basis rotation: paper ordering, covariance eigenbasis, smaller side only", 2e-3},
      {"rot-mom-bi", "basis rotation: paper ordering, momentum singular vectors, both sides", 4e-3},
  };
  return table;
}

/// Lists every accepted name (the table, and "<base>+pipedream-lr" for each rotated base).
inline std::string method_names() {
  std::string out;
  for (const auto& m : method_table()) out += std::string(out.empty() ? "" : ", ") + m.name;
  return out + ", and <rotation or soap>+pipedream-lr, <rotation or soap>+nesterov (NAdam inside the basis)";
}

struct MethodOptions {
  double lr = 0;       ///< 0: the method's default
  double horizon = 0;  ///< PipeDream-LR horizon T; 0: the run's length
};

/// Builds the stage optimizer called `name` for `params`. Throws std::invalid_argument naming the
/// accepted names for an unknown one.
template <class T, class Space>
AnyOptimizer<T, Space> make_method(const std::string& name, const MethodOptions& o, const Space& space,
                                   const delayopt::ParamSet<T, Space>& params) {
  const auto plus = name.find('+');
  const std::string base = name.substr(0, plus);
  const std::string modifier = plus == std::string::npos ? "" : name.substr(plus + 1);
  const auto it =
      std::find_if(method_table().begin(), method_table().end(), [&](const MethodInfo& m) { return base == m.name; });
  const bool rotated = base != "adam" && base != "pipedream-lr" && base != "nesterov";
  const bool ok_modifier = modifier.empty() || ((modifier == "pipedream-lr" || modifier == "nesterov") && rotated);
  if (it == method_table().end() || !ok_modifier)
    throw std::invalid_argument("unknown method '" + name + "' (known: " + method_names() + ")");
  const double lr = o.lr > 0 ? o.lr : it->lr;
  LrRule rule;
  if (base == "pipedream-lr" || modifier == "pipedream-lr") rule = {LrRule::Kind::pipedream_lr, o.horizon};

  if (base == "adam" || base == "pipedream-lr") {
    const delayopt::Adam opt({.schedule = {.lr = lr}});
    return AnyOptimizer<T, Space>(StatefulOptimizer<delayopt::Adam, T, Space>(opt, space, params, rule));
  }
  if (base == "nesterov") {
    const delayopt::NAdam opt({.schedule = {.lr = lr}});
    return AnyOptimizer<T, Space>(StatefulOptimizer<delayopt::NAdam, T, Space>(opt, space, params, rule));
  }
  delayopt::SOAP::Config c;
  if (base == "soap") {
    c = delayopt::soap_config(lr);
  } else {  // the basis-rotation family: paper ordering and eps convention, Adam's betas
    c.schedule.lr = lr;
    c.moment.eps_mode = delayopt::moment::Adam::Eps::before_bias_correction;
    c.basis.ordering = delayopt::basis::Ordering::paper;
    c.basis.refresh_every = 10;
    c.basis.source = base == "rot-mom-bi" ? delayopt::basis::Source::momentum : delayopt::basis::Source::covariance;
    c.basis.geometry =
        base == "rot-cov-uni" ? delayopt::basis::Geometry::one_sided : delayopt::basis::Geometry::two_sided;
  }
  if (modifier == "nesterov") {  // the same basis with NAdam (beta1 = 0.99) as the moment policy
    delayopt::RotatedNAdam::Config n;
    n.basis = c.basis;
    n.schedule = c.schedule;
    return AnyOptimizer<T, Space>(
        StatefulOptimizer<delayopt::RotatedNAdam, T, Space>(delayopt::RotatedNAdam(n), space, params, rule));
  }
  return AnyOptimizer<T, Space>(StatefulOptimizer<delayopt::SOAP, T, Space>(delayopt::SOAP(c), space, params, rule));
}

}  // namespace pipeline
