/// \file delayopt/aliases.hpp
/// \brief Readable names for common compositions.
#pragma once

#include "delayopt/basis/identity.hpp"
#include "delayopt/core/optimizer.hpp"
#include "delayopt/delay/none.hpp"
#include "delayopt/moment/adam.hpp"

namespace delayopt {

/// Adam / AdamW (set moment.weight_decay_mode) in the coordinate basis, no delay compensation.
template <class Schedule = schedule::Constant>
using AdamWith = Optimizer<basis::Identity, moment::Adam, delay::None, Schedule>;
using Adam = AdamWith<>;

}  // namespace delayopt
