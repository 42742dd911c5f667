/// \file delayopt/schedule/constant.hpp
/// \brief Constant learning rate.
#pragma once

#include "delayopt/core/hyper.hpp"

#include <cstdint>

namespace delayopt::schedule {

/// lr(step) = lr.
struct Constant {
  double lr = 1e-3;

  void validate() const { hyper::require_nonnegative("schedule::Constant", "lr", lr); }
  double operator()(std::int64_t /*step*/) const { return lr; }
};

}  // namespace delayopt::schedule
