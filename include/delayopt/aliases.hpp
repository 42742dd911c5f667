/// \file delayopt/aliases.hpp
/// \brief Readable names for common compositions.
#pragma once

#include "delayopt/basis/identity.hpp"
#include "delayopt/basis/kronecker_eigen.hpp"
#include "delayopt/core/optimizer.hpp"
#include "delayopt/delay/none.hpp"
#include "delayopt/moment/adam.hpp"
#include "delayopt/moment/momentum.hpp"
#include "delayopt/moment/nadam.hpp"

namespace delayopt {

/// Adam / AdamW (set moment.weight_decay_mode) in the coordinate basis, no delay compensation.
template <class Schedule = schedule::Constant>
using AdamWith = Optimizer<basis::Identity, moment::Adam, delay::None, Schedule>;
using Adam = AdamWith<>;

/// SGD with heavy-ball or Nesterov momentum (torch.optim.SGD), coordinate basis, no delay compensation.
template <class Schedule = schedule::Constant>
using SGDWith = Optimizer<basis::Identity, moment::Momentum, delay::None, Schedule>;
using SGD = SGDWith<>;

/// Adam in the Kronecker-factored eigenbasis: SOAP with Ordering::soap, basis rotation with
/// Ordering::paper. soap_config() gives the published SOAP's defaults.
template <class Schedule = schedule::Constant>
using SOAPWith = Optimizer<basis::KroneckerEigen, moment::Adam, delay::None, Schedule>;
using SOAP = SOAPWith<>;

/// NAdam (torch form) with beta1 = 0.99: the asynchronous-pipeline Nesterov baseline (Ajanthan et al.
/// 2025).
using NAdam = Optimizer<basis::Identity, moment::NAdam, delay::None>;

/// NAdam run inside the Kronecker eigenbasis.
using RotatedNAdam = Optimizer<basis::KroneckerEigen, moment::NAdam, delay::None>;

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

/// The basis-rotation paper's optimizer (arXiv 2602.03515, Alg. 1, its launch settings): two-sided
/// covariance basis in the paper's ordering, refresh every 10, betas (0.9, 0.999), eps added to
/// sqrt(v) before bias correction, decoupled weight decay 0.01 before the step.
inline SOAP::Config basis_rotation_config(double lr = 1e-3) {
  SOAP::Config c;
  c.basis.ordering = basis::Ordering::paper;
  c.schedule.lr = lr;
  c.moment.weight_decay = 0.01;
  c.moment.weight_decay_mode = moment::Adam::WeightDecay::decoupled;
  c.moment.eps_mode = moment::Adam::Eps::before_bias_correction;
  return c;
}

}  // namespace delayopt
