/// \file delayopt/delayopt.hpp
/// \brief Umbrella header: every public policy, the optimizer, the stepper and the delay harness.
#pragma once

#if __cplusplus < 202002L
#error "delayopt needs C++20 (compile with -std=c++20 or link delayopt::delayopt, which requests it)"
#endif

#include "delayopt/version.hpp"

#include "delayopt/core/compat.hpp"
#include "delayopt/core/concepts.hpp"
#include "delayopt/core/error.hpp"
#include "delayopt/core/nonfinite.hpp"
#include "delayopt/core/optimizer.hpp"
#include "delayopt/core/param_set.hpp"
#include "delayopt/core/step_context.hpp"
#include "delayopt/core/stepper.hpp"

#include "delayopt/basis/identity.hpp"
#include "delayopt/basis/kronecker_eigen.hpp"
#include "delayopt/delay/dc_asgd.hpp"
#include "delayopt/delay/nesterov.hpp"
#include "delayopt/delay/none.hpp"
#include "delayopt/delay/stage_lr_discount.hpp"
#include "delayopt/delay/weight_prediction.hpp"
#include "delayopt/io/checkpoint.hpp"
#include "delayopt/moment/adam.hpp"
#include "delayopt/moment/momentum.hpp"
#include "delayopt/moment/nadam.hpp"
#include "delayopt/probe/misalignment.hpp"
#include "delayopt/schedule/constant.hpp"
#include "delayopt/schedule/refresh_budget.hpp"
#include "delayopt/schedule/warmup_cosine.hpp"
#include "delayopt/sim/delayed_gradients.hpp"

#include "delayopt/aliases.hpp"
