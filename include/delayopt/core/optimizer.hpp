/// \file delayopt/core/optimizer.hpp
/// \brief Optimizer<Basis, Moment, Delay, Schedule>: optax-style init/update on any Kokkos space.
///
///   delayopt::Optimizer<basis::Identity, moment::Adam, delay::None> opt(
///       {.moment = {.beta2 = 0.99}, .schedule = {.lr = 1e-2}});
///   auto state = opt.init(space, params);
///   opt.update(space, params, grads, state);   // enqueued on `space`, no fence
#pragma once

#include "delayopt/core/compat.hpp"
#include "delayopt/core/concepts.hpp"
#include "delayopt/core/error.hpp"
#include "delayopt/core/for_each_chunk.hpp"
#include "delayopt/core/hyper.hpp"
#include "delayopt/core/nonfinite.hpp"
#include "delayopt/core/param_set.hpp"
#include "delayopt/core/step_context.hpp"
#include "delayopt/schedule/constant.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace delayopt {

namespace detail {

/// Device counters of one optimizer state.
enum counter : int { applied = 0, skipped = 1 };

/// Device-side view of a delay policy: its coefficients, the stale parameters (if it needs them)
/// and its per-element slots.
template <class Delay, class T, class ExecSpace>
struct DelayKernelData {
  static constexpr int DS = Delay::slots > 0 ? Delay::slots : 1;  // no zero-length arrays
  using refs_view = Kokkos::View<BlockRef<T>*, typename ExecSpace::memory_space>;
  typename Delay::template Coeffs<T> c;
  refs_view stale;  // Delay::needs_stale_params only
  Kokkos::Array<refs_view, DS> slots;

  struct Pointers {
    const T* stale;
    T* s[DS];
  };
  KOKKOS_INLINE_FUNCTION Pointers pointers(std::uint32_t block) const {
    Pointers x{};
    if constexpr (Delay::needs_stale_params) x.stale = stale(block).data;
    if constexpr (Delay::slots > 0)
      for (int k = 0; k < Delay::slots; ++k) x.s[k] = slots[k](block).data;
    return x;
  }
  /// Delay::finalize on element i (old and new parameter value), slots loaded and stored.
  KOKKOS_FORCEINLINE_FUNCTION T finalize(const Pointers& x, std::size_t i, T p_old, T p_new) const {
    if constexpr (Delay::slots > 0) {
      Kokkos::Array<T, Delay::slots> ds;
      for (int k = 0; k < Delay::slots; ++k) ds[k] = x.s[k][i];
      p_new = Delay::finalize(c, p_old, p_new, ds);
      for (int k = 0; k < Delay::slots; ++k) x.s[k][i] = ds[k];
    }
    return p_new;
  }
};

/// The fused Identity-basis step: one pass reads p, g and the moment slots and writes p and the
/// slots (plus the stale parameters and delay slots for the delay policies that use them).
template <class Moment, class Delay, class T, class ExecSpace>
struct FusedStep {
  static constexpr int N = Moment::slots;
  using memory_space = typename ExecSpace::memory_space;
  using refs_view = Kokkos::View<BlockRef<T>*, memory_space>;

  refs_view p, g;
  Kokkos::Array<refs_view, N> s;
  DelayKernelData<Delay, T, ExecSpace> delay;
  Kokkos::View<double, memory_space> grad_sqnorm;
  Kokkos::View<std::int64_t[2], memory_space> counters;
  typename Moment::Hyper hyper;
  double lr;
  double max_norm;  // <= 0: no clipping
  bool check;

  struct Context {
    T* p;
    const T* g;
    T* s[N];
    typename DelayKernelData<Delay, T, ExecSpace>::Pointers d;
    typename Moment::template Coeffs<T> c;
    T scale;
    bool skip;
  };

  KOKKOS_INLINE_FUNCTION Context chunk_context(const Chunk& ch) const {
    Context x;
    const double n2 = (check || max_norm > 0) ? grad_sqnorm() : 0.0;
    x.skip = check && !compat::isfinite(n2);
    // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), clamped to 1.
    const double coef = max_norm > 0 ? max_norm / (compat::sqrt(n2) + 1e-6) : 1.0;
    x.scale = static_cast<T>(coef < 1.0 ? coef : 1.0);
    x.c = Moment::template coeffs<T>(hyper, lr, counters(applied) + 1);
    x.p = p(ch.block).data;
    x.g = g(ch.block).data;
    for (int k = 0; k < N; ++k) x.s[k] = s[k](ch.block).data;
    x.d = delay.pointers(ch.block);
    return x;
  }

  KOKKOS_FORCEINLINE_FUNCTION void element(const Context& x, const std::size_t i) const {
    const T pi = x.p[i];
    Kokkos::Array<T, N> si;
    for (int k = 0; k < N; ++k) si[k] = x.s[k][i];
    T gi = x.g[i] * x.scale;
    if constexpr (Delay::needs_stale_params) gi = Delay::correct(delay.c, gi, pi - x.d.stale[i]);
    const T delta = Moment::direction(x.c, Moment::gradient(x.c, gi, pi), si);
    x.p[i] = delay.finalize(x.d, i, pi, Moment::apply(x.c, pi, delta));
    for (int k = 0; k < N; ++k) x.s[k][i] = si[k];
  }
};

/// Rotated path, pass 1: the effective gradient Moment::gradient(g * clip, p) in the parameter basis,
/// with the delay correction when it acts in the coordinate basis.
template <class Moment, class Delay, class T, class ExecSpace>
struct EffectiveGradient {
  using memory_space = typename ExecSpace::memory_space;
  Kokkos::View<BlockRef<T>*, memory_space> p, g, out;
  DelayKernelData<Delay, T, ExecSpace> delay;
  Kokkos::View<std::int64_t[2], memory_space> counters;
  typename Moment::Hyper hyper;
  double lr;
  T scale;
  bool correct;  // apply Delay::correct here (coordinate basis)

  struct Context {
    const T* p;
    const T* g;
    T* out;
    typename DelayKernelData<Delay, T, ExecSpace>::Pointers d;
    typename Moment::template Coeffs<T> c;
    bool skip;
  };
  KOKKOS_INLINE_FUNCTION Context chunk_context(const Chunk& ch) const {
    return {p(ch.block).data,
            g(ch.block).data,
            out(ch.block).data,
            delay.pointers(ch.block),
            Moment::template coeffs<T>(hyper, lr, counters(applied) + 1),
            false};
  }
  KOKKOS_FORCEINLINE_FUNCTION void element(const Context& x, const std::size_t i) const {
    T gi = x.g[i] * scale;
    if constexpr (Delay::needs_stale_params)
      if (correct) gi = Delay::correct(delay.c, gi, x.p[i] - x.d.stale[i]);
    x.out[i] = Moment::gradient(x.c, gi, x.p[i]);
  }
};

/// Rotated path: w_now - w_stale into `out` (projected afterwards for a rotated-basis correction).
template <class T, class ExecSpace>
struct WeightDifference {
  using memory_space = typename ExecSpace::memory_space;
  Kokkos::View<BlockRef<T>*, memory_space> p, stale, out;
  struct Context {
    const T* p;
    const T* stale;
    T* out;
    bool skip;
  };
  KOKKOS_INLINE_FUNCTION Context chunk_context(const Chunk& ch) const {
    return {p(ch.block).data, stale(ch.block).data, out(ch.block).data, false};
  }
  KOKKOS_FORCEINLINE_FUNCTION void element(const Context& x, const std::size_t i) const {
    x.out[i] = x.p[i] - x.stale[i];
  }
};

/// Rotated path, pass 2: the moment update on the projected gradient, in place (g~ -> increment~),
/// with the delay correction when it acts in the rotated basis (dw~ = U^T (w_now - w_stale) V).
template <class Moment, class Delay, class T, class ExecSpace>
struct RotatedDirection {
  static constexpr int N = Moment::slots;
  using memory_space = typename ExecSpace::memory_space;
  using refs_view = Kokkos::View<BlockRef<T>*, memory_space>;
  refs_view x, dw;  // dw: only read when `correct`
  Kokkos::Array<refs_view, N> s;
  typename Delay::template Coeffs<T> dc;
  Kokkos::View<std::int64_t[2], memory_space> counters;
  typename Moment::Hyper hyper;
  double lr;
  bool correct;

  struct Context {
    T* x;
    const T* dw;
    T* s[N];
    typename Moment::template Coeffs<T> c;
    bool skip;
  };
  KOKKOS_INLINE_FUNCTION Context chunk_context(const Chunk& ch) const {
    Context ctx;
    ctx.x = x(ch.block).data;
    ctx.dw = correct ? dw(ch.block).data : nullptr;
    for (int k = 0; k < N; ++k) ctx.s[k] = s[k](ch.block).data;
    ctx.c = Moment::template coeffs<T>(hyper, lr, counters(applied) + 1);
    ctx.skip = false;
    return ctx;
  }
  KOKKOS_FORCEINLINE_FUNCTION void element(const Context& ctx, const std::size_t i) const {
    Kokkos::Array<T, N> si;
    for (int k = 0; k < N; ++k) si[k] = ctx.s[k][i];
    T gi = ctx.x[i];
    if constexpr (Delay::needs_stale_params)
      if (correct) gi = Delay::correct(dc, gi, ctx.dw[i]);
    ctx.x[i] = Moment::direction(ctx.c, gi, si);
    for (int k = 0; k < N; ++k) ctx.s[k][i] = si[k];
  }
};

/// Rotated path, pass 3: p <- Moment::apply(p, increment) with the increment back in the parameter
/// basis, then the delay policy's finalizer.
template <class Moment, class Delay, class T, class ExecSpace>
struct ApplyIncrement {
  using memory_space = typename ExecSpace::memory_space;
  Kokkos::View<BlockRef<T>*, memory_space> p, delta;
  DelayKernelData<Delay, T, ExecSpace> delay;
  Kokkos::View<std::int64_t[2], memory_space> counters;
  typename Moment::Hyper hyper;
  double lr;

  struct Context {
    T* p;
    const T* d;
    typename DelayKernelData<Delay, T, ExecSpace>::Pointers dp;
    typename Moment::template Coeffs<T> c;
    bool skip;
  };
  KOKKOS_INLINE_FUNCTION Context chunk_context(const Chunk& ch) const {
    return {p(ch.block).data, delta(ch.block).data, delay.pointers(ch.block),
            Moment::template coeffs<T>(hyper, lr, counters(applied) + 1), false};
  }
  KOKKOS_FORCEINLINE_FUNCTION void element(const Context& x, const std::size_t i) const {
    const T pi = x.p[i];
    x.p[i] = delay.finalize(x.dp, i, pi, Moment::apply(x.c, pi, x.d[i]));
  }
};

/// Advances the applied or the skipped counter after a step (one work item).
template <class ExecSpace>
struct FinishStep {
  Kokkos::View<double, typename ExecSpace::memory_space> grad_sqnorm;
  Kokkos::View<std::int64_t[2], typename ExecSpace::memory_space> counters;
  bool check;

  KOKKOS_INLINE_FUNCTION void operator()(const int) const {
    const bool skip = check && !compat::isfinite(grad_sqnorm());
    counters(skip ? skipped : applied) += 1;
  }
};

template <class B, class M, class D, class S>
constexpr bool valid_composition() {
  static_assert(BasisPolicy<B>,
                "delayopt::Optimizer<Basis, Moment, Delay, Schedule>: the first argument is not a basis policy "
                "(expected e.g. delayopt::basis::Identity; see delayopt/core/concepts.hpp, BasisPolicy)");
  static_assert(MomentPolicy<M>,
                "delayopt::Optimizer<Basis, Moment, Delay, Schedule>: the second argument is not a moment policy "
                "(expected e.g. delayopt::moment::Adam; see delayopt/core/concepts.hpp, MomentPolicy)");
  static_assert(DelayPolicy<D>,
                "delayopt::Optimizer<Basis, Moment, Delay, Schedule>: the third argument is not a delay policy "
                "(expected e.g. delayopt::delay::None; see delayopt/core/concepts.hpp, DelayPolicy)");
  static_assert(LRSchedule<S>,
                "delayopt::Optimizer<Basis, Moment, Delay, Schedule>: the fourth argument is not a learning-rate "
                "schedule (expected e.g. delayopt::schedule::Constant; see delayopt/core/concepts.hpp, LRSchedule)");
  return BasisPolicy<B> && MomentPolicy<M> && DelayPolicy<D> && LRSchedule<S>;
}

}  // namespace detail

/// Basis x Moment x Delay, with a learning-rate schedule. Holds hyperparameters only; per-run state is
/// a separate value (State) so pipeline stages can stash and double-buffer it.
template <class Basis, class Moment, class Delay, class Schedule = schedule::Constant>
requires(detail::valid_composition<Basis, Moment, Delay, Schedule>()) class Optimizer {
 public:
  using basis_type = Basis;
  using moment_type = Moment;
  using delay_type = Delay;
  using schedule_type = Schedule;

  /// Every hyperparameter of the composition. Use designated initializers; omitted fields keep defaults.
  struct Config {
    typename Basis::Hyper basis{};
    typename Moment::Hyper moment{};
    typename Delay::Hyper delay{};
    Schedule schedule{};
    /// Global L2-norm clipping of the gradient (torch.nn.utils.clip_grad_norm_); 0 disables it.
    double clip_global_norm = 0.0;
    NonFinitePolicy nonfinite = NonFinitePolicy::skip_step;

    void validate() const {
      basis.validate();
      moment.validate();
      delay.validate();
      schedule.validate();
      hyper::require_nonnegative("Optimizer", "clip_global_norm", clip_global_norm);
    }
  };

  /// Per-run state. Copies are shallow (Kokkos::View semantics); Optimizer::clone makes a deep copy.
  template <class T, class ExecSpace>
  struct State {
    using memory_space = typename ExecSpace::memory_space;
    /// update() calls made with this state (host side; includes skipped steps).
    std::int64_t calls = 0;
    /// [applied, skipped] steps, on the device so a skipped step needs no host sync.
    Kokkos::View<std::int64_t[2], memory_space> counters;
    /// Scratch for the gradient's squared norm.
    Kokkos::View<double, memory_space> grad_sqnorm;
    /// Moment slots (Adam: m, v), shaped like the parameters, in the basis' coordinates.
    std::array<ParamSet<T, ExecSpace>, Moment::slots> moments;
    /// The basis' own state (factors, eigenbases, counters); empty for basis::Identity.
    typename Basis::template State<T, ExecSpace> basis;
    /// Rotated bases only: effective gradient, projected increment and (for a rotated-basis delay
    /// correction) the projected weight difference, shaped like the parameters.
    std::array<ParamSet<T, ExecSpace>, Basis::is_identity ? 0 : (Delay::needs_stale_params ? 3 : 2)> scratch;
    /// Per-element state of the delay policy (Nesterov: the last step; weight prediction: the
    /// velocity EMA), in the parameter basis.
    std::array<ParamSet<T, ExecSpace>, Delay::slots> delay;
  };

  Optimizer() : Optimizer(Config{}) {}
  explicit Optimizer(const Config& config) : config_(config) { config_.validate(); }

  const Config& config() const { return config_; }

  /// Zero-initialised state for `params`. Allocates; call once, not per step.
  template <class T, class ExecSpace>
  State<T, ExecSpace> init(const ExecSpace& /*space*/, const ParamSet<T, ExecSpace>& params) const {
    State<T, ExecSpace> st;
    st.counters = decltype(st.counters)("delayopt::State::counters");
    st.grad_sqnorm = decltype(st.grad_sqnorm)("delayopt::State::grad_sqnorm");
    for (int k = 0; k < Moment::slots; ++k)
      st.moments[k] = ParamSet<T, ExecSpace>::zeros_like(params, "delayopt::State::moment" + std::to_string(k));
    if constexpr (!Basis::is_identity) {
      st.basis = Basis::init(config_.basis, params);
      for (auto& s : st.scratch) s = ParamSet<T, ExecSpace>::zeros_like(params, "delayopt::State::scratch");
    }
    for (auto& d : st.delay) d = ParamSet<T, ExecSpace>::zeros_like(params, "delayopt::State::delay");
    return st;
  }

  /// Applies one step to `params` from `grads`, enqueued on `space`. Shapes are checked first: on any
  /// error params and state are untouched. Fences only under NonFinitePolicy::throw_error, and with
  /// rotated bases (docs/design.md). `stale_params` are the parameters the gradient was taken at, for
  /// delay policies that need them (delay::DCASGD).
  template <class T, class ExecSpace, class Grads>
  void update(const ExecSpace& space, ParamSet<T, ExecSpace>& params, const Grads& grads, State<T, ExecSpace>& state,
              const StepContext& ctx = {}, const ParamSet<T, ExecSpace>* stale_params = nullptr) const {
    static_assert(std::is_same_v<Grads, ParamSet<T, ExecSpace>>,
                  "delayopt::Optimizer::update: grads must be a ParamSet with the same value type and execution "
                  "space as params");
    // Built once: a string per call would be a heap allocation on every step.
    static const std::string region_name =
        std::string("delayopt::Optimizer<") + Basis::name + ", " + Moment::name + ">::update";
    compat::ScopedRegion region(region_name);
    ParamSet<T, ExecSpace>::require_same_shapes(params, grads, "delayopt::Optimizer::update", "params", "grads");
    ParamSet<T, ExecSpace>::require_same_shapes(params, state.moments[0], "delayopt::Optimizer::update", "params",
                                                "state");
    if constexpr (Delay::needs_stale_params) {
      if (!stale_params)
        throw invalid_input(std::string("delayopt::Optimizer::update: ") + Delay::name +
                            " needs the parameters the gradient was taken at (stale_params)");
      ParamSet<T, ExecSpace>::require_same_shapes(params, *stale_params, "delayopt::Optimizer::update", "params",
                                                  "stale_params");
    }
    hyper::require_nonnegative("StepContext", "lr_scale", ctx.lr_scale);
    hyper::require_nonnegative("StepContext", "tau", ctx.tau);
    const std::int64_t step = ctx.step >= 0 ? ctx.step : state.calls;
    const double lr = config_.schedule(step) * ctx.lr_scale * Delay::lr_factor(config_.delay, ctx, step);
    hyper::require_nonnegative("schedule", "lr", lr);

    detail::DelayKernelData<Delay, T, ExecSpace> delay{Delay::template coeffs<T>(config_.delay, ctx), {}, {}};
    if constexpr (Delay::needs_stale_params) delay.stale = stale_params->refs();
    for (int k = 0; k < Delay::slots; ++k) delay.slots[k] = state.delay[k].refs();

    if constexpr (Basis::is_identity)
      update_fused(space, params, grads, state, lr, delay);
    else
      update_rotated(space, params, grads, state, lr, delay, stale_params);
    ++state.calls;
  }

  /// Steps whose update was applied (fences: reads a device counter).
  template <class T, class ExecSpace>
  static std::int64_t applied_steps(const State<T, ExecSpace>& state) {
    return read_counter(state, detail::applied);
  }
  /// Steps skipped for a non-finite gradient under NonFinitePolicy::skip_step (fences).
  template <class T, class ExecSpace>
  static std::int64_t skipped_steps(const State<T, ExecSpace>& state) {
    return read_counter(state, detail::skipped);
  }

  /// Bytes of persistent optimizer state: slots x elements x sizeof(T), plus counters.
  template <class T, class ExecSpace>
  static std::size_t state_bytes(const State<T, ExecSpace>& state) {
    std::size_t bytes = sizeof(std::int64_t) * 2;
    for (const auto& m : state.moments) bytes += m.total_size() * sizeof(T);
    for (const auto& d : state.delay) bytes += d.total_size() * sizeof(T);
    if constexpr (!Basis::is_identity) bytes += Basis::state_bytes(state.basis);
    return bytes;
  }

  /// Deep copy of a state (for checkpoints): allocates, which fences like any Kokkos allocation,
  /// then enqueues the copies on `space`.
  template <class T, class ExecSpace>
  static State<T, ExecSpace> clone(const ExecSpace& space, const State<T, ExecSpace>& state) {
    State<T, ExecSpace> out;
    out.calls = state.calls;
    out.counters = decltype(out.counters)("delayopt::State::counters");
    out.grad_sqnorm = decltype(out.grad_sqnorm)("delayopt::State::grad_sqnorm");
    Kokkos::deep_copy(space, out.counters, state.counters);
    for (int k = 0; k < Moment::slots; ++k) out.moments[k] = state.moments[k].clone(space);
    if constexpr (!Basis::is_identity) {
      out.basis = Basis::clone(space, state.basis);
      for (std::size_t k = 0; k < out.scratch.size(); ++k) out.scratch[k] = state.scratch[k].clone(space);
    }
    for (int k = 0; k < Delay::slots; ++k) out.delay[k] = state.delay[k].clone(space);
    return out;
  }

 private:
  template <class T, class ExecSpace>
  void reduce_grad_sqnorm(const ExecSpace& space, const ParamSet<T, ExecSpace>& params,
                          const ParamSet<T, ExecSpace>& grads, State<T, ExecSpace>& state) const {
    detail::sum_of_squares(space, detail::Label::grad_sqnorm, params.chunks(), grads.refs(), state.grad_sqnorm);
  }

  template <class T, class ExecSpace>
  void finish(const ExecSpace& space, State<T, ExecSpace>& state, bool check) const {
    Kokkos::parallel_for(detail::Label::finish_step, Kokkos::RangePolicy<ExecSpace>(space, 0, 1),
                         detail::FinishStep<ExecSpace>{state.grad_sqnorm, state.counters, check});
  }

  /// Identity basis: one fused pass; a non-finite gradient cancels the pass on the device.
  template <class T, class ExecSpace>
  void update_fused(const ExecSpace& space, ParamSet<T, ExecSpace>& params, const ParamSet<T, ExecSpace>& grads,
                    State<T, ExecSpace>& state, double lr,
                    const detail::DelayKernelData<Delay, T, ExecSpace>& delay) const {
    const bool check = config_.nonfinite != NonFinitePolicy::unchecked;
    if (check || config_.clip_global_norm > 0) reduce_grad_sqnorm(space, params, grads, state);
    if (config_.nonfinite == NonFinitePolicy::throw_error) throw_if_nonfinite(space, grads, state);
    detail::FusedStep<Moment, Delay, T, ExecSpace> step{params.refs(),
                                                        grads.refs(),
                                                        {},
                                                        delay,
                                                        state.grad_sqnorm,
                                                        state.counters,
                                                        config_.moment,
                                                        lr,
                                                        config_.clip_global_norm,
                                                        check};
    for (int k = 0; k < Moment::slots; ++k) step.s[k] = state.moments[k].refs();
    detail::for_each_chunk(space, detail::Label::fused_step, params.chunks(), step);
    finish(space, state, check);
  }

  /// Rotated bases: effective gradient -> basis bookkeeping -> project -> moment update -> project
  /// back -> apply. The basis works on host data with Eigen, so this path fences `space`.
  template <class T, class ExecSpace>
  void update_rotated(const ExecSpace& space, ParamSet<T, ExecSpace>& params, const ParamSet<T, ExecSpace>& grads,
                      State<T, ExecSpace>& state, double lr, const detail::DelayKernelData<Delay, T, ExecSpace>& delay,
                      const ParamSet<T, ExecSpace>* stale_params) const {
    const bool check = config_.nonfinite != NonFinitePolicy::unchecked;
    double n2 = 0.0;
    if (check || config_.clip_global_norm > 0) {
      reduce_grad_sqnorm(space, params, grads, state);
      Kokkos::deep_copy(space, n2, state.grad_sqnorm);
    }
    compat::fence(space, "delayopt::Optimizer::update: rotated basis");
    if (check && !std::isfinite(n2)) {
      if (config_.nonfinite == NonFinitePolicy::throw_error) throw_if_nonfinite(space, grads, state);
      finish(space, state, check);  // counts the skip; nothing else is touched
      return;
    }
    const double coef = config_.clip_global_norm > 0 ? config_.clip_global_norm / (std::sqrt(n2) + 1e-6) : 1.0;
    auto& geff = state.scratch[0];
    auto& work = state.scratch[1];
    const bool rotated_correction = delay_in_rotated_basis();
    detail::for_each_chunk(space, detail::Label::effective_gradient, params.chunks(),
                           detail::EffectiveGradient<Moment, Delay, T, ExecSpace>{
                               params.refs(), grads.refs(), geff.refs(), delay, state.counters, config_.moment, lr,
                               static_cast<T>(std::min(coef, 1.0)), !rotated_correction});
    compat::fence(space, "delayopt::Optimizer::update: effective gradient");

    const auto settings = Basis::settings(config_.basis, moment_beta1(), moment_beta2());
    // Slot indices by kind depend only on the moment policy: computed once, not every step. (A plain
    // pair: GCC 12 mangles static structured bindings of different instantiations to one symbol.)
    static const std::pair<std::vector<int>, std::vector<int>> slot_split = [] {
      std::pair<std::vector<int>, std::vector<int>> split;
      for (int k = 0; k < Moment::slots; ++k)
        (Moment::slot_kinds[k] == SlotKind::linear ? split.first : split.second).push_back(k);
      return split;
    }();
    const auto& linear = slot_split.first;
    const auto& second = slot_split.second;
    if (!Basis::begin_step(space, settings, state.basis, geff, state.moments, linear, second, work)) return;

    Basis::project(space, state.basis, geff, work);
    detail::RotatedDirection<Moment, Delay, T, ExecSpace> dir{work.refs(),    work.refs(),    {}, delay.c,
                                                              state.counters, config_.moment, lr, false};
    if constexpr (Delay::needs_stale_params) {
      if (rotated_correction) {  // dw~ = U^T (w_now - w_stale) V
        auto& dw = state.scratch[2];
        detail::for_each_chunk(space, detail::Label::weight_difference, params.chunks(),
                               detail::WeightDifference<T, ExecSpace>{params.refs(), stale_params->refs(), dw.refs()});
        compat::fence(space, "delayopt::Optimizer::update: weight difference");
        Basis::project(space, state.basis, dw, dw);
        dir.dw = dw.refs();
        dir.correct = true;
      }
    } else {
      (void)stale_params;
    }
    for (int k = 0; k < Moment::slots; ++k) dir.s[k] = state.moments[k].refs();
    detail::for_each_chunk(space, detail::Label::rotated_direction, params.chunks(), dir);
    compat::fence(space, "delayopt::Optimizer::update: rotated direction");
    Basis::project_back(space, state.basis, work);
    detail::for_each_chunk(space, detail::Label::apply_increment, params.chunks(),
                           detail::ApplyIncrement<Moment, Delay, T, ExecSpace>{params.refs(), work.refs(), delay,
                                                                               state.counters, config_.moment, lr});
    finish(space, state, false);
    compat::fence(space, "delayopt::Optimizer::update: before refresh");
    Basis::end_step(space, settings, state.basis, state.moments, linear, second, work);
  }

  /// Whether the delay correction acts in the rotated coordinates (delay::DCASGD::Hyper::in_rotated_basis).
  bool delay_in_rotated_basis() const {
    if constexpr (requires { config_.delay.in_rotated_basis; })
      return config_.delay.in_rotated_basis;
    else
      return false;
  }

  double moment_beta1() const {
    if constexpr (requires { config_.moment.beta1; })
      return config_.moment.beta1;
    else if constexpr (requires { config_.moment.momentum; })
      return config_.moment.momentum;
    else
      return 0.9;
  }
  double moment_beta2() const {
    if constexpr (requires { config_.moment.beta2; })
      return config_.moment.beta2;
    else
      return 0.999;
  }

  template <class T, class ExecSpace>
  static std::int64_t read_counter(const State<T, ExecSpace>& state, int which) {
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), state.counters);
    return h(which);
  }

  template <class T, class ExecSpace>
  static void throw_if_nonfinite(const ExecSpace& space, const ParamSet<T, ExecSpace>& grads,
                                 const State<T, ExecSpace>& state) {
    double n2 = 0.0;
    Kokkos::deep_copy(space, n2, state.grad_sqnorm);
    compat::fence(space, "delayopt::Optimizer::update: non-finite check");
    if (std::isfinite(n2)) return;
    for (std::size_t b = 0; b < grads.num_blocks(); ++b) {  // rare path: find the block to name
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), grads.flat(b));
      for (std::size_t i = 0; i < h.extent(0); ++i)
        if (!std::isfinite(h(i)))
          throw nonfinite_gradient("delayopt::Optimizer::update: gradient of block " + describe(grads.shape(b)) +
                                   " has a non-finite value at element " + std::to_string(i) +
                                   "; params and state were not changed");
    }
    throw nonfinite_gradient(
        "delayopt::Optimizer::update: the gradient's squared norm overflows double; params "
        "and state were not changed");
  }

  Config config_;
};

}  // namespace delayopt
