/// \file delayopt/core/concepts.hpp
/// \brief The concepts every policy is checked against.
///
/// An optimizer is Basis x Moment x Delay (x Schedule). Each policy is a type with a nested `Hyper`
/// aggregate (its hyperparameters, validated by `validate()`) and static members described below;
/// docs/design.md explains the protocol and how to add a policy.
#pragma once

#include "delayopt/core/step_context.hpp"

#include <Kokkos_Core.hpp>

#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace delayopt {

/// A hyperparameter block: an aggregate usable with designated initializers, with defaults, and a
/// `validate()` that throws invalid_hyperparameter naming the offending field.
template <class H>
concept HyperParameters = std::is_aggregate_v<H> && std::default_initializable<H> && std::copyable<H> &&
    requires(const H& h) {
  h.validate();
};

/// A policy names itself and carries a Hyper block.
template <class P>
concept Policy = HyperParameters<typename P::Hyper> && requires {
  { P::name } -> std::convertible_to<std::string_view>;
};

/// Learning-rate schedule: lr as a function of the 0-based application step, evaluated on the host.
template <class S>
concept LRSchedule = HyperParameters<S> && requires(const S& s, std::int64_t step) {
  { s(step) } -> std::convertible_to<double>;
};

/// How a change of basis treats a moment slot: `linear` statistics (first moments) are rotated into
/// the new basis; `second_moment` statistics are permuted with the basis columns (SOAP's
/// approximation: rotating an element-wise second moment is not defined).
enum class SlotKind { linear, second_moment };

/// Per-element moment update. `slots` arrays of per-element state (Adam: m and v) with their
/// `slot_kinds`; `coeffs` turns the hyperparameters, learning rate and 1-based step into kernel
/// constants; `gradient` adds parameter-dependent terms (coupled L2) in the parameter basis;
/// `direction` updates the slots in place and returns the increment in the moments' basis; `apply`
/// combines parameter and increment (where decoupled weight decay lives).
template <class M>
concept MomentPolicy = Policy<M> && requires(const typename M::Hyper& h, double lr, std::int64_t t, double g, double p,
                                             Kokkos::Array<double, M::slots>& s) {
  { M::slots } -> std::convertible_to<int>;
  { M::slot_kinds[0] } -> std::convertible_to<SlotKind>;
  typename M::template Coeffs<double>;
  { M::template coeffs<double>(h, lr, t) } -> std::same_as<typename M::template Coeffs<double>>;
  { M::gradient(M::template coeffs<double>(h, lr, t), g, p) } -> std::same_as<double>;
  { M::direction(M::template coeffs<double>(h, lr, t), g, s) } -> std::same_as<double>;
  { M::apply(M::template coeffs<double>(h, lr, t), p, g) } -> std::same_as<double>;
};

/// Coordinate system the moment policy runs in. `is_identity` bases (Adam) take the fused
/// single-pass path.
template <class B>
concept BasisPolicy = Policy<B> && requires {
  { B::is_identity } -> std::convertible_to<bool>;
};

/// Correction for stale gradients: `lr_factor` scales the step from the staleness (host), `correct`
/// adjusts a gradient element from dw = w_now - w_stale (when `needs_stale_params`), `finalize` sees
/// each parameter's old and new value with `slots` per-element state arrays.
template <class D>
concept DelayPolicy = Policy<D> && requires(const typename D::Hyper& h, const StepContext& ctx, double g, double dw,
                                            Kokkos::Array<double, (D::slots > 0 ? D::slots : 1)>& s) {
  { D::is_none } -> std::convertible_to<bool>;
  { D::needs_stale_params } -> std::convertible_to<bool>;
  { D::slots } -> std::convertible_to<int>;
  { D::lr_factor(h, ctx, std::int64_t{0}) } -> std::convertible_to<double>;
  { D::correct(D::template coeffs<double>(h, ctx), g, dw) } -> std::same_as<double>;
  { D::finalize(D::template coeffs<double>(h, ctx), g, dw, s) } -> std::same_as<double>;
};

}  // namespace delayopt
