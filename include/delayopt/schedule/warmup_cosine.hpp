/// \file delayopt/schedule/warmup_cosine.hpp
/// \brief Linear warmup followed by cosine decay.
#pragma once

#include "delayopt/core/hyper.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>

namespace delayopt::schedule {

/// For 0-based step s: peak_lr * (s+1) / warmup_steps while s < warmup_steps, then
/// final_lr + (peak_lr - final_lr) * (1 + cos(pi * p)) / 2 with p = (s - warmup) / (total - warmup)
/// clamped to [0, 1]; final_lr from total_steps on.
struct WarmupCosine {
  double peak_lr = 1e-3;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1000;
  double final_lr = 0.0;

  void validate() const {
    constexpr auto owner = "schedule::WarmupCosine";
    hyper::require_nonnegative(owner, "peak_lr", peak_lr);
    hyper::require_in(owner, "final_lr", final_lr, 0.0, hyper::bound::closed, peak_lr, hyper::bound::closed);
    hyper::require_nonnegative(owner, "warmup_steps", static_cast<double>(warmup_steps));
    hyper::require_in(owner, "total_steps", static_cast<double>(total_steps), static_cast<double>(warmup_steps),
                      hyper::bound::open, INFINITY, hyper::bound::open);
  }

  double operator()(std::int64_t step) const {
    if (step < warmup_steps) return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    const double p = std::clamp(
        static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps), 0.0, 1.0);
    return final_lr + 0.5 * (peak_lr - final_lr) * (1.0 + std::cos(std::numbers::pi * p));
  }
};

}  // namespace delayopt::schedule
