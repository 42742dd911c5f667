/// \file delayopt/core/step_context.hpp
/// \brief Per-call information passed to Optimizer::update.
#pragma once

#include <cstdint>

namespace delayopt {

/// What the caller knows about this update. Delay policies read `tau`; the schedule reads `step`.
struct StepContext {
  /// Application step for the learning-rate schedule (0-based). -1: the number of update() calls
  /// already made with this state. With delays the schedule runs at the step the update is applied,
  /// not the step the gradient was taken.
  std::int64_t step = -1;
  /// Staleness of the gradient in steps (0: fresh). Informational for delay::None.
  int tau = 0;
  /// Multiplies the scheduled learning rate (stage-wise discounts, per-call scaling).
  double lr_scale = 1.0;
};

}  // namespace delayopt
