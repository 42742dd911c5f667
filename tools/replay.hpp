/// \file tools/replay.hpp
/// \brief Replays a reference run file with delayopt and measures the deviation per parameter.
#pragma once

#include "reference.hpp"

#include <delayopt/delayopt.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace delayopt::reference {

/// Max abs deviation per parameter over all calls, and where it was largest.
struct Deviation {
  std::map<std::string, double> max_abs;
  std::map<std::string, int> worst_call;
  double overall() const {
    double m = 0;
    for (const auto& [k, v] : max_abs) m = std::max(m, v);
    return m;
  }
};

/// torch.optim.Adam / AdamW hyperparameters of a run file as a delayopt::Adam configuration.
inline Adam::Config adam_config(const Run& run) {
  const auto& h = run.hyperparams;
  const bool adamw = run.impl.rfind("torch.optim.AdamW", 0) == 0;
  if (!adamw && run.impl.rfind("torch.optim.Adam", 0) != 0)
    throw invalid_input("run '" + run.name + "': optimizer '" + run.impl + "' is not torch Adam/AdamW");
  if (h.value("amsgrad", false)) throw invalid_input("run '" + run.name + "': amsgrad is not supported");
  Adam::Config c;
  c.schedule.lr = h.at("lr");
  c.moment.beta1 = h.at("betas").at(0);
  c.moment.beta2 = h.at("betas").at(1);
  c.moment.eps = h.at("eps");
  c.moment.weight_decay = h.value("weight_decay", adamw ? 1e-2 : 0.0);
  c.moment.weight_decay_mode = adamw ? moment::Adam::WeightDecay::decoupled : moment::Adam::WeightDecay::l2;
  return c;
}

inline bool is_adam_run(const Run& run) { return run.impl.rfind("torch.optim.Adam", 0) == 0; }

/// Host copy of a block as doubles.
template <class T, class ExecSpace>
Vec to_host(const ParamSet<T, ExecSpace>& set, std::size_t b) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), set.flat(b));
  return Vec(h.data(), h.data() + h.extent(0));
}

template <class T, class ExecSpace>
void from_host(const ExecSpace& space, ParamSet<T, ExecSpace>& set, std::size_t b, const Vec& x) {
  auto h = Kokkos::create_mirror_view(set.flat(b));
  for (std::size_t i = 0; i < x.size(); ++i) h(i) = static_cast<T>(x[i]);
  Kokkos::deep_copy(space, set.flat(b), h);
}

template <class T, class ExecSpace>
ParamSet<T, ExecSpace> make_params(const ExecSpace& space, const Run& run, const Named& values) {
  std::vector<BlockShape> shapes;
  for (const auto& n : run.param_names) {
    const auto& s = run.shapes.at(n);
    shapes.push_back(BlockShape{n, s.rank, s.rows, s.cols, Layout::right});
  }
  ParamSet<T, ExecSpace> p(shapes, "replay::params");
  for (std::size_t b = 0; b < shapes.size(); ++b) from_host(space, p, b, values.at(shapes[b].name));
  return p;
}

/// Runs an Adam/AdamW file from its initial parameters for all its steps (free running: each
/// gradient is taken at delayopt's own parameters) in precision T on ExecSpace. Optionally returns
/// the final first and second moments by parameter name.
template <class T, class ExecSpace>
Deviation replay_adam(const ExecSpace& space, const Problem& problem, const Run& run, Named* final_m = nullptr,
                      Named* final_v = nullptr) {
  const Adam opt(adam_config(run));
  auto params = make_params<T>(space, run, run.initial);
  auto grads = ParamSet<T, ExecSpace>::zeros_like(params, "replay::grads");
  auto state = opt.init(space, params);
  Deviation dev;
  for (int c = 1; c <= run.steps; ++c) {
    for (std::size_t b = 0; b < params.num_blocks(); ++b) {
      const auto& name = run.param_names[b];
      from_host(space, grads, b, problem.gradient(name, run.shapes.at(name), to_host(params, b)));
    }
    opt.update(space, params, grads, state);
    for (std::size_t b = 0; b < params.num_blocks(); ++b) {
      const auto& name = run.param_names[b];
      const auto x = to_host(params, b);
      const auto& ref = run.trajectory[c - 1].at(name);
      double m = 0;
      for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - ref[i]));
      if (m >= dev.max_abs[name]) {
        dev.max_abs[name] = m;
        dev.worst_call[name] = c;
      }
    }
  }
  for (std::size_t b = 0; b < params.num_blocks(); ++b) {
    if (final_m) (*final_m)[run.param_names[b]] = to_host(state.moments[0], b);
    if (final_v) (*final_v)[run.param_names[b]] = to_host(state.moments[1], b);
  }
  return dev;
}

}  // namespace delayopt::reference
