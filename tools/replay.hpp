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
  /// Compares the parameters after call `c` (host copies from `values(block)`) with the trajectory.
  template <class Values>
  void record(const Run& run, int c, Values&& values) {
    for (std::size_t b = 0; b < run.param_names.size(); ++b) {
      const auto& name = run.param_names[b];
      const auto x = values(b);
      const auto& ref = run.trajectory[c - 1].at(name);
      double m = 0;
      for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - ref[i]));
      if (m >= max_abs[name]) {
        max_abs[name] = m;
        worst_call[name] = c;
      }
    }
  }
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
inline bool is_nadam_run(const Run& run) { return run.impl.rfind("torch.optim.NAdam", 0) == 0; }

/// torch.optim.NAdam hyperparameters of a run file (coupled L2 weight decay, the momentum-decay
/// schedule) as a delayopt::NAdam configuration.
inline NAdam::Config nadam_config(const Run& run) {
  const auto& h = run.hyperparams;
  if (!is_nadam_run(run))
    throw invalid_input("run '" + run.name + "': optimizer '" + run.impl + "' is not torch NAdam");
  if (h.value("decoupled_weight_decay", false))
    throw invalid_input("run '" + run.name + "': decoupled_weight_decay is not supported");
  NAdam::Config c;
  c.schedule.lr = h.at("lr");
  c.moment.beta1 = h.at("betas").at(0);
  c.moment.beta2 = h.at("betas").at(1);
  c.moment.eps = h.at("eps");
  c.moment.weight_decay = h.value("weight_decay", 0.0);
  c.moment.weight_decay_mode = moment::NAdam::WeightDecay::l2;
  c.moment.lookahead = moment::NAdam::Lookahead::torch;
  c.moment.momentum_decay = h.value("momentum_decay", 4e-3);
  return c;
}

inline bool is_sgd_run(const Run& run) { return run.impl.rfind("torch.optim.SGD", 0) == 0; }

/// torch.optim.SGD hyperparameters of a run file (coupled L2 weight decay) as a delayopt::SGD
/// configuration; validation applies torch's own rule for nesterov.
inline SGD::Config sgd_config(const Run& run) {
  const auto& h = run.hyperparams;
  if (!is_sgd_run(run)) throw invalid_input("run '" + run.name + "': optimizer '" + run.impl + "' is not torch SGD");
  if (h.value("maximize", false)) throw invalid_input("run '" + run.name + "': maximize is not supported");
  SGD::Config c;
  c.schedule.lr = h.at("lr");
  c.moment.momentum = h.value("momentum", 0.0);
  c.moment.dampening = h.value("dampening", 0.0);
  c.moment.nesterov = h.value("nesterov", false);
  c.moment.weight_decay = h.value("weight_decay", 0.0);
  c.moment.weight_decay_mode = moment::Momentum::WeightDecay::l2;
  return c;
}

inline bool is_soap_run(const Run& run) { return run.json.at("optimizer").contains("soap"); }

/// SOAP constructor arguments of a run file as a delayopt::SOAP configuration.
inline SOAP::Config soap_config_of(const Run& run) {
  const auto& h = run.hyperparams;
  auto fail = [&](const std::string& what) {
    throw invalid_input("run '" + run.name + "': SOAP option " + what + " is not supported");
  };
  if (h.value("normalize_grads", false)) fail("normalize_grads = true");
  if (h.value("merge_dims", false)) fail("merge_dims = true");
  if (h.value("data_format", std::string("channels_first")) != "channels_first") fail("data_format");
  SOAP::Config c = soap_config(h.at("lr").get<double>());
  c.moment.beta1 = h.at("betas").at(0);
  c.moment.beta2 = h.at("betas").at(1);
  c.moment.eps = h.at("eps");
  c.moment.weight_decay = h.value("weight_decay", 0.01);
  c.moment.bias_correction = h.value("correct_bias", true);
  c.basis.refresh_every = h.value("precondition_frequency", 10);
  c.basis.beta = h.value("shampoo_beta", -1.0);
  c.basis.max_dim = h.value("max_precond_dim", 10000);
  c.basis.rank1 = h.value("precondition_1d", false) ? basis::Rank1::full : basis::Rank1::identity;
  return c;
}

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

/// Closed-form gradients of every block at the current parameters.
template <class T, class ExecSpace>
void fill_gradients(const ExecSpace& space, const Problem& problem, const Run& run,
                    const ParamSet<T, ExecSpace>& params, ParamSet<T, ExecSpace>& grads) {
  for (std::size_t b = 0; b < params.num_blocks(); ++b) {
    const auto& name = run.param_names[b];
    from_host(space, grads, b, problem.gradient(name, run.shapes.at(name), to_host(params, b)));
  }
}

template <class T, class ExecSpace>
void matrix_from_json(const ExecSpace& space,
                      const Kokkos::View<T**, Kokkos::LayoutRight, typename ExecSpace::memory_space>& dst,
                      const nlohmann::json& j, const std::string& what) {
  if (dst.size() == 0) {
    if (!j.is_null()) throw invalid_input(what + ": the snapshot rotates a side delayopt does not (check max_dim)");
    return;
  }
  if (j.is_null()) throw invalid_input(what + ": the snapshot does not rotate a side delayopt does");
  const auto v = j.get<Vec>();
  if (v.size() != dst.size()) throw invalid_input(what + ": wrong size");
  auto h = Kokkos::create_mirror_view(dst);
  for (std::size_t i = 0; i < dst.extent(0); ++i)
    for (std::size_t k = 0; k < dst.extent(1); ++k) h(i, k) = static_cast<T>(v[i * dst.extent(1) + k]);
  Kokkos::deep_copy(space, dst, h);
}

/// The snapshot taken after call `after_call` of a SOAP run file.
inline const nlohmann::json& snapshot(const Run& run, int after_call) {
  for (const auto& s : run.json.at("snapshots"))
    if (s.at("after_call").get<int>() == after_call) return s;
  throw invalid_input("run '" + run.name + "' has no snapshot after call " + std::to_string(after_call));
}

/// Loads a SOAP snapshot (params, moments, factors, bases, step) into delayopt's params and state.
template <class T, class ExecSpace>
void load_soap_snapshot(const ExecSpace& space, const Run& run, const nlohmann::json& snap,
                        ParamSet<T, ExecSpace>& params, typename SOAP::template State<T, ExecSpace>& state) {
  const int after = snap.at("after_call");
  std::int64_t step = -1;
  for (std::size_t b = 0; b < params.num_blocks(); ++b) {
    const auto& name = run.param_names[b];
    const auto& st = snap.at("state").at(name);
    from_host(space, params, b, snap.at("params").at(name).get<Vec>());
    from_host(space, state.moments[0], b, st.at("exp_avg").get<Vec>());
    from_host(space, state.moments[1], b, st.at("exp_avg_sq").get<Vec>());
    auto& blk = state.basis.blocks[b];
    matrix_from_json(space, blk.L, st.at("GG").at(0), name + ".GG[0]");
    matrix_from_json(space, blk.QL, st.at("Q").at(0), name + ".Q[0]");
    if (run.shapes.at(name).rank == 2) {
      matrix_from_json(space, blk.R, st.at("GG").at(1), name + ".GG[1]");
      matrix_from_json(space, blk.QR, st.at("Q").at(1), name + ".Q[1]");
    }
    step = st.at("step").get<std::int64_t>();
  }
  // SOAP's step counts updates (its first call updates nothing): calls = step + 1.
  state.calls = after;
  state.basis.calls = step + 1;
  auto counters = Kokkos::create_mirror_view(state.counters);
  counters(0) = step;
  counters(1) = 0;
  Kokkos::deep_copy(space, state.counters, counters);
  space.fence();
}

/// Continues a SOAP run from its snapshot after `from_call` to call `to_call` (closed loop) and
/// returns the deviation from the reference trajectory over those calls.
template <class T, class ExecSpace>
Deviation replay_soap(const ExecSpace& space, const Problem& problem, const Run& run, int from_call, int to_call,
                      ParamSet<T, ExecSpace>* params_out = nullptr,
                      typename SOAP::template State<T, ExecSpace>* state_out = nullptr) {
  const SOAP opt(soap_config_of(run));
  auto params = make_params<T>(space, run, run.initial);
  auto grads = ParamSet<T, ExecSpace>::zeros_like(params, "replay::grads");
  auto state = opt.init(space, params);
  load_soap_snapshot(space, run, snapshot(run, from_call), params, state);
  Deviation dev;
  for (int c = from_call + 1; c <= to_call; ++c) {
    fill_gradients(space, problem, run, params, grads);
    opt.update(space, params, grads, state);
    dev.record(run, c, [&](std::size_t b) { return to_host(params, b); });
  }
  if (params_out) *params_out = params;
  if (state_out) *state_out = state;
  return dev;
}

/// Runs a coordinate-basis optimizer from a run file's initial parameters for all its steps (free
/// running: each gradient is taken at delayopt's own parameters) in precision T on ExecSpace.
/// Optionally returns the final first and second moments (slots 0 and 1) by parameter name.
template <class T, class Opt, class ExecSpace>
Deviation replay_free(const Opt& opt, const ExecSpace& space, const Problem& problem, const Run& run,
                      Named* final_m = nullptr, Named* final_v = nullptr) {
  auto params = make_params<T>(space, run, run.initial);
  auto grads = ParamSet<T, ExecSpace>::zeros_like(params, "replay::grads");
  auto state = opt.init(space, params);
  Deviation dev;
  for (int c = 1; c <= run.steps; ++c) {
    fill_gradients(space, problem, run, params, grads);
    opt.update(space, params, grads, state);
    dev.record(run, c, [&](std::size_t b) { return to_host(params, b); });
  }
  for (std::size_t b = 0; b < params.num_blocks(); ++b) {
    if (final_m) (*final_m)[run.param_names[b]] = to_host(state.moments[0], b);
    if constexpr (Opt::moment_type::slots > 1)
      if (final_v) (*final_v)[run.param_names[b]] = to_host(state.moments[1], b);
  }
  return dev;
}

/// An Adam/AdamW run file (torch.optim.Adam / AdamW), see replay_free.
template <class T, class ExecSpace>
Deviation replay_adam(const ExecSpace& space, const Problem& problem, const Run& run, Named* final_m = nullptr,
                      Named* final_v = nullptr) {
  return replay_free<T>(Adam(adam_config(run)), space, problem, run, final_m, final_v);
}

/// A torch.optim.NAdam run file, see replay_free.
template <class T, class ExecSpace>
Deviation replay_nadam(const ExecSpace& space, const Problem& problem, const Run& run, Named* final_m = nullptr,
                       Named* final_v = nullptr) {
  return replay_free<T>(NAdam(nadam_config(run)), space, problem, run, final_m, final_v);
}

/// A torch.optim.SGD run file, see replay_free; final_m receives the momentum buffer.
template <class T, class ExecSpace>
Deviation replay_sgd(const ExecSpace& space, const Problem& problem, const Run& run, Named* final_m = nullptr) {
  return replay_free<T>(SGD(sgd_config(run)), space, problem, run, final_m);
}

}  // namespace delayopt::reference
