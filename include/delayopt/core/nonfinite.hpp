/// \file delayopt/core/nonfinite.hpp
/// \brief What update() does with a gradient that holds NaN or Inf.
#pragma once

namespace delayopt {

/// In every checked mode params and state are left exactly as they were.
enum class NonFinitePolicy {
  /// Skip the whole step on the device and count it (Optimizer::skipped_steps); no host sync.
  skip_step,
  /// Throw nonfinite_gradient naming the first bad block. Reads the check on the host: fences `space`.
  throw_error,
  /// No check: one read of the gradient less per step; a NaN gradient corrupts params and state.
  unchecked,
};

}  // namespace delayopt
