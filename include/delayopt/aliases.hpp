/// \file delayopt/aliases.hpp
/// \brief Readable names for common compositions.
#pragma once

#include "delayopt/basis/identity.hpp"
#include "delayopt/basis/kronecker_eigen.hpp"
#include "delayopt/core/optimizer.hpp"
#include "delayopt/delay/none.hpp"
#include "delayopt/moment/adam.hpp"

namespace delayopt {

/// Adam / AdamW (set moment.weight_decay_mode) in the coordinate basis, no delay compensation.
template <class Schedule = schedule::Constant>
using AdamWith = Optimizer<basis::Identity, moment::Adam, delay::None, Schedule>;
using Adam = AdamWith<>;

/// Adam in the Kronecker-factored eigenbasis: SOAP with Ordering::soap, basis rotation with
/// Ordering::paper. soap_config() gives the published SOAP's defaults.
template <class Schedule = schedule::Constant>
using SOAPWith = Optimizer<basis::KroneckerEigen, moment::Adam, delay::None, Schedule>;
using SOAP = SOAPWith<>;

/// Adam in the eigenbasis of each block's full gradient covariance (small blocks).
using FullEigenAdam = Optimizer<basis::FullEigen, moment::Adam, delay::None>;

/// SOAP's published defaults (nikhilvyas/SOAP): betas (0.95, 0.95), eps added to sqrt(v) before
/// bias correction, decoupled weight decay 0.01 after the update, refresh every 10 steps.
inline SOAP::Config soap_config(double lr = 3e-3) {
  SOAP::Config c;
  c.schedule.lr = lr;
  c.moment.beta1 = 0.95;
  c.moment.beta2 = 0.95;
  c.moment.weight_decay = 0.01;
  c.moment.weight_decay_mode = moment::Adam::WeightDecay::decoupled_after_update;
  c.moment.eps_mode = moment::Adam::Eps::before_bias_correction;
  return c;
}

}  // namespace delayopt
