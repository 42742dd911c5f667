/// \file delayopt/delay/none.hpp
/// \brief No delay compensation: a stale gradient is applied as it is (PipeDream with stashing).
#pragma once

namespace delayopt::delay {

struct None {
  static constexpr const char* name = "delay::None";
  static constexpr bool is_none = true;

  struct Hyper {
    void validate() const {}
  };
};

}  // namespace delayopt::delay
