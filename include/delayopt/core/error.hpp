/// \file delayopt/core/error.hpp
/// \brief Exception types. Every error names the block or field it is about.
#pragma once

#include <stdexcept>
#include <string>

namespace delayopt {

/// Base of every exception delayopt throws.
struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A hyperparameter outside its documented range (message names the field and the range).
struct invalid_hyperparameter : error {
  using error::error;
};

/// Params, grads or state disagree in block count, names, ranks or extents.
struct shape_mismatch : error {
  using error::error;
};

/// A gradient with NaN or Inf under NonFinitePolicy::throw_error (message names the block).
struct nonfinite_gradient : error {
  using error::error;
};

/// Malformed input files or arguments (reference trajectories, checkpoints).
struct invalid_input : error {
  using error::error;
};

}  // namespace delayopt
