/// \file delayopt/basis/identity.hpp
/// \brief The coordinate basis: the moment policy runs on the raw gradient (plain Adam).
#pragma once

namespace delayopt::basis {

/// No rotation. Optimizers with this basis run one fused pass over p, g and the moment slots.
struct Identity {
  static constexpr const char* name = "basis::Identity";
  static constexpr bool is_identity = true;

  struct Hyper {
    void validate() const {}
  };

  /// No per-run state.
  template <class T, class ExecSpace>
  struct State {};
};

}  // namespace delayopt::basis
