/// \file delayopt/core/hyper.hpp
/// \brief Range checks shared by every hyperparameter aggregate's validate().
#pragma once

#include "delayopt/core/error.hpp"

#include <cmath>
#include <sstream>
#include <string_view>

namespace delayopt::hyper {

/// Interval ends for require_in(): closed '[' / ']' or open '(' / ')'.
enum class bound { closed, open };

/// Throws invalid_hyperparameter("<owner>: <field> = <value> is outside <interval>") unless value
/// lies in the interval. Infinite limits print as -inf / inf.
inline void require_in(std::string_view owner, std::string_view field, double value, double lo, bound lo_b, double hi,
                       bound hi_b) {
  const bool above = lo_b == bound::closed ? value >= lo : value > lo;
  const bool below = hi_b == bound::closed ? value <= hi : value < hi;
  if (above && below) return;  // NaN fails both comparisons
  std::ostringstream msg;
  msg << owner << ": " << field << " = " << value << " is outside " << (lo_b == bound::closed ? '[' : '(') << lo << ", "
      << hi << (hi_b == bound::closed ? ']' : ')');
  throw invalid_hyperparameter(msg.str());
}

/// value in [0, 1)
inline void require_unit_interval(std::string_view owner, std::string_view field, double value) {
  require_in(owner, field, value, 0.0, bound::closed, 1.0, bound::open);
}

/// value in (0, inf)
inline void require_positive(std::string_view owner, std::string_view field, double value) {
  require_in(owner, field, value, 0.0, bound::open, INFINITY, bound::open);
}

/// value in [0, inf)
inline void require_nonnegative(std::string_view owner, std::string_view field, double value) {
  require_in(owner, field, value, 0.0, bound::closed, INFINITY, bound::open);
}

}  // namespace delayopt::hyper
