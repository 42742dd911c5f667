// Number checks for the command-line programs (CLI11 validators), shared by the convergence
// study, the demos and the pipeline example.
//
// Why not CLI::Range / CLI::PositiveNumber: they test `v < lo || v > hi`, which is false for NaN, so
// `--kappa nan` got through; and their messages print DBL_MAX in full ("not in range 0.000000 to
// 17976931348623157..."). These reject NaN and say the bound the way a user would write it.
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

namespace delayopt::cli {

/// Accepts a number v with lo < v (or lo <= v when `lo_closed`) and v < hi (or <= hi). An infinite
/// bound is open: `inf` and `nan` are never accepted.
inline CLI::Validator number_in(double lo, bool lo_closed, double hi, bool hi_closed) {
  std::ostringstream d;
  d << (lo_closed ? "[" : "(") << lo << ", " << hi << (hi_closed ? "]" : ")");
  const std::string range = d.str();
  return CLI::Validator(
      [=](std::string& input) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(input, v) || std::isnan(v)) return "'" + input + "' is not a number";
        const bool above = lo_closed && std::isfinite(lo) ? v >= lo : v > lo;
        const bool below = hi_closed && std::isfinite(hi) ? v <= hi : v < hi;
        if (!above || !below) return input + " is outside " + range;
        return {};
      },
      "in " + range);
}

constexpr double inf = std::numeric_limits<double>::infinity();

/// v > 0, finite.
inline const CLI::Validator positive = number_in(0, false, inf, false).description("> 0");
/// v >= 0, finite.
inline const CLI::Validator non_negative = number_in(0, true, inf, false).description(">= 0");
/// Any finite number.
inline const CLI::Validator finite = number_in(-inf, false, inf, false).description("finite");

}  // namespace delayopt::cli
