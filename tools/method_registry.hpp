/// \file method_registry.hpp
/// \brief Composed optimizers by name, behind one type-erased interface: the names the convergence
/// study (delayopt_convergence) and the pipeline example (delayopt_pipeline) accept.
///
/// A name is `<base>` or `<base>+<compensation>`:
///  - coordinate-basis baselines: adam, pipedream-lr, nesterov (NAdam, beta1 = 0.99), dcasgd,
///    weight-pred, nag (Adam under delay::Nesterov's weight-space look-ahead), sgd (heavy-ball
///    momentum 0.9, PipeDream's optimizer) and sgd+<delay policy>;
///  - rotated bases: rot-cov-bi (the paper's default: covariance eigenbasis, both sides),
///    rot-cov-uni, rot-mom-bi, rot-mom-uni (momentum singular vectors), full-eigen (small blocks),
///    soap (SOAP's published ordering and defaults);
///  - a rotated base + pipedream-lr | nesterov | dcasgd | weight-pred | nag runs that compensation
///    with the rotated basis (nesterov: NAdam as the moment policy inside the basis; dcasgd: the
///    correction on the rotated coordinates);
///  - nesterov+<c> and <rotated base>+nesterov+<c>, c one of pipedream-lr, dcasgd, weight-pred, nag:
///    NAdam as the moment together with that delay policy.
/// Everything is an ordinary delayopt::Optimizer; the registry only maps names to compositions.
#pragma once

#include <delayopt/delayopt.hpp>

#include <algorithm>
#include <array>
#include <bitset>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace delayopt::tools {

/// The knobs the study and the pipeline vary; everything else keeps the policy defaults.
struct MethodOptions {
  double lr = 1e-3;
  /// PipeDream-LR's T_c: steps over which the stage discount anneals away.
  std::int64_t anneal_steps = 1000;
  /// Rotated bases: steps between refreshes, or (refresh_window > 0) refreshes_per_window evenly
  /// spaced refreshes in every refresh_window steps (a stage's share of a refresh budget).
  int refresh_every = 10;
  std::int64_t refresh_window = 0;
  std::int64_t refreshes_per_window = 0;
  /// Rotated bases: EMA factor of the Kronecker factors L, R; < 0 takes the moment's beta2 (the
  /// paper's and SOAP's default).
  double basis_beta = -1.0;
  /// Rotate vectors (biases, single-block quadratics) with their full covariance instead of leaving
  /// them in the coordinate basis.
  bool rotate_vectors = false;
  /// NAdam methods (nesterov, <rotated>+nesterov): beta1; < 0 keeps the default 0.99.
  double nadam_beta1 = -1.0;
  /// NAdam methods: psi of torch's look-ahead schedule; < 0 keeps the default 0.004.
  double nadam_momentum_decay = -1.0;
  /// Adam methods: beta1; < 0 keeps the default (0.9).
  double adam_beta1 = -1.0;
  /// Adam and NAdam methods: beta2; < 0 keeps the default (0.999; soap: 0.95). Rotated bases with
  /// basis_beta < 0 take it as the EMA factor of L and R too.
  double beta2 = -1.0;
  /// DC-ASGD's lambda.
  double dcasgd_lambda = 0.04;
  /// Weight prediction: EMA factor of the weight velocity.
  double wp_gamma = 0.9;
  /// nag (delay::Nesterov): the look-ahead's momentum gamma.
  double nag_gamma = 0.9;
  /// Clip the gradient to this global L2 norm over the method's parameter set before the step
  /// (torch.nn.utils.clip_grad_norm_; one set per pipeline stage, as the paper's code clips per
  /// stage and parameter group); 0 disables it.
  double clip = 0.0;
};

/// A method-specific knob of MethodOptions (lr and clip apply to every method).
enum class Knob {
  anneal_steps,   // anneal_steps: delay::StageLRDiscount
  refresh,        // refresh_every, refresh_window, refreshes_per_window: a rotated basis
  basis_beta,     // basis_beta: a basis estimated from the covariance factors
  nadam,          // nadam_beta1, nadam_momentum_decay: moment::NAdam
  adam_beta1,     // adam_beta1: moment::Adam
  beta2,          // beta2: moment::Adam and moment::NAdam
  dcasgd_lambda,  // dcasgd_lambda: delay::DCASGD
  wp_gamma,       // wp_gamma: delay::WeightPrediction
  nag_gamma,      // nag_gamma: delay::Nesterov
  count_          // not a knob: their number
};

/// The knobs a composed method was built from. Tools use it to reject an option that none of the
/// named methods would act on.
class MethodReads {
 public:
  MethodReads& add(Knob k) {
    bits_.set(static_cast<std::size_t>(k));
    return *this;
  }
  bool has(Knob k) const { return bits_.test(static_cast<std::size_t>(k)); }
  MethodReads& operator|=(const MethodReads& o) {
    bits_ |= o.bits_;
    return *this;
  }

 private:
  std::bitset<static_cast<std::size_t>(Knob::count_)> bits_;
};

/// The methods that read a knob, for a tool's message about an unused option. (A switch, so that a
/// new knob without a description is a -Wswitch warning.)
inline const char* methods_reading(Knob k) {
  switch (k) {
    case Knob::anneal_steps:
      return "pipedream-lr and <base>+pipedream-lr";
    case Knob::refresh:
      return "the rotated bases (rot-cov-bi, rot-cov-uni, rot-mom-bi, rot-mom-uni, full-eigen, soap)";
    case Knob::basis_beta:
      return "the covariance bases (rot-cov-bi, rot-cov-uni, full-eigen, soap; rot-mom-* have no L, R)";
    case Knob::nadam:
      return "the NAdam methods (nesterov, nesterov+<c>, <rotated base>+nesterov[+<c>])";
    case Knob::adam_beta1:
      return "the Adam methods (all but sgd and the NAdam methods)";
    case Knob::beta2:
      return "the Adam and NAdam methods (all but sgd)";
    case Knob::dcasgd_lambda:
      return "dcasgd and <base>+dcasgd";
    case Knob::wp_gamma:
      return "weight-pred and <base>+weight-pred";
    case Knob::nag_gamma:
      return "nag and <base>+nag";
    case Knob::count_:
      break;
  }
  return "no method";
}

struct MethodInfo {
  const char* name;
  const char* description;
};

/// The base names, what each one is.
inline const std::vector<MethodInfo>& method_table() {
  static const std::vector<MethodInfo> table{
      {"adam", "Adam in the coordinate basis (PipeDream: no delay compensation)"},
      {"pipedream-lr", "Adam with the stage discount lr / tau^(1 - min(t/T_c, 1)) (PipeDream-LR / PipeMare)"},
      {"nesterov", "torch NAdam with beta1 = 0.99 (the asynchronous Nesterov baseline of Ajanthan et al. 2025)"},
      {"dcasgd", "Adam on the DC-ASGD-corrected gradient g + lambda g*g*(w_now - w_stale) (Zheng et al. 2017)"},
      {"weight-pred", "Adam; the gradient is taken at weights predicted tau steps ahead (PipeMare)"},
      {"nag", "Adam under the weight-space look-ahead w+ = w + gamma d + (1 - gamma) Delta (delay::Nesterov)"},
      {"sgd", "SGD with heavy-ball momentum 0.9 (torch.optim.SGD; PipeDream's optimizer); rotation-equivariant"},
      {"rot-cov-bi", "Adam in the eigenbasis of L = EMA(G G^T) and R = EMA(G^T G) (paper ordering)"},
      {"rot-cov-uni", "Adam in the eigenbasis of the smaller-side covariance factor only"},
      {"rot-mom-bi", "Adam in the singular vectors of the first moment, both sides"},
      {"rot-mom-uni", "Adam in the singular vectors of the first moment, smaller side only"},
      {"full-eigen", "Adam in the eigenbasis of each block's full gradient covariance (small blocks)"},
      {"soap", "SOAP: published ordering and defaults (betas 0.95, decoupled weight decay 0.01)"},
  };
  return table;
}

/// What may follow a base after '+': nesterov (NAdam as the moment) or a delay policy. Every other
/// entry is a delay policy, which may also follow "nesterov+"; with_delay() maps each to its type.
inline constexpr std::array<std::string_view, 5> kCompensations{"pipedream-lr", "nesterov", "dcasgd", "weight-pred",
                                                                "nag"};

inline bool is_delay_policy(std::string_view c) {
  return c != "nesterov" && std::find(kCompensations.begin(), kCompensations.end(), c) != kCompensations.end();
}

/// The compensations (with_nesterov) or only the delay policies, comma-separated.
inline std::string compensation_list(bool with_nesterov) {
  std::string out;
  for (const auto c : kCompensations)
    if (with_nesterov || c != "nesterov") {
      if (!out.empty()) out += ", ";
      out += c;
    }
  return out;
}

/// Every accepted name, for error messages and --help.
inline std::string method_names() {
  std::string out;
  for (const auto& m : method_table()) {
    if (!out.empty()) out += ", ";
    out += m.name;
  }
  out += "; and <rotated base>+<compensation> with compensation one of " + compensation_list(true);
  out += "; and nesterov+<c>, <rotated base>+nesterov+<c> with c one of " + compensation_list(false);
  out += "; and sgd+<c> with c one of " + compensation_list(false);
  return out;
}

/// One optimizer with its state. step() forwards to Optimizer::update; predict() exists for
/// weight prediction (the weights the gradient should be taken at).
template <class T, class Space>
class AnyMethod {
 public:
  using Params = ParamSet<T, Space>;

  /// `reads`: which method-specific options built `opt` (make_method fills it in).
  template <class Opt>
  AnyMethod(const Opt& opt, const Space& space, const Params& params, const MethodReads& reads = {})
      : impl_(std::make_unique<Holder<Opt>>(opt, opt.init(space, params))), reads_(reads) {}

  /// `stale`: the weights the gradient was taken at (DC-ASGD needs them; others ignore them).
  void step(const Space& space, Params& params, const Params& grads, const StepContext& ctx,
            const Params* stale = nullptr) {
    impl_->step(space, params, grads, ctx, stale);
  }
  /// True for weight prediction: take the next gradient at predict(weights, tau).
  bool predicts() const { return impl_->predicts(); }
  /// True when step() needs `stale` (DC-ASGD): keep the weights each gradient was taken at.
  bool needs_stale() const { return impl_->needs_stale(); }
  /// out = the weights `from` extrapolated tau steps ahead along the velocity EMA.
  void predict(const Space& space, const Params& from, int tau, Params& out) const {
    impl_->predict(space, from, tau, out);
  }
  std::size_t state_bytes() const { return impl_->state_bytes(); }
  std::int64_t skipped_steps() const { return impl_->skipped_steps(); }
  /// The knobs this method was built from.
  const MethodReads& reads() const { return reads_; }

 private:
  struct Base {
    virtual ~Base() = default;
    virtual void step(const Space&, Params&, const Params&, const StepContext&, const Params*) = 0;
    virtual bool predicts() const = 0;
    virtual bool needs_stale() const = 0;
    virtual void predict(const Space&, const Params&, int, Params&) const = 0;
    virtual std::size_t state_bytes() const = 0;
    virtual std::int64_t skipped_steps() const = 0;
  };
  template <class Opt>
  struct Holder final : Base {
    using State = typename Opt::template State<T, Space>;
    static constexpr bool kPredicts = std::is_same_v<typename Opt::delay_type, delay::WeightPrediction>;
    Holder(const Opt& o, State s) : opt(o), state(std::move(s)) {}
    void step(const Space& space, Params& p, const Params& g, const StepContext& ctx, const Params* stale) override {
      opt.update(space, p, g, state, ctx, stale);
    }
    bool predicts() const override { return kPredicts; }
    bool needs_stale() const override { return Opt::delay_type::needs_stale_params; }
    void predict(const Space& space, const Params& from, int tau, Params& out) const override {
      if constexpr (kPredicts)
        delay::WeightPrediction::predict(space, from, state.delay[0], tau, out);
      else
        throw std::logic_error("AnyMethod::predict: this method has no weight prediction");
    }
    std::size_t state_bytes() const override { return Opt::state_bytes(state); }
    std::int64_t skipped_steps() const override { return Opt::skipped_steps(state); }
    Opt opt;
    State state;
  };
  std::unique_ptr<Base> impl_;
  MethodReads reads_;
};

namespace detail {

template <class Basis, class Moment, class Delay, class T, class Space>
AnyMethod<T, Space> compose(const typename Basis::Hyper& basis, const MethodOptions& o, const Space& space,
                            const ParamSet<T, Space>& params, bool soap_defaults) {
  using Opt = Optimizer<Basis, Moment, Delay>;
  typename Opt::Config c;
  // Each knob is added to `r` next to the line that reads it, so reads() cannot drift from the wiring.
  MethodReads r;
  c.basis = basis;
  // make_method built `basis` from the refresh fields and basis_beta; a momentum-source basis keeps
  // no covariance factors, so it has no use for the latter.
  if constexpr (!Basis::is_identity) {
    r.add(Knob::refresh);
    bool covariance = true;
    if constexpr (requires { basis.source; }) covariance = basis.source == basis::Source::covariance;
    if (covariance) r.add(Knob::basis_beta);
  }
  c.schedule.lr = o.lr;
  c.clip_global_norm = o.clip;
  if constexpr (std::is_same_v<Delay, delay::StageLRDiscount>) {
    c.delay.anneal_steps = o.anneal_steps;
    r.add(Knob::anneal_steps);
  }
  if constexpr (std::is_same_v<Delay, delay::DCASGD>) {
    c.delay.lambda = o.dcasgd_lambda;
    r.add(Knob::dcasgd_lambda);
  }
  if constexpr (std::is_same_v<Delay, delay::WeightPrediction>) {
    c.delay.gamma = o.wp_gamma;
    r.add(Knob::wp_gamma);
  }
  if constexpr (std::is_same_v<Delay, delay::Nesterov>) {
    c.delay.gamma = o.nag_gamma;
    r.add(Knob::nag_gamma);
  }
  if constexpr (std::is_same_v<Moment, moment::NAdam>) {
    if (o.nadam_beta1 >= 0) c.moment.beta1 = o.nadam_beta1;
    if (o.nadam_momentum_decay >= 0) c.moment.momentum_decay = o.nadam_momentum_decay;
    r.add(Knob::nadam);
  }
  if constexpr (std::is_same_v<Moment, moment::Adam>) {
    // The rotated family follows the paper (and SOAP) in adding eps to sqrt(v) before bias correction.
    if constexpr (!Basis::is_identity) c.moment.eps_mode = moment::Adam::Eps::before_bias_correction;
    if (soap_defaults) {
      const auto s = soap_config(o.lr);
      c.moment = s.moment;
    }
    if (o.adam_beta1 >= 0) c.moment.beta1 = o.adam_beta1;
    r.add(Knob::adam_beta1);
  }
  // After the SOAP defaults, which replace Adam's whole moment config. (SGD has no beta2.)
  if constexpr (requires { c.moment.beta2; }) {
    if (o.beta2 >= 0) c.moment.beta2 = o.beta2;
    r.add(Knob::beta2);
  }
  return AnyMethod<T, Space>(Opt(c), space, params, r);
}

template <class Basis, class Moment, class T, class Space>
AnyMethod<T, Space> with_delay(const std::string& delay_name, const typename Basis::Hyper& basis,
                               const MethodOptions& o, const Space& space, const ParamSet<T, Space>& params,
                               bool soap_defaults) {
  if (delay_name.empty()) return compose<Basis, Moment, delay::None>(basis, o, space, params, soap_defaults);
  if (delay_name == "pipedream-lr")
    return compose<Basis, Moment, delay::StageLRDiscount>(basis, o, space, params, soap_defaults);
  if (delay_name == "dcasgd") return compose<Basis, Moment, delay::DCASGD>(basis, o, space, params, soap_defaults);
  if (delay_name == "weight-pred")
    return compose<Basis, Moment, delay::WeightPrediction>(basis, o, space, params, soap_defaults);
  if (delay_name == "nag") return compose<Basis, Moment, delay::Nesterov>(basis, o, space, params, soap_defaults);
  throw std::invalid_argument("unknown delay compensation '" + delay_name + "' (known: " + compensation_list(true) +
                              ")");
}

/// The delay policy's name in "nesterov+<delay policy>" (NAdam as the moment with that delay);
/// nullopt for any other form.
inline std::optional<std::string> nadam_delay(const std::string& comp) {
  constexpr std::string_view prefix = "nesterov+";
  if (!comp.starts_with(prefix)) return std::nullopt;
  return comp.substr(prefix.size());
}

/// `comp`: "", one compensation, or "nesterov+<delay policy>".
template <class Basis, class T, class Space>
AnyMethod<T, Space> with_compensation(const std::string& comp, const typename Basis::Hyper& basis,
                                      const MethodOptions& o, const Space& space, const ParamSet<T, Space>& params,
                                      bool soap_defaults = false) {
  if (comp == "nesterov") return with_delay<Basis, moment::NAdam>("", basis, o, space, params, false);
  if (const auto delay_name = nadam_delay(comp))
    return with_delay<Basis, moment::NAdam>(*delay_name, basis, o, space, params, false);
  return with_delay<Basis, moment::Adam>(comp, basis, o, space, params, soap_defaults);
}

}  // namespace detail

/// Builds the optimizer called `name` (see the file comment) with its state for `params`. Throws
/// std::invalid_argument listing the accepted names for an unknown one.
template <class T, class Space>
AnyMethod<T, Space> make_method(const std::string& name, const MethodOptions& o, const Space& space,
                                const ParamSet<T, Space>& params) {
  const auto plus = name.find('+');
  const std::string base = name.substr(0, plus), comp = plus == std::string::npos ? "" : name.substr(plus + 1);
  const auto unknown = [&] {
    return std::invalid_argument("unknown method '" + name + "' (known: " + method_names() + ")");
  };
  // comp: empty (no '+' at all: "adam+" is not "adam"), a compensation, or nesterov+<delay compensation>.
  if (plus != std::string::npos && comp.empty()) throw unknown();
  const auto nadam_comp = detail::nadam_delay(comp);
  if (!comp.empty() && comp != "nesterov" && !is_delay_policy(comp) && !(nadam_comp && is_delay_policy(*nadam_comp)))
    throw unknown();
  const basis::Identity::Hyper id{};
  if (base == "adam" && comp.empty()) return detail::with_compensation<basis::Identity>("", id, o, space, params);
  if (comp.empty() && (base == "nesterov" || is_delay_policy(base)))
    return detail::with_compensation<basis::Identity>(base, id, o, space, params);
  if (base == "nesterov" && is_delay_policy(comp))  // NAdam with a delay policy, coordinate basis
    return detail::with_compensation<basis::Identity>(name, id, o, space, params);
  // SGD is rotation-equivariant, so it has no rotated form; it takes the delay policies.
  if (base == "sgd" && (comp.empty() || is_delay_policy(comp)))
    return detail::with_delay<basis::Identity, moment::Momentum>(comp, id, o, space, params, false);
  if (base == "full-eigen")
    return detail::with_compensation<basis::FullEigen>(comp,
                                                       {.ordering = basis::Ordering::paper,
                                                        .refresh_every = o.refresh_every,
                                                        .beta = o.basis_beta,
                                                        .refresh_window = o.refresh_window,
                                                        .refreshes_per_window = o.refreshes_per_window},
                                                       o, space, params);
  basis::KroneckerEigen::Hyper h{.ordering = basis::Ordering::paper,
                                 .refresh_every = o.refresh_every,
                                 .beta = o.basis_beta,
                                 .rank1 = o.rotate_vectors ? basis::Rank1::full : basis::Rank1::identity,
                                 .refresh_window = o.refresh_window,
                                 .refreshes_per_window = o.refreshes_per_window};
  if (base == "rot-cov-bi" || base == "soap") {
    if (base == "soap") h.ordering = basis::Ordering::soap;
  } else if (base == "rot-cov-uni") {
    h.geometry = basis::Geometry::one_sided;
  } else if (base == "rot-mom-bi") {
    h.source = basis::Source::momentum;
  } else if (base == "rot-mom-uni") {
    h.source = basis::Source::momentum;
    h.geometry = basis::Geometry::one_sided;
  } else {
    throw unknown();
  }
  return detail::with_compensation<basis::KroneckerEigen>(comp, h, o, space, params, base == "soap");
}

}  // namespace delayopt::tools
